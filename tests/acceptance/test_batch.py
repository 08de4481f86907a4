"""Batch submit on the real `mcs up`: POST /v1/tasks/batch through the Python client, and
`mcs task submit --from-file` as a user runs it (a real CLI process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcs.client import UnprocessableError
from mcs.models import SUBMIT_BATCH_MAX
from tests.acceptance.conftest import Mesh, uid

pytestmark = pytest.mark.acceptance


def cli(
    mesh: Mesh, *args: str, stdin: str | None = None, agent: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mcs task submit ARGS` as the admin, or as `agent` (MCS_AGENT_ID and MCS_AGENT_SECRET)."""
    env = {k: v for k, v in mesh.env.items() if k != "MCS_DB"} | {"MCS_URL": mesh.url}
    if agent is not None:
        del env["MCS_ADMIN_TOKEN"]
        env |= agent
    return subprocess.run(
        [sys.executable, "-m", "mcs", "task", "submit", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def count(mesh: Mesh, task_type: str) -> int:
    seen, cursor = 0, None
    while True:
        page = mesh.admin.list_tasks(type=task_type, limit=500, **({"cursor": cursor} if cursor else {}))
        seen += len(page["tasks"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_a_thousand_tasks_in_one_request_are_all_visible_and_get_done(mesh: Mesh, agent_factory: Any) -> None:
    kind = "bulk-" + uid()
    answer = mesh.admin.submit_batch([{"type": kind, "payload": {"n": i}} for i in range(SUBMIT_BATCH_MAX)])
    results = answer["results"]
    assert [(r["index"], r["status"]) for r in results] == [(i, 201) for i in range(SUBMIT_BATCH_MAX)]
    assert count(mesh, kind) == SUBMIT_BATCH_MAX
    some = [results[i]["task"]["id"] for i in (0, 499, 999)]
    assert [mesh.admin.get_task(t)["payload"]["n"] for t in some] == [0, 499, 999]
    # They are ordinary tasks: an agent that serves the type works through them.
    small = "few-" + uid()
    worker = agent_factory(mesh, capabilities=[small])
    done = mesh.admin.submit_batch([{"type": small, "payload": i} for i in range(5)])
    for r in done["results"]:
        finished = mesh.admin.wait_for(r["task"]["id"], timeout=30)
        assert (finished["state"], finished["assigned_to"]) == ("completed", worker.name)


def test_per_item_idempotency_and_refusals_as_documented(mesh: Mesh) -> None:
    kind = "idem-" + uid()
    body = [
        {"type": kind, "idempotency_key": kind + "-a"},
        {"type": kind, "depends_on": ["no-such-task"]},
        {"type": kind, "idempotency_key": kind + "-b"},
    ]
    first = mesh.admin.submit_batch(body)["results"]
    assert [r["status"] for r in first] == [201, 422, 201]
    assert first[1]["error"]["code"] == "unknown_dependency"
    again = mesh.admin.submit_batch(body)["results"]
    assert [r["status"] for r in again] == [200, 422, 200]
    assert [again[i]["task"]["id"] for i in (0, 2)] == [first[i]["task"]["id"] for i in (0, 2)]
    assert count(mesh, kind) == 2


def test_one_more_than_the_maximum_is_refused_whole(mesh: Mesh) -> None:
    kind = "big-" + uid()
    with pytest.raises(UnprocessableError) as refused:
        mesh.admin.submit_batch([{"type": kind}] * (SUBMIT_BATCH_MAX + 1))
    assert f"at most {SUBMIT_BATCH_MAX}" in refused.value.message
    assert count(mesh, kind) == 0


def test_cli_from_file_sends_in_batches_and_prints_the_ids(mesh: Mesh, tmp_path: Path) -> None:
    kind = "file-" + uid()
    lines = [json.dumps({"type": kind, "payload": {"n": i}}) for i in range(SUBMIT_BATCH_MAX + 3)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n\n")  # a blank line at the end is no task
    done = cli(mesh, "--from-file", str(path))
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == SUBMIT_BATCH_MAX + 3 and len(set(ids)) == len(ids)
    assert mesh.admin.get_task(ids[-1])["payload"] == {"n": SUBMIT_BATCH_MAX + 2}  # in order, across batches
    assert count(mesh, kind) == SUBMIT_BATCH_MAX + 3
    # From stdin, with --json: the results, each with its line number.
    piped = cli(mesh, "--from-file", "-", "--json", stdin=json.dumps({"type": kind}) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert [(r["line"], r["status"]) for r in json.loads(piped.stdout)["results"]] == [(1, 201)]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ('{"type": "x", "payload": ', "line 3: not valid JSON"),
        ('["not", "an", "object"]', "line 3: a task is a JSON object"),
        ('{"payload": 1}', "line 3: type: Field required"),
        ('{"type": "x", "priority": "asap"}', "line 3: priority:"),
    ],
    ids=["not-json", "not-object", "no-type", "bad-priority"],
)
def test_cli_from_file_with_a_bad_line_names_it_and_sends_nothing(
    mesh: Mesh, tmp_path: Path, bad: str, says: str
) -> None:
    kind = "bad-" + uid()
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join([json.dumps({"type": kind}), json.dumps({"type": kind}), bad]) + "\n")
    done = cli(mesh, "--from-file", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    message = done.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: ") and says in message and "nothing was sent" in message
    assert count(mesh, kind) == 0


def test_cli_from_file_reports_refused_lines_and_exits_1(mesh: Mesh, tmp_path: Path) -> None:
    kind = "some-" + uid()
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"type": kind}) + "\n" + json.dumps({"type": kind, "route": "nobody-" + uid()}) + "\n")
    done = cli(mesh, "--from-file", str(path))
    assert done.returncode == 1
    assert len(done.stdout.split()) == 1  # the line that went in
    assert "error: line 2:" in done.stderr and "unknown_agent" in done.stderr
    assert count(mesh, kind) == 1
    mixed = cli(mesh, "--from-file", str(path), "--type", kind)
    assert mixed.returncode == 2 and "--from-file takes every task from the file; drop --type" in mixed.stderr
    neither = cli(mesh)
    assert neither.returncode == 2 and "give --type (one task) or --from-file (many)" in neither.stderr


def test_cli_from_file_as_an_agent_waits_out_the_submit_rate(mesh: Mesh, tmp_path: Path) -> None:
    name = "filer-" + uid()
    secret = mesh.admin.create_agent(name, [name])["secret"]
    burst = 60  # MCS_RATE_SUBMITS_BURST's default; the rate is 20 a second
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"type": name, "payload": i}) + "\n" for i in range(burst + 15)))
    done = cli(mesh, "--from-file", str(path), agent={"MCS_AGENT_ID": name, "MCS_AGENT_SECRET": secret})
    assert done.returncode == 0, done.stderr
    assert "15 tasks wait for the submit rate" in done.stderr
    ids = done.stdout.split()
    assert len(set(ids)) == burst + 15
    assert [mesh.admin.get_task(ids[i])["payload"] for i in (0, burst, burst + 14)] == [0, burst, burst + 14]
    assert count(mesh, name) == burst + 15
