"""`mcs agent llm` on the real `mcs up`, answering through a fake OpenAI-compatible server on loopback:
whole answers and model errors, and streamed answers whose progress shows on the event stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcs.agent.llm import PROGRESS_INTERVAL
from tests.fake_openai import FakeOpenAI

from .conftest import Mesh, event_kinds, uid, wait_until
from .test_events import Watcher

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds
API_KEY = "sk-never-log-me-" + uid()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@contextmanager
def llm_agent(
    mesh: Mesh, fake: FakeOpenAI, log_path: Path, kind: str, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`mcs agent llm ... EXTRA` answering tasks of type `kind` through `fake`, online; stopped with SIGTERM
    (it must exit 0) at the end."""
    name = f"llm-{uid()}"
    creds = mesh.admin.create_agent(name, [kind])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCS_", "OPENAI_"))} | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": name,
        "MCS_AGENT_SECRET": creds["secret"],
        "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
        "MCS_LLM_API_KEY": API_KEY,
        "MCS_LOG_LEVEL": "DEBUG",  # the most the agent ever logs: the key must not be in it
        "PYTHONUNBUFFERED": "1",
    }
    args = ["agent", "llm", "--base-url", fake.url, "--model", "tiny", "--capability", kind, *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mcs", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: mesh.admin.get_agent(name)["status"] == "online" or proc.poll() is not None,
            timeout=DEADLINE,
            what="the LLM agent to register",
        )
        assert proc.poll() is None, log_path.read_text()
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log_path.read_text()


def test_llm_agent_answers_tasks_and_turns_model_errors_into_clear_failures(mesh: Mesh, fake, tmp_path: Path):
    kind = f"ask-{uid()}"
    fake.materials["notes.txt"] = "the meeting is on Tuesday"
    log_path = tmp_path / "llm-agent.log"
    # The material is on loopback, which fetches refuse by default.
    with llm_agent(mesh, fake, log_path, kind, "--timeout", "1", "--allow-fetch", fake.address):
        answered = mesh.admin.submit(kind, {"prompt": "When is the meeting?", "url": fake.material_url("notes.txt")})
        wrong_key = mesh.admin.submit(kind, {"prompt": "[status=401]"}, max_retries=3)
        hiccup = mesh.admin.submit(kind, {"prompt": "[flaky=503] try again"}, max_retries=3)
        hangs = mesh.admin.submit(kind, {"prompt": "[hang]"}, max_retries=0)
        no_prompt = mesh.admin.submit(kind, {"question": "where is the prompt?"}, max_retries=3)

        done = mesh.admin.wait_for(answered["id"], timeout=DEADLINE)
        assert done["state"] == "completed", done
        assert done["result"]["answer"].startswith("echo: When is the meeting?")
        assert "the meeting is on Tuesday" in done["result"]["answer"]
        assert done["result"]["model"] == "tiny-fake" and done["result"]["usage"]["total_tokens"] == 9

        failed = mesh.admin.wait_for(wrong_key["id"], timeout=DEADLINE)
        assert failed["state"] == "failed" and failed["attempts"] == 1, failed
        assert "HTTP 401" in failed["error"] and "check the API key" in failed["error"]

        recovered = mesh.admin.wait_for(hiccup["id"], timeout=DEADLINE)
        assert recovered["state"] == "completed" and recovered["attempts"] == 2, recovered
        (retrying,) = [e for e in mesh.admin.events(hiccup["id"]) if e["kind"] == "retrying"]
        assert "HTTP 503: fake hiccup" in retrying["detail"]["error"]

        timed_out = mesh.admin.wait_for(hangs["id"], timeout=DEADLINE)
        assert timed_out["state"] == "failed", timed_out
        assert "did not answer within 1 s" in timed_out["error"]
        assert "lease_expired" not in event_kinds(mesh.admin.events(hangs["id"]))

        unusable = mesh.admin.wait_for(no_prompt["id"], timeout=DEADLINE)
        assert unusable["state"] == "failed" and "'prompt'" in unusable["error"] and unusable["attempts"] == 1

        assert {r["headers"].get("authorization") for r in fake.requests} == {f"Bearer {API_KEY}"}
    output = log_path.read_text()
    assert API_KEY not in output
    # Each failure is one line in the log: expected trouble with the model server is no traceback.
    assert "failed for good: PermanentError: the model server answered HTTP 401" in output
    assert "failed: ModelUnavailable: the model server answered HTTP 503" in output
    assert "Traceback" not in output


