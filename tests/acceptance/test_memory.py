"""Shared memory over real HTTP against `mcs up`: the access matrix, privacy of listings, compare-and-set
under contention, and all-or-nothing bulk requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from mcs.client import Client, McsApiError

from .conftest import Mesh, uid

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def pair(mesh: Mesh) -> dict[str, Client]:
    """Two agents, A and B (unique names), and the admin."""
    clients = {"admin": mesh.admin}
    for role in ("A", "B"):
        name = f"{role.lower()}-{uid()}"
        secret = mesh.admin.create_agent(name, [])["secret"]
        clients[role] = Client(mesh.url, agent_id=name, agent_secret=secret)
    yield clients
    clients["A"].close()
    clients["B"].close()


def status(call: Callable[[], Any]) -> int:
    try:
        call()
    except McsApiError as exc:
        return exc.status
    return 200


# who -> namespace -> operation -> allowed. "owner" is A, the agent the agent:/private: namespaces name.
ALLOWED = {
    "owner": {
        "mesh": "get put delete list bulk",
        "agent": "get put delete list bulk",
        "private": "get put delete list bulk",
    },
    "other": {"mesh": "get put delete list bulk", "agent": "get list bulk-read", "private": ""},
    "admin": {
        "mesh": "get put delete list bulk",
        "agent": "get put delete list bulk",
        "private": "get put delete list bulk",
    },
}


@pytest.mark.parametrize("who", ["owner", "other", "admin"])
@pytest.mark.parametrize("kind", ["mesh", "agent", "private"])
def test_access_matrix(pair, who, kind):
    a = pair["A"]
    ns = "mesh" if kind == "mesh" else f"{kind}:{a.agent_id}"
    client = {"owner": a, "other": pair["B"], "admin": pair["admin"]}[who]
    allowed = ALLOWED[who][kind].split()
    key = f"k-{uid()}"
    a.mem_put(ns, key, {"secret": 42}, tags=["t"])  # the owner can always write its own namespaces

    read = status(lambda: client.mem_get(ns, key))
    listing = status(lambda: client.mem_list(ns))
    bulk_read = status(lambda: client.mem_bulk(ns, get=[key]))
    write = status(lambda: client.mem_put(ns, key, "changed"))
    bulk_write = status(lambda: client.mem_bulk(ns, put=[{"key": key, "value": "bulk"}]))
    delete = status(lambda: client.mem_delete(ns, key))

    assert read == (200 if "get" in allowed else 404)  # a denied read looks exactly like a missing key
    assert listing == (200 if "list" in allowed else 403)
    assert bulk_read == (200 if "bulk" in allowed or "bulk-read" in allowed else 403)
    assert write == (200 if "put" in allowed else 403)
    assert bulk_write == (200 if "bulk" in allowed else 403)
    assert delete == (200 if "delete" in allowed else 403)
    if "delete" not in allowed:  # nothing a refused caller did changed the key
        assert a.mem_get(ns, key)["value"] == {"secret": 42}


def test_a_denied_private_read_is_indistinguishable_from_a_missing_key(pair):
    a, b = pair["A"], pair["B"]
    ns = f"private:{a.agent_id}"
    a.mem_put(ns, "exists", 1)
    answers = []
    for key in ("exists", "never-written"):
        with pytest.raises(McsApiError) as err:
            b.mem_get(ns, key)
        answers.append((err.value.status, err.value.code, err.value.message.replace(key, "KEY")))
    assert answers[0] == answers[1]


def test_listings_never_show_another_agents_private_keys(pair):
    a, b = pair["A"], pair["B"]
    a.mem_put(f"private:{a.agent_id}", "diary", "dear diary")
    a.mem_put("mesh", f"shared-{uid()}", 1)
    with pytest.raises(McsApiError) as err:
        b.mem_list(f"private:{a.agent_id}")
    assert err.value.status == 403
    for ns in ("mesh", f"agent:{a.agent_id}", f"private:{b.agent_id}"):
        assert "diary" not in [i["key"] for i in b.mem_list(ns)["items"]]


def test_twenty_agents_incrementing_one_counter_with_if_match_end_at_twenty(mesh: Mesh):
    key = f"counter-{uid()}"
    mesh.admin.mem_put("mesh", key, 0)
    agents = []
    for _ in range(20):
        name = f"inc-{uid()}"
        secret = mesh.admin.create_agent(name, [])["secret"]
        agents.append(Client(mesh.url, agent_id=name, agent_secret=secret))
    conflicts = []
    errors = []
    start = threading.Barrier(20)

    def increment(client: Client) -> None:
        start.wait()
        for _ in range(200):  # bounded retry loop
            current = client.mem_get("mesh", key)
            try:
                client.mem_put("mesh", key, current["value"] + 1, if_match=current["version"])
                return
            except McsApiError as exc:
                if exc.status != 412:
                    errors.append(exc)
                    return
                conflicts.append(1)
        errors.append(RuntimeError("gave up after 200 tries"))

    threads = [threading.Thread(target=increment, args=(c,)) for c in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in agents:
        c.close()
    assert not errors, errors
    final = mesh.admin.mem_get("mesh", key)
    assert final["value"] == 20 and final["version"] == 21
    assert conflicts, "20 concurrent writers never collided: the test did not exercise compare-and-set"


def test_a_bulk_request_with_one_forbidden_key_writes_nothing(pair):
    a, b = pair["A"], pair["B"]
    own = f"agent:{b.agent_id}"
    b.mem_put(own, "keep", "old")
    with pytest.raises(McsApiError) as err:  # B may write its own namespace, not A's
        b.mem_bulk(f"agent:{a.agent_id}", put=[{"key": "x", "value": 1}])
    assert err.value.status == 403
    with pytest.raises(McsApiError) as err:  # one stale condition among good writes: nothing is written
        b.mem_bulk(
            own,
            put=[
                {"key": "keep", "value": "new"},
                {"key": "fresh", "value": 1},
                {"key": "keep", "value": "x", "if_match": 99},
            ],
        )
    assert err.value.status == 412
    assert b.mem_get(own, "keep")["value"] == "old"
    assert [i["key"] for i in b.mem_list(own)["items"]] == ["keep"]
