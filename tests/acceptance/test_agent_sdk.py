"""The agent SDK (`mcs.agent`) against the real `mcs up`: handlers become agents that receive real signed
webhooks (or pull), extend leases, report results and failures, and shut down cleanly; `mcs agent run`
does the same from the shell."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcs import webhooks
from mcs.agent import Agent, PermanentError, Task

from .conftest import Mesh, event_kinds, uid, wait_until

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds for anything the mesh does on its own (a busy 2-core machine)


class AgentThread:
    """An `Agent` serving on its own event loop in a background thread, as a test needs it."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"agent-{agent.name}", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(agent.start(), self.loop).result(timeout=DEADLINE)
        self.served = asyncio.run_coroutine_threadsafe(agent.serve(), self.loop)

    def begin_stop(self) -> Any:
        """Ask the agent to stop (as SIGTERM does); returns a future that is done once it has stopped."""
        return asyncio.run_coroutine_threadsafe(self.agent.stop(), self.loop)

    def stop(self, timeout: float = DEADLINE) -> None:
        if not self.loop.is_running():
            return
        self.begin_stop().result(timeout=timeout)
        self.served.result(timeout=timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)
        self.loop.close()


@pytest.fixture
def sdk_agent(mesh: Mesh) -> Iterator[Callable[..., AgentThread]]:
    """`sdk_agent(handler, capabilities=[...], **agent_kwargs)`: a new agent (created with the admin API)
    serving through the SDK; stopped at teardown."""
    started: list[AgentThread] = []

    def make(handler: Any, *, capabilities: list[str], name: str | None = None, **kw: Any) -> AgentThread:
        name = name or f"sdk-{uid()}"
        creds = mesh.admin.create_agent(name, capabilities)
        kw.setdefault("webhook_secret", creds["webhook_secret"])
        agent = Agent(handler, capabilities=capabilities, url=mesh.url, name=name, secret=creds["secret"], env={}, **kw)
        runner = AgentThread(agent)
        started.append(runner)
        return runner

    yield make
    for runner in started:
        runner.stop()


def echo(task: Task) -> Any:
    return {"echo": task.payload, "type": task.type, "attempt": task.attempts}


# ---------------------------------------------------------------- the basics


def test_sync_and_async_handlers_complete_tasks_via_webhooks(mesh, sdk_agent):
    kind = f"echo-{uid()}"
    sync_agent = sdk_agent(echo, capabilities=[kind])

    async def shout(task: Task) -> Any:
        await asyncio.sleep(0)
        return {"shout": str(task.payload["text"]).upper()}

    loud = f"shout-{uid()}"
    async_agent = sdk_agent(shout, capabilities=[loud])
    registered = mesh.admin.get_agent(sync_agent.agent.name)
    assert registered["status"] == "online" and registered["notify_url"] == sync_agent.agent.notify_url

    echoed = [mesh.admin.submit(kind, {"n": i}) for i in range(3)]
    shouted = mesh.admin.submit(loud, {"text": "hello"})
    for i, t in enumerate(echoed):
        done = mesh.admin.wait_for(t["id"], timeout=DEADLINE)
        assert done["state"] == "completed", done
        assert done["result"] == {"echo": {"n": i}, "type": kind, "attempt": 1}
        assert done["assigned_to"] == sync_agent.agent.name
    done = mesh.admin.wait_for(shouted["id"], timeout=DEADLINE)
    assert done["state"] == "completed" and done["result"] == {"shout": "HELLO"}, done
    assert sync_agent.agent.completed == 3 and async_agent.agent.completed == 1


def test_exception_fails_retryably_then_succeeds_and_permanent_error_does_not_retry(mesh, sdk_agent):
    kind = f"flaky-{uid()}"

    def flaky(task: Task) -> Any:
        if task.payload == "never":
            raise PermanentError("this input can never work")
        if task.attempts == 1:
            raise ValueError(f"boom on attempt {task.attempts}")
        return {"ok": task.attempts}

    sdk_agent(flaky, capabilities=[kind])
    retried = mesh.admin.submit(kind, "sometimes", max_retries=3)
    doomed = mesh.admin.submit(kind, "never", max_retries=3)

    done = mesh.admin.wait_for(retried["id"], timeout=DEADLINE)
    assert done["state"] == "completed" and done["result"] == {"ok": 2} and done["attempts"] == 2, done
    events = mesh.admin.events(retried["id"])
    (retrying,) = [e for e in events if e["kind"] == "retrying"]
    assert retrying["detail"]["error"] == "ValueError: boom on attempt 1"

    failed = mesh.admin.wait_for(doomed["id"], timeout=DEADLINE)
    assert failed["state"] == "failed" and failed["attempts"] == 1, failed
    assert failed["error"] == "PermanentError: this input can never work"
    assert "retrying" not in event_kinds(mesh.admin.events(doomed["id"]))


