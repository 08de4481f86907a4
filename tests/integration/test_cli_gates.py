"""`mcs task approve / deny / retry` through click's runner, against a real `mcs api` process."""

from __future__ import annotations

import json

from mcs.client import Client
from tests.integration.test_cli import TOKEN, api, mcs  # noqa: F401


def test_an_approval_is_submitted_then_approved_or_denied_from_the_cli(mcs):  # noqa: F811
    out = mcs("task", "submit", "-t", "approval", "--payload", '{"title": "ship it"}', "--json")
    assert out.exit_code == 0, out.output
    gate = json.loads(out.stdout)
    assert gate["state"] == "waiting" and "warning" not in out.stderr
    approved = mcs("task", "approve", gate["id"][:8], "--note", "ok", "--json")
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.stdout)["result"] == {"approved": True, "by": "admin", "note": "ok"}
    late = mcs("task", "deny", gate["id"], "--reason", "too late")
    assert late.exit_code == 1 and len(late.stderr.strip().splitlines()) == 1 and "not waiting" in late.stderr
    other = json.loads(mcs("task", "submit", "-t", "approval", "--json").stdout)
    denied = mcs("task", "deny", other["id"], "--reason", "not today")
    assert denied.exit_code == 0 and denied.stdout.strip() == f"{other['id']} failed"
    assert mcs("task", "deny", other["id"]).exit_code == 2  # --reason is required


def test_retry_one_and_a_dead_letter_redrive_with_dry_run(mcs, api):  # noqa: F811
    with Client(api, admin_token=TOKEN) as c:
        ids = [c.submit("redrive-x")["id"] for _ in range(3)]
        keep = c.submit("redrive-y")["id"]
        for one in [*ids, keep]:
            c.cancel(one)
    dry = mcs("task", "retry", "--state", "canceled", "--type", "redrive-x", "--since", "1h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert sorted(dry.stdout.split()) == sorted(ids) and "would retry 3 task(s)" in dry.stderr
    with Client(api, admin_token=TOKEN) as c:
        assert {c.get_task(one)["state"] for one in ids} == {"canceled"}
    done = mcs("task", "retry", "--state", "canceled", "--type", "redrive-x", "--since", "1h", "--json")
    assert done.exit_code == 0, done.output
    assert sorted(json.loads(done.stdout)["retried"]) == sorted(ids) and json.loads(done.stdout)["count"] == 3
    with Client(api, admin_token=TOKEN) as c:
        assert {c.get_task(one)["state"] for one in ids} == {"queued"}
        assert c.get_task(keep)["state"] == "canceled"
        assert c.events(ids[0])[-1]["kind"] == "retried_by_hand"
    one = mcs("task", "retry", keep)
    assert one.exit_code == 0 and one.stdout.strip() == keep and "retried 1 task(s)" in one.stderr
    again = mcs("task", "retry", keep)
    assert again.exit_code == 1 and "only failed or canceled" in again.stderr
    assert mcs("task", "retry").exit_code == 2
    listed = json.loads(mcs("task", "list", "--type", "redrive-x", "--since", "1h", "--json").stdout)
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(ids)
    bad = mcs("task", "list", "--since", "a while")
    assert bad.exit_code == 1 and "updated_after" in bad.stderr
    assert mcs("task", "retry", keep, "--type", "x").exit_code == 2
