"""`aggregate: "consensus"` over HTTP, on a real SQLite file: the parent's merged result, and the
fanout outcomes (completed/failed) unchanged."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio


async def _run_children(mesh, parent_id, agents, outcome):
    """Claim every child of `parent_id` as its agent and end it as `outcome[agent]` says:
    ("complete", result) or ("fail", error)."""
    mesh.dispatch()
    for kid in (await mesh.task(parent_id))["children"]:
        child = await mesh.task(kid)
        who = agents[child["assigned_to"]]
        claimed = await mesh.ok("POST", f"/v1/tasks/{kid}/claim", who=who)
        action, value = outcome[child["assigned_to"]]
        body = {"claim_token": claimed["claim_token"]}
        if action == "complete":
            body["result"] = value
        else:
            body |= {"error": value, "retryable": False}
        await mesh.ok("POST", f"/v1/tasks/{kid}/{action}", who=who, json=body)
    return await mesh.task(parent_id)


def finding(line, title, severity="recommendation", file="app.py"):
    return {"file": file, "line": line, "severity": severity, "title": title, "detail": f"{title} at {line}"}


async def test_consensus_parent_merges_findings_and_keeps_children(mesh):
    agents = {name: await mesh.agent(name, ["mcs-review"]) for name in ("ruff", "pylint", "bandit", "chatty")}
    parent = await mesh.submit(type="mcs-review", route="all", aggregate="consensus", payload={"files": []})
    assert parent["aggregate"] == "consensus" and parent["state"] == "queued"
    done = await _run_children(
        mesh,
        parent["id"],
        agents,
        {
            "ruff": ("complete", {"findings": [finding(1, "Unused import: os"), finding(9, "Bare except")]}),
            "pylint": ("complete", {"findings": [finding(1, "Unused import: os", "observation")]}),
            "bandit": ("complete", {"findings": [finding(20, "Use of eval", "critical"), finding(9, "bare except")]}),
            "chatty": ("complete", "The code looks fine to me."),
        },
    )
    assert done["state"] == "completed"
    result = done["result"]
    assert result["aggregate"] == "consensus"
    merged = [(m["title"], m["agents"], m["consensus"], m["severity"]) for m in result["findings"]]
    assert merged == [
        ("Use of eval", ["bandit"], 1, "critical"),  # most severe first
        ("Unused import: os", ["pylint", "ruff"], 2, "recommendation"),  # line 1
        ("bare except", ["bandit", "ruff"], 2, "recommendation"),  # line 9: bandit, first by name, words it
    ]
    per_agent = {a["agent"]: (a["status"], a["findings"]) for a in result["agents"]}
    assert per_agent == {"ruff": ("ok", 2), "pylint": ("ok", 1), "bandit": ("ok", 2), "chatty": ("malformed", 0)}
    assert {c["agent"] for c in result["children"]} == set(agents)
    assert next(c for c in result["children"] if c["agent"] == "chatty")["result"] == "The code looks fine to me."


async def test_consensus_parent_fails_only_when_every_child_failed(mesh):
    agents = {name: await mesh.agent(name, ["cr"]) for name in ("a", "b")}
    one_ok = await mesh.submit(type="cr", route="all", aggregate="consensus")
    done = await _run_children(
        mesh, one_ok["id"], agents, {"a": ("fail", "model down"), "b": ("complete", {"findings": []})}
    )
    assert done["state"] == "completed"
    assert {a["agent"]: a["status"] for a in done["result"]["agents"]} == {"a": "failed", "b": "ok"}

    all_failed = await mesh.submit(type="cr", route="all", aggregate="consensus")
    done = await _run_children(mesh, all_failed["id"], agents, {"a": ("fail", "x"), "b": ("fail", "y")})
    assert done["state"] == "failed" and done["error"] == "every child task failed"
    assert done["result"]["findings"] == [] and len(done["result"]["children"]) == 2


async def test_collect_stays_the_default_and_aggregate_needs_a_fanout(mesh):
    agents = {"a": await mesh.agent("a", ["cc"])}
    parent = await mesh.submit(type="cc", route="all")
    assert parent["aggregate"] == "collect"
    done = await _run_children(mesh, parent["id"], agents, {"a": ("complete", {"findings": [finding(1, "x")]})})
    assert set(done["result"]) == {"children"}

    response = await mesh.call(
        "POST", "/v1/tasks", who="admin", json={"type": "cc", "route": "any", "aggregate": "consensus"}
    )
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "invalid_aggregate"
    response = await mesh.call(
        "POST", "/v1/tasks", who="admin", json={"type": "cc", "route": "all", "aggregate": "vote"}
    )
    assert response.status_code == 422  # the api's answer to any body that fails validation


async def test_openapi_documents_the_consensus_result(mesh):
    doc = await mesh.ok("GET", "/openapi.json")
    schemas = doc["components"]["schemas"]
    assert {"ReviewFinding", "MergedFinding", "ConsensusResult"} <= set(schemas)
    assert set(schemas["ReviewFinding"]["properties"]) >= {"file", "line", "severity", "title", "detail"}
    assert set(schemas["ConsensusResult"]["properties"]) >= {"findings", "agents", "summary", "children"}


async def test_a_merging_bug_never_stops_the_child_from_completing(mesh, monkeypatch):
    from mcs import consensus

    def broken(children):
        raise RuntimeError("bug")

    monkeypatch.setattr(consensus, "aggregate", broken)
    agents = {"a": await mesh.agent("a", ["cb"])}
    parent = await mesh.submit(type="cb", route="all", aggregate="consensus")
    done = await _run_children(mesh, parent["id"], agents, {"a": ("complete", {"findings": []})})
    assert done["state"] == "completed"
    assert done["result"]["error"] == "merging failed: RuntimeError('bug')"
    assert done["result"]["children"][0]["result"] == {"findings": []}