def mcs_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token}
    return subprocess.run([sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_long_streamed_answer_shows_progress_live_and_a_broken_stream_fails_clearly(mesh: Mesh, tmp_path: Path):
    # 60 words a tenth of a second apart: the answer takes at least 6 s to stream, three report intervals.
    assert 60 * 0.1 >= 3 * PROGRESS_INTERVAL
    fake = FakeOpenAI(chunk_delay=0.1)
    kind = f"stream-{uid()}"
    watcher = Watcher(mesh, type=kind)
    try:
        with llm_agent(mesh, fake, tmp_path / "llm-stream.log", kind):
            prompt = " ".join(f"w{i:02}" for i in range(60))
            long = mesh.admin.submit(kind, {"prompt": prompt})
            broken = mesh.admin.submit(kind, {"prompt": "[cut=5] " + prompt}, max_retries=0)

            done = mesh.admin.wait_for(long["id"], timeout=DEADLINE)
            assert done["state"] == "completed", done
            assert done["result"] == {
                "answer": f"echo: {prompt}",
                "model": "tiny-fake",
                "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 9},
                "finish_reason": "stop",
            }
            shown = mcs_cli(mesh, "task", "events", long["id"], "--json")
            assert shown.returncode == 0, shown.stderr
            trail = json.loads(shown.stdout)
            reports = [e["detail"]["message"] for e in trail if e["kind"] == "progress"]
            assert len(reports) >= 2, trail
            sizes = [int(m.removeprefix("streaming: ").removesuffix(" chars")) for m in reports]
            assert sizes == sorted(sizes) and 0 < sizes[0] < sizes[-1] < len(done["result"]["answer"]), reports
            kinds = [e["kind"] for e in trail]
            assert kinds.index("claimed") < kinds.index("progress") and kinds[-1] == "completed"
            # The same reports went out live on GET /v1/events, while the task was still claimed.
            watcher.wait_for(lambda evs: "completed" in [e["kind"] for e in evs if e["task_id"] == long["id"]], "")
            live = [e for e in watcher.events if e["task_id"] == long["id"] and e["kind"] == "progress"]
            assert [e["detail"]["message"] for e in live] == reports
            assert {e["state"] for e in live} == {"claimed"}

            failed = mesh.admin.wait_for(broken["id"], timeout=DEADLINE)
            assert failed["state"] == "failed", failed
            answered = len("echo: [cut=5] w00 w01 w02 ")
            assert f"the model server's stream broke off after {answered} characters of the answer" in failed["error"]
            assert "RemoteProtocolError" in failed["error"]
    finally:
        fake.close()
    output = (tmp_path / "llm-stream.log").read_text()
    assert "Traceback" not in output and API_KEY not in output
    assert all(r["body"]["stream"] is True for r in fake.requests)


def test_no_stream_serves_a_model_server_that_cannot_stream(mesh: Mesh, tmp_path: Path):
    fake = FakeOpenAI()
    fake.streaming = "refuse"  # HTTP 400 to any stream request
    kind = f"plain-{uid()}"
    try:
        with llm_agent(mesh, fake, tmp_path / "llm-plain.log", kind, "--no-stream"):
            task = mesh.admin.submit(kind, {"prompt": "just answer"}, max_retries=0)
            done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
        assert done["state"] == "completed", done
        assert done["result"]["answer"] == "echo: just answer" and done["result"]["usage"]["total_tokens"] == 9
        assert [r["body"]["stream"] for r in fake.requests] == [False]
        assert "progress" not in event_kinds(mesh.admin.events(task["id"]))
    finally:
        fake.close()
