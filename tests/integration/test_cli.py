"""The `mcs` CLI through click's runner, against a real `mcs api` process on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

from mcs.cli import main
from mcs.client import Client, UnprocessableError

TOKEN = "cli-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    port = free_port()
    env = os.environ | {"MCS_DB": str(tmp / "mcs.db"), "MCS_PORT": str(port), "MCS_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(proc.stderr.read().decode())
    yield url
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    proc.stderr.close()


@pytest.fixture
def mcs(api, monkeypatch):
    monkeypatch.setenv("MCS_URL", api)
    monkeypatch.setenv("MCS_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("MCS_AGENT_ID", raising=False)
    runner = CliRunner()

    def run(*args, env=None):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


def test_admin_creates_an_agent_and_lists_it(mcs):
    created = mcs("admin", "agent", "create", "ocasia", "-c", "mcs-review", "--json")
    assert created.exit_code == 0, created.output
    secrets = json.loads(created.stdout)
    assert secrets["name"] == "ocasia" and secrets["webhook_secret"].startswith("whsec_")
    listed = mcs("agent", "list")
    assert "ocasia" in listed.stdout and "offline" in listed.stdout
    dup = mcs("admin", "agent", "create", "ocasia")
    assert dup.exit_code == 1 and "already exists" in dup.stderr and "Traceback" not in dup.output


def test_admin_pins_an_agent_notify_host_and_the_real_api_refuses_its_own_port(mcs, api):
    created = mcs("admin", "agent", "create", "pinny", "-c", "echo", "--notify-host", "127.0.0.1", "--json")
    assert created.exit_code == 0, created.output
    secrets = json.loads(created.stdout)
    assert secrets["notify_host"] == "127.0.0.1"
    agent = Client(api, agent_id="pinny", agent_secret=secrets["secret"])
    try:
        with pytest.raises(UnprocessableError, match="pinned to notify host 127.0.0.1: notify_url host localhost"):
            agent.register(["echo"], notify_url="http://localhost:9/hook")
        with pytest.raises(UnprocessableError, match="port of an MCS process on this machine: refused always"):
            agent.register(["echo"], notify_url=api + "/v1/tasks")
        assert agent.register(["echo"], notify_url="http://127.0.0.1:9/hook")["notify_url"] == "http://127.0.0.1:9/hook"
    finally:
        agent.close()
    updated = mcs("admin", "agent", "update", "pinny", "--notify-host", "hooks.example.org")
    assert updated.exit_code == 0 and "notify host hooks.example.org" in updated.stdout
    shown = json.loads(mcs("agent", "show", "pinny", "--json").stdout)
    assert shown["notify_host"] == "hooks.example.org" and shown["notify_url"] is None  # the old URL is dropped
    cleared = json.loads(mcs("admin", "agent", "update", "pinny", "--no-notify-host", "--json").stdout)
    assert cleared["notify_host"] is None
    neither = mcs("admin", "agent", "update", "pinny")
    assert neither.exit_code == 2 and "--notify-host HOST or --no-notify-host" in neither.stderr
    bad = mcs("admin", "agent", "create", "badpin", "--notify-host", "http://x.org/")
    assert bad.exit_code == 1 and "not a host name" in bad.stderr and "Traceback" not in bad.output


def test_admin_turns_claim_on_push_on_and_off(mcs):
    created = json.loads(mcs("admin", "agent", "create", "pushy", "-c", "echo", "--claim-on-push", "--json").stdout)
    assert created["claim_on_push"] is True
    assert json.loads(mcs("agent", "show", "pushy", "--json").stdout)["claim_on_push"] is True
    off = mcs("admin", "agent", "update", "pushy", "--no-claim-on-push")
    assert off.exit_code == 0 and "claim on push off" in off.stdout, off.output
    shown = json.loads(mcs("agent", "show", "pushy", "--json").stdout)
    assert shown["claim_on_push"] is False and shown["notify_host"] is None  # the pin was left alone
    both = mcs("admin", "agent", "update", "pushy", "--notify-host", "h.example.org", "--no-notify-host")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_a_bad_allow_fetch_entry_is_a_usage_error(mcs):
    args = ["agent", "llm", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-c", "ask"]
    bad = mcs(*args, "--allow-fetch", "10.0.0.0/8", "--allow-fetch", "not a host")
    assert bad.exit_code == 2 and "--allow-fetch" in bad.stderr and "'not a host' is not a CIDR" in bad.stderr


def test_submit_with_payload_file_as_in_the_write_up(mcs, tmp_path):
    mcs("admin", "agent", "create", "rex", "-c", "mcs-review")
    review = tmp_path / "review.json"
    review.write_text(json.dumps({"prompt": "review this", "url": "https://example.invalid/payload"}))
    submitted = mcs("task", "submit", "--type", "mcs-review", "--route", "rex", "--payload-file", str(review))
    assert submitted.exit_code == 0, submitted.output
    task_id = submitted.stdout.strip()
    shown = json.loads(mcs("task", "show", task_id, "--json").stdout)
    assert shown["route"] == "rex" and shown["payload"]["prompt"] == "review this"
    events = mcs("task", "events", task_id)
    assert "submitted" in events.stdout
    listed = json.loads(mcs("task", "list", "--type", "mcs-review", "--json").stdout)
    assert task_id in [t["id"] for t in listed["tasks"]]
    canceled = mcs("task", "cancel", task_id)
    assert canceled.exit_code == 0 and "canceled" in canceled.stdout


def test_submit_wait_prints_the_result(mcs, api):
    secrets = json.loads(mcs("admin", "agent", "create", "worker", "-c", "echo", "--json").stdout)
    agent = Client(api, agent_id="worker", agent_secret=secrets["secret"])
    agent.register(["echo"])  # no notify_url: it polls

    def work():
        task = agent.claim_next(wait=10)
        agent.complete(task["id"], task["claim_token"], {"echo": task["payload"]})

    worker = threading.Thread(target=work)
    worker.start()
    result = mcs("task", "submit", "--type", "echo", "--payload", '{"n": 7}', "--wait", "--timeout", "20")
    worker.join(timeout=20)
    agent.close()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"echo": {"n": 7}}


def test_errors_are_one_line_and_non_zero(mcs, tmp_path):
    missing = mcs("task", "show", "no-such-task")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no task") and "Traceback" not in missing.output
    bad_json = mcs("task", "submit", "--type", "x", "--payload", "{oops")
    assert bad_json.exit_code == 2 and "not valid JSON" in bad_json.stderr
    no_file = mcs("task", "submit", "--type", "x", "--payload-file", str(tmp_path / "nope.json"))
    assert no_file.exit_code == 2 and "cannot read" in no_file.stderr
    bad_priority = mcs("task", "submit", "--type", "x", "--priority", "asap")
    assert bad_priority.exit_code == 2
    unreachable = mcs("agent", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.exit_code == 1 and "cannot reach MCS" in unreachable.stderr


def test_options_show_their_environment_variable(mcs):
    assert "MCS_URL" in mcs("task", "submit", "--help").stdout
    assert "MCS_DB" in mcs("migrate", "--help").stdout


def test_memory_commands(mcs, tmp_path):
    put = mcs("mem", "put", "mesh", "config/model", "--value", '{"name": "qwen"}', "--tag", "cfg", "--ttl", "3600")
    assert put.exit_code == 0, put.output
    assert "version 1" in put.stdout
    got = mcs("mem", "get", "mesh", "config/model")
    assert json.loads(got.stdout) == {"name": "qwen"} and "version 1" in got.stderr
    (tmp_path / "v.json").write_text("[1, 2]")
    cas = mcs("mem", "put", "mesh", "config/model", "--file", str(tmp_path / "v.json"), "--if-match", "1", "--json")
    assert json.loads(cas.stdout)["version"] == 2
    stale = mcs("mem", "put", "mesh", "config/model", "--value", "3", "--if-match", "1")
    assert stale.exit_code == 1 and "version_mismatch" in stale.stderr
    taken = mcs("mem", "put", "mesh", "config/model", "--value", "3", "--if-absent")
    assert taken.exit_code == 1 and "key_exists" in taken.stderr
    listed = json.loads(mcs("mem", "ls", "mesh", "--prefix", "config/", "--tag", "cfg", "--json").stdout)
    assert [i["key"] for i in listed["items"]] == []  # the second put replaced the tags
    listed = json.loads(mcs("mem", "ls", "mesh", "--prefix", "config/", "--json").stdout)
    assert [i["key"] for i in listed["items"]] == ["config/model"]
    assert mcs("mem", "del", "mesh", "config/model").exit_code == 0
    missing = mcs("mem", "get", "mesh", "config/model")
    assert missing.exit_code == 1 and "no key" in missing.stderr
    bad = mcs("mem", "get", "Private:x", "k")
    assert bad.exit_code == 1 and "bad_namespace" in bad.stderr
    no_value = mcs("mem", "put", "mesh", "k")
    assert no_value.exit_code == 2


def test_ids_cannot_walk_to_another_endpoint(mcs):
    walked = mcs("task", "show", "../agents")
    assert walked.exit_code == 1 and walked.stdout == "" and "404" in walked.stderr


def test_a_port_in_use_is_one_line_and_mcs_up_gives_up(api, tmp_path):
    port = api.rsplit(":", 1)[1]  # the module's api already listens there
    env = os.environ | {"MCS_DB": str(tmp_path / "mcs.db"), "MCS_PORT": port}
    alone = subprocess.run([sys.executable, "-m", "mcs", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 78 and f"port is already in use: 127.0.0.1:{port}" in alone.stderr
    assert "Traceback" not in alone.stderr
    ports = {f"MCS_{p}_METRICS_PORT": str(free_port()) for p in ("DISPATCHER", "WATCHDOG", "NOTIFIER")}
    up = subprocess.run(
        [sys.executable, "-m", "mcs", "up"],
        env=env | ports | {"MCS_ADMIN_TOKEN": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # `mcs up` looks before it starts anything (or writes the CLI's config for a mesh that is not its own)
    assert up.returncode == 1 and f"mcs up: cannot start: the port is already in use: 127.0.0.1:{port}" in up.stderr
    assert "--port" in up.stderr
