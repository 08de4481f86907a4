"""The Python client for the MCS HTTP API, used by the `mcs` CLI and importable by agents.

from mcs.client import Client
mcs = Client.from_env()                      # MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET
task = mcs.claim_next(wait=30)
if task:
    mcs.complete(task["id"], task["claim_token"], {"ok": True})
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset({"completed", "failed", "canceled"})


def _q(segment: str) -> str:
    """One path segment, encoded: an id like `../agents` must not walk to another endpoint."""
    return quote(segment, safe="")


class McsApiError(Exception):
    """The server refused a request; `status`, `code` and `message` come from its JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


class McsUnavailable(Exception):
    """The server could not be reached."""


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        agent_id: str | None = None,
        agent_secret: str | None = None,
        admin_token: str | None = None,
        timeout: float = 40.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"user-agent": "mcs-client"}
        if admin_token:
            headers["authorization"] = f"Bearer {admin_token}"
        elif agent_id and agent_secret:
            headers["x-agent-id"] = agent_id
            headers["x-agent-secret"] = agent_secret
        self.url = url.rstrip("/")
        self.agent_id = agent_id
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Client:
        """MCS_URL, then MCS_ADMIN_TOKEN or MCS_AGENT_ID/MCS_AGENT_SECRET. Without any credentials, the
        admin token file that `mcs up` writes beside MCS_DB (default ./data/admin-token) is used."""
        e = os.environ if env is None else env
        kwargs: dict[str, Any] = {
            "url": e.get("MCS_URL") or DEFAULT_URL,
            "agent_id": e.get("MCS_AGENT_ID"),
            "agent_secret": e.get("MCS_AGENT_SECRET"),
            "admin_token": e.get("MCS_ADMIN_TOKEN"),
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        if not kwargs["admin_token"] and not (kwargs["agent_id"] and kwargs["agent_secret"]):
            token_file = Path(e.get("MCS_DB") or "data/mcs.db").parent / "admin-token"
            if token_file.exists():
                kwargs["admin_token"] = token_file.read_text().strip()
        return cls(**kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _obj(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose answer is a JSON object."""
        body = self.request(method, path, **kwargs)
        return body if isinstance(body, dict) else {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = self.http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise McsUnavailable(f"cannot reach MCS at {self.url}: {exc}") from exc
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise McsApiError(
                response.status_code,
                err.get("code", "http_error"),
                err.get("message", response.text[:200] or response.reason_phrase),
            )
        return body

    # ------------------------------------------------------------ agents

    def health(self) -> dict[str, Any]:
        return self._obj("GET", "/healthz")

    def create_agent(self, name: str, capabilities: list[str] | None = None) -> dict[str, Any]:
        return self._obj("POST", "/v1/agents", json={"name": name, "capabilities": capabilities or []})

    def rotate_agent(self, name: str) -> dict[str, Any]:
        return self._obj("POST", f"/v1/agents/{_q(name)}/rotate")

    def delete_agent(self, name: str) -> None:
        self.request("DELETE", f"/v1/agents/{_q(name)}")

    def register(
        self, capabilities: list[str], notify_url: str | None = None, ttl: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"capabilities": capabilities, "notify_url": notify_url}
        if ttl is not None:
            body["ttl"] = ttl
        return self._obj("POST", "/v1/agents/register", json=body)

    def list_agents(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/agents")["agents"]  # type: ignore[no-any-return]

    def get_agent(self, name: str) -> dict[str, Any]:
        return self._obj("GET", f"/v1/agents/{_q(name)}")

    # ------------------------------------------------------------ tasks

    def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: str | None = None,
        capabilities: list[str] | None = None,
        route: str | None = None,
        max_retries: int | None = None,
        claim_ttl: float | None = None,
        aggregate: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "payload": payload}
        for key, value in (
            ("priority", priority),
            ("capabilities", capabilities),
            ("route", route),
            ("max_retries", max_retries),
            ("claim_ttl", claim_ttl),
            ("aggregate", aggregate),
        ):
            if value is not None:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._obj("POST", "/v1/tasks", json=body, headers=headers)

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._obj("GET", f"/v1/tasks/{_q(task_id)}")

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._obj("GET", "/v1/tasks", params=params)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/tasks/{_q(task_id)}/events")["events"]  # type: ignore[no-any-return]

    def claim(self, task_id: str) -> dict[str, Any]:
        return self._obj("POST", f"/v1/tasks/{_q(task_id)}/claim")

    def claim_next(self, wait: float = 0) -> dict[str, Any] | None:
        """The next task for this agent, claimed, or None when there is none (after waiting `wait` s)."""
        body = self.request("POST", "/v1/tasks/claim", json={"wait": wait})
        return body if isinstance(body, dict) else None

    def extend(self, task_id: str, claim_token: str, ttl: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"claim_token": claim_token}
        if ttl is not None:
            body["ttl"] = ttl
        return self._obj("POST", f"/v1/tasks/{_q(task_id)}/extend", json=body)

    def complete(self, task_id: str, claim_token: str, result: Any = None) -> dict[str, Any]:
        return self._obj(
            "POST", f"/v1/tasks/{_q(task_id)}/complete", json={"claim_token": claim_token, "result": result}
        )

    def fail(self, task_id: str, claim_token: str, error: Any, *, retryable: bool = True) -> dict[str, Any]:
        return self._obj(
            "POST",
            f"/v1/tasks/{_q(task_id)}/fail",
            json={"claim_token": claim_token, "error": error, "retryable": retryable},
        )

    def reject(self, task_id: str, reason: str = "", claim_token: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if claim_token:
            body["claim_token"] = claim_token
        return self._obj("POST", f"/v1/tasks/{_q(task_id)}/reject", json=body)

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._obj("POST", f"/v1/tasks/{_q(task_id)}/cancel")

    # ------------------------------------------------------------ shared memory

    @staticmethod
    def _mem_path(ns: str, key: str | None = None) -> str:
        path = "/v1/memory/" + quote(ns, safe=":")
        return path if key is None else path + "/" + quote(key, safe="/")

    def mem_get(self, ns: str, key: str) -> dict[str, Any]:
        """The key's value and metadata (McsApiError 404 when absent)."""
        return self._obj("GET", self._mem_path(ns, key))

    def mem_put(
        self,
        ns: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        tags: list[str] | None = None,
        if_match: int | None = None,
        if_none_match: bool = False,
    ) -> dict[str, Any]:
        """Write a key. `if_match`: only if it is at that version; `if_none_match`: only if it is absent
        (both answer McsApiError 412 otherwise)."""
        body: dict[str, Any] = {"value": value, "tags": tags or []}
        if ttl is not None:
            body["ttl"] = ttl
        headers = {}
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        if if_none_match:
            headers["If-None-Match"] = "*"
        return self._obj("PUT", self._mem_path(ns, key), json=body, headers=headers)

    def mem_delete(self, ns: str, key: str, *, if_match: int | None = None) -> None:
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        self.request("DELETE", self._mem_path(ns, key), headers=headers)

    def mem_list(
        self,
        ns: str,
        *,
        prefix: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("prefix", prefix), ("tag", tag), ("limit", limit), ("cursor", cursor)) if v}
        return self._obj("GET", self._mem_path(ns), params=params)

    def mem_bulk(
        self,
        ns: str,
        *,
        get: list[str] | None = None,
        put: list[dict[str, Any]] | None = None,
        delete: list[str] | None = None,
    ) -> dict[str, Any]:
        body = {"get": get or [], "put": put or [], "delete": delete or []}
        return self._obj("POST", self._mem_path(ns) + "/_bulk", json=body)

    def wait_for(self, task_id: str, *, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Follow a task until it is completed, failed or canceled; returns it. TimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll, 0.05)
        while True:
            task = self.get_task(task_id)
            if task["state"] in TERMINAL:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['state']} after {timeout} s")
            time.sleep(delay)
            delay = min(poll * 5, delay * 1.5)
