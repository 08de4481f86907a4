"""The README's workflow examples, run as a user runs them on the real `mcs up`: the deployment pipeline
(examples/deploy: build, a fan-out test stage, an approval, a keyed deploy, verify) with its agents as
`mcs agent run` processes doing real local work; the research fan-out (examples/research) with three
researchers and `mcs agent llm` synthesising against the fake OpenAI server; and examples/nightly.yaml
added as a schedule that fires."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcs.agent import PermanentError, Task
from tests.fake_openai import FakeOpenAI

from .conftest import wait_until

pytestmark = pytest.mark.acceptance

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEPLOY = EXAMPLES / "deploy"
RESEARCH = EXAMPLES / "research"
DEADLINE = 60.0


def say(message: str) -> None:
    print(f"[examples] {message}", flush=True)


@pytest.fixture
def user(mesh: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`user("mcs", "workflow", ...)` runs a CLI command as the admin in tmp_path; `user.start(...)` starts
    a long-running one (an agent) in the background, stopped (SIGTERM) at teardown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "PYTHONUNBUFFERED": "1", "DEPLOY_WORK": str(tmp_path / "work")}
    admin_env = env | {"MCS_ADMIN_TOKEN": mesh.admin_token}
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mcs", *argv[1:]] if argv[0] == "mcs" else list(argv)
        done = subprocess.run(cmd, cwd=tmp_path, env=admin_env, capture_output=True, text=True, timeout=90)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}: {done.stderr}"
        return done

    def start(*argv: str, extra: dict[str, str] | None = None) -> None:
        log = open(tmp_path / f"agent-{len(started)}.log", "wb")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcs", *argv[1:]], cwd=tmp_path, env=env | (extra or {}), stdout=log, stderr=log
        )
        started.append((proc, log))

    run.start = start  # type: ignore[attr-defined]
    run.cwd = tmp_path  # type: ignore[attr-defined]
    yield run
    for proc, _ in started:
        proc.terminate()
    for proc, log in started:
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def online(user: Any, names: list[str]) -> None:
    def all_online() -> bool:
        agents = json.loads(user("mcs", "agent", "list", "--json").stdout)
        return {a["name"] for a in agents if a["status"] == "online"} >= set(names)

    wait_until(all_online, timeout=DEADLINE, what=f"agents {names} online", interval=0.3)


def waiting_approval(user: Any) -> str:
    """README: `mcs task list --state waiting` lists the approval (the first column is its id)."""

    def found() -> str | None:
        rows = json.loads(user("mcs", "task", "list", "--state", "waiting", "--type", "approval", "--json").stdout)
        return rows["tasks"][0]["id"] if rows["tasks"] else None

    gate = wait_until(found, timeout=DEADLINE, what="the approval to wait", interval=0.3)
    assert gate in user("mcs", "task", "list", "--state", "waiting", "--type", "approval").stdout
    return gate


def workflow(user: Any, workflow_id: str) -> dict[str, Any]:
    return json.loads(user("mcs", "workflow", "show", workflow_id, "--json").stdout)


def test_the_deployment_example(mesh, user):
    cwd: Path = user.cwd
    # README: one agent account and one `mcs agent run` per stage (two testers: the test stage fans out)
    agents = {
        "builder": ("build", "build"),
        "tester-1": ("test", "test"),
        "tester-2": ("test", "test"),
        "deployer": ("deploy", "deploy"),
        "verifier": ("verify", "verify"),
    }
    for name, (capability, handler) in agents.items():
        user("mcs", "admin", "agent", "create", name, "--capability", capability, "--out", f"{name}.env")
        user.start(
            "mcs", "agent", "run", f"{DEPLOY / 'agents.py'}:{handler}", "--capability", capability,
            "--env-file", f"{name}.env",
        )  # fmt: skip
    online(user, list(agents))
    say("five deployment agents online")

    # Happy path. README: mcs workflow submit examples/deploy/deploy.yaml
    wf_id = user("mcs", "workflow", "submit", str(DEPLOY / "deploy.yaml")).stdout.strip()
    gate = waiting_approval(user)
    shown = user("mcs", "workflow", "show", wf_id).stdout
    assert "approve" in shown and "waiting" in shown, shown
    state = workflow(user, wf_id)
    assert state["steps"]["approve"]["id"] == gate
    assert {s: state["steps"][s]["state"] for s in ("build", "test", "deploy")} == {
        "build": "completed", "test": "completed", "deploy": "blocked",
    }  # fmt: skip
    assert not (cwd / "deployments").exists()  # nothing shipped before the approval
    alert = wait_until(
        lambda: [b for b in mesh.alerts.bodies if b.get("data", {}).get("task_id") == gate],
        timeout=DEADLINE,
        what="the approval alert",
    )[0]
    assert f"mcs task approve {gate}" in alert["text"]  # README: the alert names the gate too
    say(f"workflow {wf_id} built and tested, waiting for approval {gate}")
    user("mcs", "task", "approve", gate, "--note", "ship it")
    done = wait_until(
        lambda: (w := workflow(user, wf_id))["state"] != "running" and w, timeout=DEADLINE, what="the deployment"
    )
    assert done["state"] == "completed", user("mcs", "workflow", "show", wf_id).stdout
    steps = done["steps"]
    children = steps["test"]["result"]["children"]
    assert len(children) == 2 and all(c["result"]["passed"] for c in children)  # both testers ran the tests
    assert steps["deploy"]["concurrency_key"] == "deploy-staging"
    site = cwd / "deployments" / "staging" / "site"
    assert steps["verify"]["result"] == {
        "env": "staging", "imported_from": str(site / "greet" / "__init__.py"), "version": "1.0.0",
        "says": "hello, mesh",
    }  # fmt: skip
    shipped = json.loads((cwd / "deployments" / "staging" / "DEPLOYED.json").read_text())
    assert shipped["approved"] == {"approved": True, "by": "admin", "note": "ship it"}
    say("approved, deployed to deployments/staging and verified")

    # A failing test stage: a broken copy of the package fails both testers; nothing after runs.
    broken = cwd / "broken-app"
    shutil.copytree(DEPLOY / "app", broken)
    init = broken / "greet" / "__init__.py"
    init.write_text(init.read_text().replace('"1.0.0"', '"1.0.1"').replace("hello, {name}", "bye, {name}"))
    failed = user(
        "mcs", "workflow", "submit", str(DEPLOY / "deploy.yaml"), "--input", f"source={broken}", "--wait",
        "--timeout", str(DEADLINE), check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and "ended failed" in failed.stderr, failed.stderr
    bad_id = failed.stdout.split()[0]
    steps = workflow(user, bad_id)["steps"]
    assert steps["test"]["state"] == "failed"
    assert all("tests failed" in c["error"] for c in steps["test"]["result"]["children"])
    assert {s: steps[s]["state"] for s in ("approve", "deploy", "verify")} == dict.fromkeys(
        ("approve", "deploy", "verify"), "canceled"
    )
    assert mesh.admin.events(steps["deploy"]["id"])[-1]["kind"] == "canceled"
    assert "claimed" not in [e["kind"] for e in mesh.admin.events(steps["deploy"]["id"])]  # deploy never ran
    assert json.loads((cwd / "deployments" / "staging" / "DEPLOYED.json").read_text())["version"] == "1.0.0"
    say(f"broken package: workflow {bad_id} failed at test, deploy never ran")

    # A denied approval fails the workflow; `mcs task retry` on the gate asks again, and it resumes.
    again = user("mcs", "workflow", "submit", str(DEPLOY / "deploy.yaml")).stdout.strip()
    gate = waiting_approval(user)
    user("mcs", "task", "deny", gate, "--reason", "not on a Friday")
    denied = wait_until(
        lambda: (w := workflow(user, again))["state"] != "running" and w, timeout=DEADLINE, what="the denial"
    )
    assert denied["state"] == "failed"
    assert denied["steps"]["approve"]["error"] and "not on a Friday" in denied["steps"]["approve"]["error"]
    assert {denied["steps"][s]["state"] for s in ("deploy", "verify")} == {"canceled"}
    say(f"denied: workflow {again} failed; retrying the gate")
    user("mcs", "task", "retry", gate)
    assert workflow(user, again)["state"] == "running"
    assert waiting_approval(user) == gate
    user("mcs", "task", "approve", gate)
    resumed = wait_until(
        lambda: (w := workflow(user, again))["state"] != "running" and w, timeout=DEADLINE, what="the resumed run"
    )
    assert resumed["state"] == "completed", user("mcs", "workflow", "show", again).stdout
    assert resumed["steps"]["verify"]["result"]["says"] == "hello, mesh"
    say(f"retried gate approved: workflow {again} completed")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()


def test_the_research_example(mesh, user, fake):
    for corpus in ("sqlite", "queues", "ops"):  # README: each researcher is named after its corpus
        user("mcs", "admin", "agent", "create", corpus, "--capability", "research", "--out", f"{corpus}.env")
        user.start(
            "mcs", "agent", "run", f"{RESEARCH / 'researcher.py'}:search", "--capability", "research",
            "--env-file", f"{corpus}.env",
        )  # fmt: skip
    user("mcs", "admin", "agent", "create", "writer", "--capability", "ask", "--out", "writer.env")
    user.start(
        "mcs", "agent", "llm", "--base-url", fake.url, "--model", "tiny", "--capability", "ask",
        "--env-file", "writer.env",
    )  # fmt: skip
    online(user, ["sqlite", "queues", "ops", "writer"])
    say("three researchers and the writer online")
    question = "Which SQLite pragmas matter for a queue?"
    done = user(
        "mcs", "workflow", "submit", str(RESEARCH / "research.yaml"), "--input", f"question={question}",
        "--wait", "--timeout", str(DEADLINE),
    )  # fmt: skip
    assert "completed" in done.stdout.splitlines()[0], done.stdout
    wf = workflow(user, done.stdout.split()[0])
    found = {c["agent"]: c["result"] for c in wf["steps"]["search"]["result"]["children"]}
    assert sorted(found) == ["ops", "queues", "sqlite"]
    assert all(r["question"] == question and r["findings"] for r in found.values())
    prompt = fake.requests[-1]["body"]["messages"][-1]["content"]
    assert prompt.startswith("Answer the researchers' question")
    for agent, result in found.items():  # every researcher's findings reached the model
        assert f"--- from {agent} ---" in prompt
        for finding in result["findings"]:
            assert finding["source"] in prompt and finding["passage"][:60] in prompt
    assert wf["steps"]["synthesise"]["result"]["answer"].startswith("echo: Answer the researchers'")
    say("synthesis prompt holds all three researchers' findings")


def test_the_nightly_schedule_file_is_accepted_and_fires(mesh, user):
    # README: mcs schedule add nightly-review --cron '0 3 * * *' --workflow-file examples/nightly.yaml
    added = user(
        "mcs", "schedule", "add", "nightly-review", "--cron", "0 3 * * *", "--workflow-file",
        str(EXAMPLES / "nightly.yaml"), "--json",
    )  # fmt: skip
    assert "T03:00:00" in json.loads(added.stdout)["next_run_at"]
    user("mcs", "schedule", "delete", "nightly-review")
    # the same file every two seconds, to see it fire
    user(
        "mcs", "schedule", "add", "nightly-review", "--cron", "* * * * * */2", "--workflow-file",
        str(EXAMPLES / "nightly.yaml"),
    )  # fmt: skip

    def fired() -> list[dict[str, Any]]:
        listed = json.loads(user("mcs", "workflow", "list", "--json").stdout)["workflows"]
        return [w for w in listed if w["name"] == "nightly-review"]

    runs = wait_until(fired, timeout=DEADLINE, what="the schedule to submit the review workflow", interval=0.3)
    user("mcs", "schedule", "pause", "nightly-review")
    review = runs[-1]["steps"]["review"]
    assert (review["type"], review["route"], review["aggregate"]) == ("mcs-review", "all", "consensus")
    assert review["payload"]["files"][0]["path"] == "greet/__init__.py"
    events = mesh.admin.workflow_events(runs[-1]["id"])
    assert "nightly-review" in json.dumps(events[0])
    say(f"nightly-review fired: workflow {runs[-1]['id']}")


def test_deploy_refuses_when_any_tester_failed(tmp_path, monkeypatch):
    """A fanout step completes when any child did: the deploy agent checks that every tester passed."""
    spec = importlib.util.spec_from_file_location("deploy_agents", DEPLOY / "agents.py")
    assert spec is not None and spec.loader is not None
    agents = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agents)
    monkeypatch.setenv("DEPLOY_ROOT", str(tmp_path / "deployments"))
    tested = {"children": [{"agent": "tester-1", "state": "completed"}, {"agent": "tester-2", "state": "failed"}]}
    task = Task(id="t", type="deploy", payload=None, attempts=1, priority="normal",
                inputs={"build": {"env": "staging"}, "test": tested, "approve": {"approved": True}})  # fmt: skip
    with pytest.raises(PermanentError, match="not every tester passed: tester-2"):
        agents.deploy(task)
    assert not (tmp_path / "deployments").exists()