def test_a_result_that_is_not_json_fails_the_task_with_a_clear_error(mesh, sdk_agent):
    kind = f"bad-result-{uid()}"
    sdk_agent(lambda task: {"when": object()}, capabilities=[kind])
    task = mesh.admin.submit(kind, {}, max_retries=3)
    failed = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
    assert failed["state"] == "failed" and "not JSON" in failed["error"], failed


# ---------------------------------------------------------------- webhooks


def test_webhooks_with_a_wrong_secret_are_rejected_and_nothing_is_claimed(mesh, sdk_agent):
    kind = f"forged-{uid()}"
    calls: list[str] = []
    # The agent verifies with a secret that is not the one MCS signs with.
    impostor = sdk_agent(
        lambda task: calls.append(task.id),
        capabilities=[kind],
        webhook_secret=webhooks.SECRET_PREFIX + "AAAA",
        claim_on_push=False,  # (with it, tests/acceptance/test_push_claim.py)
    )
    task = mesh.admin.submit(kind, {"x": 1})
    app = impostor.agent.receiver.app  # type: ignore[union-attr]
    wait_until(lambda: app.rejected >= 2, timeout=DEADLINE, what="the notifier's webhook and a retry to be refused")
    stored = mesh.admin.get_task(task["id"])
    assert stored["state"] == "assigned" and stored["attempts"] == 0, stored
    assert "claimed" not in event_kinds(mesh.admin.events(task["id"]))
    assert calls == [] and app.accepted == 0


def test_receiver_answers_forged_stale_and_malformed_webhooks_with_4xx(mesh, sdk_agent):
    kind = f"guarded-{uid()}"
    runner = sdk_agent(echo, capabilities=[kind])
    # A real task, queued for someone else, whose id a forger would like the agent to claim.
    bait = mesh.admin.submit(kind + "-other", {"bait": True})
    secret = runner.agent.webhook_secret
    url = runner.agent.notify_url
    assert url is not None
    body = json.dumps({"type": "task.assigned", "timestamp": "x", "data": {"task": {"id": bait["id"]}}})

    def post(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=body, headers={"content-type": "application/json", **headers}, timeout=10)

    now = int(time.time())
    good = webhooks.headers(secret=secret, message_id="msg_1", timestamp=now, body=body)
    stale = webhooks.headers(secret=secret, message_id="msg_2", timestamp=now - 301, body=body)
    forged = webhooks.headers(secret=webhooks.SECRET_PREFIX + "AAAA", message_id="msg_3", timestamp=now, body=body)
    tampered = dict(good) | {"webhook-id": "msg_other"}

    assert post(stale).status_code == 401
    assert post(forged).status_code == 401
    assert post(tampered).status_code == 401
    assert post({}).status_code == 400
    assert post({**good, "webhook-timestamp": "yesterday"}).status_code == 400
    assert httpx.get(url, timeout=10).status_code == 405
    assert runner.agent.receiver.app.rejected == 5  # type: ignore[union-attr]
    # The genuine one is accepted; claiming then fails (the agent lacks the bait's capability): no harm.
    assert post(good).status_code == 204
    assert mesh.admin.get_task(bait["id"])["state"] == "queued"
    assert "claimed" not in event_kinds(mesh.admin.events(bait["id"]))


def test_a_task_assigned_before_a_restart_is_claimed_at_start(mesh, sdk_agent):
    """The agent's previous run was assigned a task and died before its webhook arrived: the new run claims
    it at start instead of leaving it until the assignment times out."""
    from mcs.client import Client

    kind = f"restart-{uid()}"
    name = f"sdk-{uid()}"
    creds = mesh.admin.create_agent(name, [kind])
    with Client(mesh.url, agent_id=name, agent_secret=creds["secret"]) as previous_run:
        previous_run.register([kind], notify_url="http://127.0.0.1:9/gone")  # nothing listens there
    task = mesh.admin.submit(kind, {"n": 1})
    wait_until(lambda: mesh.admin.get_task(task["id"])["state"] == "assigned", timeout=DEADLINE, what="assignment")

    agent = Agent(
        echo,
        capabilities=[kind],
        url=mesh.url,
        name=name,
        secret=creds["secret"],
        webhook_secret=creds["webhook_secret"],
        env={},
    )
    runner = AgentThread(agent)
    try:
        done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
        assert done["state"] == "completed" and done["attempts"] == 1, done
        assert "unclaimed" not in event_kinds(mesh.admin.events(task["id"]))
    finally:
        runner.stop()


