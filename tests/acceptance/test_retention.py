"""Retention in a running mesh: `mcs up` with MCS_RETENTION_DAYS worth two seconds deletes a finished
task (the api then answers 404) and keeps an unfinished one, and its watchdog counts what it pruned."""

from __future__ import annotations

import re

import httpx
import pytest

from mcs.client import McsApiError
from tests.acceptance.conftest import uid, wait_until

pytestmark = pytest.mark.acceptance

TWO_SECONDS = 2 / 86400  # in days


def pruned(mesh, kind: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{mesh.ports['watchdog']}/metrics", timeout=5).text
    found = re.search(rf'^mcs_pruned_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_finished_task_is_deleted_after_the_retention_and_an_unfinished_one_stays(mesh_factory, agent_factory):
    mesh = mesh_factory(MCS_RETENTION_DAYS=repr(TWO_SECONDS))
    kind = "keep-" + uid()
    agent_factory(mesh, capabilities=[kind])
    done = mesh.admin.submit(kind, {"n": 1})
    assert mesh.admin.wait_for(done["id"], timeout=20)["state"] == "completed"
    stuck = mesh.admin.submit("nobody-" + uid())  # no agent can take it: queued for as long as it takes

    def gone() -> bool:
        try:
            mesh.admin.get_task(done["id"])
        except McsApiError as exc:
            assert exc.status == 404, exc
            return True
        return False

    wait_until(gone, timeout=30, what="the watchdog to delete the finished task")
    assert mesh.admin.get_task(stuck["id"])["state"] == "queued"
    assert mesh.admin.events(stuck["id"])  # its audit trail too
    assert pruned(mesh, "tasks") >= 1 and pruned(mesh, "task_events") >= 4
