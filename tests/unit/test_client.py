"""The clients: typed errors from the API's JSON errors, and retries only where repeating is safe."""

from __future__ import annotations

import httpx
import pytest

from mcs.client import (
    AsyncClient,
    Client,
    ConflictError,
    McsApiError,
    McsUnavailable,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
)
from mcs.errors import McsError


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, UnauthorizedError), (404, NotFoundError), (409, ConflictError), (429, RateLimitedError), (503, ServerError)],
)
def test_api_errors_are_typed_and_keep_status_code_and_message(status, cls):
    client = Client("http://mcs.test", transport=httpx.MockTransport(lambda r: _error(status, "some_code", "why")))
    with pytest.raises(cls) as caught:
        client.get_task("t1")
    err = caught.value
    assert isinstance(err, McsApiError) and isinstance(err, McsError)
    assert (err.status, err.code, err.message) == (status, "some_code", "why")
    assert str(err) == f"why (some_code, HTTP {status})"


def test_an_error_without_json_still_says_what_happened():
    client = Client("http://mcs.test", transport=httpx.MockTransport(lambda r: httpx.Response(502, text="bad gw")))
    with pytest.raises(ServerError) as caught:
        client.health()
    assert caught.value.code == "http_error" and caught.value.message == "bad gw"


def test_connection_errors_are_retried_then_succeed():
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"id": "t1", "state": "claimed", "claim_token": "tok"})

    client = Client("http://mcs.test", transport=httpx.MockTransport(flaky), retries=3)
    assert client.claim("t1")["claim_token"] == "tok"  # a POST: the request never reached the server
    assert calls == ["POST"] * 3


def test_read_errors_are_not_retried_for_posts_but_are_for_gets():
    calls = []

    def broken(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadError("connection reset", request=request)

    client = Client("http://mcs.test", transport=httpx.MockTransport(broken), retries=2)
    with pytest.raises(McsUnavailable, match="cannot reach MCS at http://mcs.test"):
        client.submit("echo", {})  # may have been stored: repeating it could submit twice
    assert calls == ["POST"]
    calls.clear()
    with pytest.raises(McsUnavailable):
        client.get_task("t1")
    assert calls == ["GET"] * 3


def test_claim_next_is_none_when_there_is_no_task():
    client = Client("http://mcs.test", transport=httpx.MockTransport(lambda r: httpx.Response(204)))
    assert client.claim_next(wait=0) is None


async def test_async_client_has_the_same_calls_errors_and_retries():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        if request.url.path.endswith("/claim") and len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/v1/tasks/claim":
            return httpx.Response(204)
        if request.url.path.endswith("/complete"):
            return _error(409, "stale_claim_token", "claim_token is stale")
        return httpx.Response(200, json={"id": "t1", "claim_token": "tok"})

    async with AsyncClient(
        "http://mcs.test", agent_id="a", agent_secret="s", transport=httpx.MockTransport(handler)
    ) as client:
        assert (await client.claim("t1"))["claim_token"] == "tok"
        assert await client.claim_next(wait=0) is None
        with pytest.raises(ConflictError):
            await client.complete("t1", "old", {"x": 1})
    assert calls[:2] == [("POST", "/v1/tasks/t1/claim")] * 2


def _paged_agents(request: httpx.Request) -> httpx.Response:
    """Three agents, served `limit` at a time by name, as the api pages them."""
    names = ["a", "b", "c"]
    limit = int(request.url.params["limit"])
    start = names.index(request.url.params["cursor"]) + 1 if "cursor" in request.url.params else 0
    page = names[start : start + limit]
    more = start + limit < len(names)
    return httpx.Response(200, json={"agents": [{"name": n} for n in page], "next_cursor": page[-1] if more else None})


def test_list_agents_follows_the_pages():
    client = Client("http://mcs.test", transport=httpx.MockTransport(_paged_agents))
    assert [a["name"] for a in client.list_agents(page_size=2)] == ["a", "b", "c"]
    assert client.agents_page(limit=2)["next_cursor"] == "b"


async def test_async_list_agents_follows_the_pages():
    async with AsyncClient("http://mcs.test", transport=httpx.MockTransport(_paged_agents)) as client:
        assert [a["name"] for a in await client.list_agents(page_size=1)] == ["a", "b", "c"]