# ---------------------------------------------------------------- leases


def test_lease_is_extended_while_a_long_handler_runs(mesh, sdk_agent):
    kind = f"slow-{uid()}"
    release = threading.Event()

    def slow(task: Task) -> Any:
        if not release.wait(timeout=DEADLINE * 2):
            raise TimeoutError("the test never released the handler")
        return {"slept": True}

    sdk_agent(slow, capabilities=[kind])
    # A 1-second lease; the watchdog checks every 0.2 s, so without extensions the lease would lapse.
    task = mesh.admin.submit(kind, {}, claim_ttl=1.0, max_retries=0)
    wait_until(
        lambda: event_kinds(mesh.admin.events(task["id"])).count("extended") >= 4,
        timeout=DEADLINE,
        what="four lease extensions (at least two lease lengths of work)",
    )
    running = mesh.admin.get_task(task["id"])
    assert running["state"] == "claimed" and running["attempts"] == 1, running
    release.set()
    done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
    assert done["state"] == "completed" and done["attempts"] == 1 and done["result"] == {"slept": True}, done
    assert "lease_expired" not in event_kinds(mesh.admin.events(task["id"]))


def test_async_handler_is_abandoned_when_its_task_is_canceled(mesh, sdk_agent):
    kind = f"cancel-{uid()}"
    started, cancelled = threading.Event(), threading.Event()

    async def waits(task: Task) -> Any:
        started.set()
        try:
            await asyncio.sleep(DEADLINE * 2)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    runner = sdk_agent(waits, capabilities=[kind])
    task = mesh.admin.submit(kind, {}, claim_ttl=1.0)
    assert started.wait(DEADLINE)
    mesh.admin.cancel(task["id"])
    # The next extension is refused (409): the agent stops the handler and reports nothing.
    assert cancelled.wait(DEADLINE), "the handler was not canceled after the task was"
    assert mesh.admin.get_task(task["id"])["state"] == "canceled"
    assert runner.agent.completed == 0 and runner.agent.failed == 0


def test_a_sync_handler_abandoned_with_its_lease_keeps_its_slot_until_its_thread_returns(mesh, sdk_agent, caplog):
    """A thread cannot be stopped: with concurrency 1, the next task waits until the abandoned one's
    thread really returned, or the agent would run more handlers than it registered for."""
    kind = f"cancel-sync-{uid()}"
    first_started, release_first, second_started = threading.Event(), threading.Event(), threading.Event()

    def work(task: Task) -> Any:
        if task.payload["n"] == 1:
            first_started.set()
            release_first.wait(DEADLINE)
            return "too late"
        second_started.set()
        return "second"

    runner = sdk_agent(work, capabilities=[kind], listen=None, concurrency=1)
    first = mesh.admin.submit(kind, {"n": 1}, claim_ttl=1.0)
    assert first_started.wait(DEADLINE)
    caplog.set_level(logging.WARNING, logger="mcs.agent")
    mesh.admin.cancel(first["id"])
    second = mesh.admin.submit(kind, {"n": 2})
    # The next extension of the first lease is refused and the agent abandons the task...
    wait_until(
        lambda: any(f"lost the lease on {first['id']}" in r.getMessage() for r in caplog.records),
        timeout=DEADLINE,
        what="the agent to abandon the canceled task",
    )
    # ...yet its thread still runs, so the only slot stays taken: the second task is not even claimed. (A
    # negative check needs a window; with the slot freed, the polling agent claims within milliseconds.)
    time.sleep(1.0)
    assert not second_started.is_set(), "a second handler started while the first one's thread still ran"
    assert mesh.admin.get_task(second["id"])["state"] == "queued"
    release_first.set()
    assert mesh.admin.wait_for(second["id"], timeout=DEADLINE)["state"] == "completed"
    assert runner.agent.completed == 1 and runner.agent.failed == 0


# ---------------------------------------------------------------- pull mode and concurrency


