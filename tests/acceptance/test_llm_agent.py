"""`mcs agent llm` on the real `mcs up`, answering through a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI

from .conftest import Mesh, event_kinds, uid, wait_until

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds
API_KEY = "sk-never-log-me-" + uid()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def test_llm_agent_answers_tasks_and_turns_model_errors_into_clear_failures(mesh: Mesh, fake, tmp_path: Path):
    kind = f"ask-{uid()}"
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
    fake.materials["notes.txt"] = "the meeting is on Tuesday"
    log_path = tmp_path / "llm-agent.log"
    args = ["agent", "llm", "--base-url", fake.url, "--model", "tiny", "--capability", kind, "--timeout", "1"]
    args += ["--allow-fetch", fake.address]  # the material is on loopback, which fetches refuse by default
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mcs", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: mesh.admin.get_agent(name)["status"] == "online" or proc.poll() is not None,
            timeout=DEADLINE,
            what="the LLM agent to register",
        )
        assert proc.poll() is None, log_path.read_text()

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
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    output = log_path.read_text()
    assert code == 0, output
    assert API_KEY not in output
    # Each failure is one line in the log: expected trouble with the model server is no traceback.
    assert "failed for good: PermanentError: the model server answered HTTP 401" in output
    assert "failed: ModelUnavailable: the model server answered HTTP 503" in output
    assert "Traceback" not in output