def test_pull_mode_claims_with_wait_and_runs_up_to_concurrency_at_once(mesh, sdk_agent):
    kind = f"pull-{uid()}"
    lock = threading.Lock()
    running, peak = [0], [0]
    both = threading.Barrier(2, timeout=DEADLINE)

    def work(task: Task) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            if task.payload["i"] < 2:
                both.wait()  # the first two run at the same time, or this times out
            return {"i": task.payload["i"]}
        finally:
            with lock:
                running[0] -= 1

    runner = sdk_agent(work, capabilities=[kind], listen=None, concurrency=2, pull_wait=2.0)
    assert runner.agent.notify_url is None
    shown = mesh.admin.get_agent(runner.agent.name)
    assert shown["status"] == "online" and shown["notify_url"] is None
    tasks = [mesh.admin.submit(kind, {"i": i}) for i in range(5)]
    for i, t in enumerate(tasks):
        done = mesh.admin.wait_for(t["id"], timeout=DEADLINE)
        assert done["state"] == "completed" and done["result"] == {"i": i}, done
    assert peak[0] == 2


def test_push_mode_respects_concurrency(mesh, sdk_agent):
    kind = f"conc-{uid()}"
    gate = threading.Event()
    lock = threading.Lock()
    running, peak = [0], [0]

    def work(task: Task) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(DEADLINE)
        with lock:
            running[0] -= 1
        return task.payload

    sdk_agent(work, capabilities=[kind], concurrency=2)
    tasks = [mesh.admin.submit(kind, i) for i in range(4)]
    wait_until(lambda: running[0] == 2, timeout=DEADLINE, what="two handlers running")
    states = sorted(mesh.admin.get_task(t["id"])["state"] for t in tasks)
    assert states.count("claimed") == 2, states
    gate.set()
    for t in tasks:
        assert mesh.admin.wait_for(t["id"], timeout=DEADLINE)["state"] == "completed"
    assert peak[0] == 2


# ---------------------------------------------------------------- shutdown


def test_shutdown_finishes_the_running_task_and_goes_offline(mesh, sdk_agent):
    kind = f"drain-{uid()}"
    started, finish = threading.Event(), threading.Event()

    def work(task: Task) -> Any:
        started.set()
        finish.wait(DEADLINE)
        return {"finished": True}

    runner = sdk_agent(work, capabilities=[kind])
    task = mesh.admin.submit(kind, {})
    assert started.wait(DEADLINE)
    stopping = runner.begin_stop()
    wait_until(
        lambda: mesh.admin.get_agent(runner.agent.name)["notify_url"] is None,
        timeout=DEADLINE,
        what="the agent to sign off (no notify_url) while its task still runs",
    )
    assert not stopping.done()
    later = mesh.admin.submit(kind, {"after": "shutdown began"})
    finish.set()
    stopping.result(timeout=DEADLINE)
    done = mesh.admin.get_task(task["id"])
    assert done["state"] == "completed" and done["result"] == {"finished": True}, done
    wait_until(lambda: mesh.admin.get_agent(runner.agent.name)["status"] == "offline", timeout=DEADLINE, what="offline")
    assert mesh.admin.get_task(later["id"])["state"] == "queued"  # nobody offered it to a stopping agent


def test_shutdown_releases_a_task_that_outlives_the_grace(mesh, sdk_agent):
    kind = f"release-{uid()}"
    started = threading.Event()
    never = threading.Event()

    def stuck(task: Task) -> Any:
        started.set()
        never.wait(DEADLINE * 3)
        return "never reported"

    runner = sdk_agent(stuck, capabilities=[kind], shutdown_grace=0.5)
    task = mesh.admin.submit(kind, {}, max_retries=3)
    assert started.wait(DEADLINE)
    runner.stop()
    released = mesh.admin.get_task(task["id"])
    assert released["state"] in ("retrying", "queued"), released
    assert released["error"] == f"released: agent {runner.agent.name} shut down before the handler finished"
    kinds = event_kinds(mesh.admin.events(task["id"]))
    assert "retrying" in kinds and "lease_expired" not in kinds
    assert runner.agent.released == 1
    never.set()


# ---------------------------------------------------------------- the CLI


HANDLER_MODULE = """
    import os
    from mcs.agent import PermanentError

    def handle(task):
        if task.payload.get("fail"):
            raise PermanentError("asked to fail")
        return {"doubled": task.payload["n"] * 2, "by": os.environ["MCS_AGENT_ID"]}
"""


def _agent_env(mesh: Mesh, name: str, creds: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    return env | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": name,
        "MCS_AGENT_SECRET": creds["secret"],
        "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_mcs_agent_run_serves_a_module_function_and_stops_on_sigterm(mesh, tmp_path: Path, mode: str):
    kind = f"cli-{mode}-{uid()}"
    name = f"cli-{uid()}"
    module = f"handlers_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(HANDLER_MODULE))
    creds = mesh.admin.create_agent(name, [kind])
    args = [sys.executable, "-m", "mcs", "agent", "run", f"{module}:handle", "--capability", kind]
    args += ["--pull"] if mode == "pull" else ["--listen", "127.0.0.1:0"]
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=_agent_env(mesh, name, creds), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: mesh.admin.get_agent(name)["status"] == "online" or proc.poll() is not None,
            timeout=DEADLINE,
            what="the agent to register",
        )
        assert proc.poll() is None, log_path.read_text()
        expected_push = mesh.admin.get_agent(name)["notify_url"] is not None
        assert expected_push == (mode == "push")
        ok = mesh.admin.submit(kind, {"n": 21})
        bad = mesh.admin.submit(kind, {"n": 1, "fail": True})
        done = mesh.admin.wait_for(ok["id"], timeout=DEADLINE)
        assert done["state"] == "completed" and done["result"] == {"doubled": 42, "by": name}, done
        failed = mesh.admin.wait_for(bad["id"], timeout=DEADLINE)
        assert failed["state"] == "failed" and failed["error"] == "PermanentError: asked to fail", failed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"`mcs agent run` ignored SIGTERM:\n{log_path.read_text()}") from None
    assert code == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


@pytest.mark.parametrize("flag", [None, "--no-claim-on-push"])
def test_mcs_agent_run_claims_on_push_unless_told_not_to(mesh, tmp_path: Path, flag: str | None):
    """By default MCS claims for the agent at assignment (queued -> claimed by the dispatcher); with
    --no-claim-on-push the agent claims each task itself (assigned, then claimed by the agent), even when
    it is stored with push-claim on from an earlier run."""
    kind = f"cli-claim-{uid()}"
    name = f"cli-{uid()}"
    module = f"handlers_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(HANDLER_MODULE))
    creds = mesh.admin.create_agent(name, [kind], claim_on_push=True)
    args = [sys.executable, "-m", "mcs", "agent", "run", f"{module}:handle", "--capability", kind]
    args += [flag] if flag else []
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=_agent_env(mesh, name, creds), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: mesh.admin.get_agent(name)["status"] == "online" or proc.poll() is not None,
            timeout=DEADLINE,
            what="the agent to register",
        )
        assert proc.poll() is None, log_path.read_text()
        assert mesh.admin.get_agent(name)["claim_on_push"] is (flag is None)
        task = mesh.admin.submit(kind, {"n": 2})
        done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
        assert done["state"] == "completed" and done["result"] == {"doubled": 4, "by": name}, done
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    events = mesh.admin.events(task["id"])
    kinds = [e["kind"] for e in events if e["kind"] in ("assigned", "claimed", "completed")]
    claims = [e["actor"] for e in events if e["kind"] == "claimed"]
    if flag is None:
        assert kinds == ["claimed", "completed"] and claims == ["dispatcher"], events
    else:
        assert kinds == ["assigned", "claimed", "completed"] and claims == [name], events
    assert "Traceback" not in log_path.read_text()


def test_mcs_agent_run_bad_arguments_are_one_line_errors(mesh, tmp_path: Path):
    name = f"cli-{uid()}"
    creds = mesh.admin.create_agent(name, ["x"])
    env = _agent_env(mesh, name, creds)
    (tmp_path / "notcallable.py").write_text("handle = 42\n")

    def run(*args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcs", "agent", "run", *args],
            cwd=tmp_path,
            env=env | env_overrides,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )

    cases = {
        ("nosuchmodule:handle", "-c", "x"): "cannot import 'nosuchmodule'",
        ("notcallable:handle", "-c", "x"): "not a function",
        ("notcallable", "-c", "x"): "module:function",
        ("notcallable:missing", "-c", "x"): "has no attribute",
        ("json:dumps", "-c", "x", "--listen", "nonsense"): "HOST:PORT",
    }
    for args, message in cases.items():
        result = run(*args)
        assert result.returncode != 0, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    wrong = run("json:dumps", "-c", "x", MCS_AGENT_SECRET="wrong")
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr
    nowhere = run("json:dumps", "-c", "x", "--pull", MCS_URL="http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "cannot reach MCS" in nowhere.stderr, nowhere.stderr
    nosecret = run("json:dumps", "-c", "x", MCS_WEBHOOK_SECRET="")
    assert nosecret.returncode == 1 and "MCS_WEBHOOK_SECRET" in nosecret.stderr, nosecret.stderr
