"""The multi-agent review end to end: a real `mcs up`, the five analyzer agents started by
`mcs review agents` (each its own `mcs agent run` process), `mcs review` on a fixture project with planted
problems, and the HTML report opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import review_attack

from .chromium import Chromium, chromium_binary
from .conftest import _proc_stat, alive, uid, wait_until

pytestmark = pytest.mark.acceptance

FIXTURE = Path(__file__).parents[1] / "fixtures" / "review_project"
TOOLS = ("bandit", "pyflakes", "pylint", "ruff", "vulture")

# What must reach consensus on the fixture, who must raise it, and how many independent reviewers that is:
# (file, title) -> (agents, consensus). ruff's F rules port pyflakes' and its S rules bandit's, so ruff and
# pyflakes (or bandit) on one problem count once.
CONSENSUS = {
    ("shop/orders.py", "Unused import: os"): (["pyflakes", "pylint", "ruff", "vulture"], 3),
    ("shop/orders.py", "Use of eval"): (["bandit", "pylint", "ruff"], 2),
    ("shop/orders.py", "Undefined name: shipping_fee"): (["pyflakes", "pylint", "ruff"], 2),
    ("shop/orders.py", "Bare except"): (["pylint", "ruff"], 2),
    ("shop/orders.py", "Unreachable code"): (["pylint", "vulture"], 2),
}
# Found by one tool only, or by two tools running the same rule: they stay single.
SINGLE = {
    ("shop/orders.py", "Unused function: _legacy_discount"): ["vulture"],
    ("shop/orders.py", "Unused argument 'order'"): ["pylint"],
    ("shop/admin.py", "Subprocess call with shell=True"): ["bandit", "ruff"],  # ruff S602 is bandit B602
}


def mcs(mesh, *args, timeout=180):
    env = {k: v for k, v in mesh.env.items()}
    return subprocess.run(
        [sys.executable, "-m", "mcs", *args, "--url", mesh.url],
        env=env,
        cwd=mesh.root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def children_of(pid):
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] == pid:
                found.append((int(entry.name), stat[2]))
    return found


@pytest.fixture(scope="module")
def analyzer_agents(mesh):
    """`mcs review agents` running against the mesh; stopped with SIGTERM (and checked) at teardown."""
    log_path = mesh.root / "review-agents.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcs", "review", "agents", "--url", mesh.url],
            env=dict(mesh.env),
            cwd=mesh.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def online():
        if proc.poll() is not None:
            raise AssertionError(f"`mcs review agents` exited {proc.returncode}:\n{log_path.read_text()}")
        agents = {a["name"]: a for a in mesh.admin.list_agents()}
        return all(agents.get(t, {}).get("status") == "online" for t in TOOLS)

    try:
        wait_until(online, timeout=90, what="the five analyzer agents to come online", interval=0.2)
        wait_until(lambda: "analyzer agents online" in log_path.read_text(), timeout=30, what="the ready line")
        workers = children_of(proc.pid)
        assert len(workers) == len(TOOLS), workers
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, log_path.read_text()
    assert not [pid for pid, start in workers if alive(pid, start)], "agent processes outlived the launcher"
    agents = {a["name"]: a["status"] for a in mesh.admin.list_agents()}
    wait_until(
        lambda: all(a["status"] == "offline" for a in mesh.admin.list_agents() if a["name"] in TOOLS),
        timeout=30,
        what=f"the analyzer agents to go offline ({agents})",
    )


@pytest.fixture(scope="module")
def review(mesh, analyzer_agents, tmp_path_factory):
    """`mcs review FIXTURE --out DIR`, run once for the module: (process result, out dir, review.json)."""
    out = tmp_path_factory.mktemp("review-out")
    done = mcs(mesh, "review", str(FIXTURE), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return done, out, json.loads((out / "review.json").read_text())


def test_the_planted_problems_reach_consensus_and_the_rest_stay_single(review):
    done, out, report = review
    findings = {(f["file"], f["title"]): f for f in report["findings"]}
    for key, (agents, consensus) in CONSENSUS.items():
        assert key in findings, f"{key} missing from {sorted(findings)}"
        assert findings[key]["agents"] == agents and findings[key]["consensus"] == consensus, findings[key]
    for key, agents in SINGLE.items():
        assert findings[key]["agents"] == agents and findings[key]["consensus"] == 1
    multi = {(f["file"], f["title"]) for f in report["findings"] if f["consensus"] >= 2}
    assert multi == set(CONSENSUS), multi ^ set(CONSENSUS)
    assert report["summary"]["consensus"] == len(CONSENSUS)
    # listed by severity, then consensus
    ranks = [
        (["critical", "recommendation", "observation"].index(f["severity"]), -f["consensus"])
        for f in report["findings"]
    ]
    assert ranks == sorted(ranks)
    assert [f["title"] for f in report["findings"][:2]] == ["Use of eval", "Undefined name: shipping_fee"]
    # The report shows the code around each finding: the eval line, marked.
    assert '<span class="hit"> 8      return eval(text)  # planted' in (out / "review.html").read_text()

    table = {a["agent"]: a for a in report["agents"]}
    assert sorted(table) == list(TOOLS) and all(a["status"] == "ok" for a in table.values())
    for name, row in table.items():
        raised = [f for f in report["findings"] if name in f["agents"]]
        assert row["findings"] == len(raised), name  # one finding per problem, per agent
    assert report["task_id"] and report["files"] == ["shop/__init__.py", "shop/admin.py", "shop/orders.py"]

    # What the terminal shows: progress on stderr; the table, the top findings and the paths on stdout.
    assert "5/5 reviewers done" in done.stderr and "packed 3 files" in done.stderr
    assert "[3] observation    shop/orders.py:4  Unused import: os  (pyflakes, pylint, ruff, vulture)" in done.stdout
    assert "raised by 2 or more independent reviewers" in done.stdout
    assert f"report: {out / 'review.html'}" in done.stdout


@pytest.mark.skipif(chromium_binary() is None and not os.environ.get("CI"), reason="chromium is not installed")
def test_the_html_report_in_chromium_shows_the_findings_and_filters_them(review):
    _, out, report = review
    total = len(report["findings"])
    critical = sum(1 for f in report["findings"] if f["severity"] == "critical")
    in_admin = sum(1 for f in report["findings"] if f["file"] == "shop/admin.py")
    with Chromium() as browser:
        page = browser.open((out / "review.html").as_uri())
        page.wait_for("document.body && document.body.dataset.ready === 'true'")

        visible = "Array.from(document.querySelectorAll('#findings tbody tr')).filter(r => !r.hidden)"
        titles = f"{visible}.map(r => r.querySelector('.title').textContent)"
        assert page.eval(titles) == [f["title"] for f in report["findings"]]
        assert page.eval("document.getElementById('shown').textContent") == f"{total} of {total}"
        agents_rows = page.eval(
            "Array.from(document.querySelectorAll('#agents tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        expected_rows = [
            [a["agent"], "ok", str(a["critical"]), str(a["recommendation"]), str(a["observation"]), str(a["findings"])]
            for a in report["agents"]
        ]
        assert agents_rows == expected_rows

        def choose(select_id, value):
            page.eval(
                f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)};"
                " s.dispatchEvent(new Event('change')); })()"
            )

        choose("f-severity", "critical")
        assert set(page.eval(f"{visible}.map(r => r.dataset.severity)")) == {"critical"}
        assert page.eval(f"{visible}.length") == critical
        assert page.eval("location.hash") == "#severity=critical"

        choose("f-severity", "")
        choose("f-file", "shop/admin.py")
        assert page.eval(f"{visible}.length") == in_admin
        choose("f-consensus", "3")
        assert sorted(page.eval(titles)) == []  # nothing in admin.py has three agents
        assert not page.eval("document.getElementById('empty').hidden")
        choose("f-file", "")
        assert sorted(page.eval(titles)) == sorted(f["title"] for f in report["findings"] if f["consensus"] >= 3)

        # Sorting: a click on Location sorts by file, a second click reverses it.
        choose("f-consensus", "1")
        page.eval("document.querySelector('th[data-sort=file]').click()")
        files = page.eval(f"{visible}.map(r => r.dataset.file)")
        assert files == sorted(files) and len(files) == total
        page.eval("document.querySelector('th[data-sort=file]').click()")
        assert page.eval(f"{visible}.map(r => r.dataset.file)") == sorted(files, reverse=True)
        assert page.eval("document.querySelector('th[data-sort=file]').getAttribute('aria-sort')") == "descending"

        # A view in the URL fragment opens as it was left.
        shared = browser.open((out / "review.html").as_uri() + "#severity=recommendation&consensus=2")
        shared.wait_for("document.body && document.body.dataset.ready === 'true'")
        rows = shared.eval(f"{visible}.map(r => [r.dataset.severity, Number(r.dataset.consensus)])")
        expected = [["recommendation", f["consensus"]] for f in report["findings"]
                    if f["severity"] == "recommendation" and f["consensus"] >= 2]  # fmt: skip
        assert rows == expected and rows
        assert shared.eval("document.getElementById('f-severity').value") == "recommendation"


def test_review_without_a_capable_agent_online_fails_clearly(mesh, analyzer_agents):
    done = mcs(mesh, "review", str(FIXTURE), "--capability", f"nobody-{uid()}", "--out", str(mesh.root / "none"))
    assert done.returncode == 1
    assert "no online agent has the capability" in done.stderr and "mcs review agents" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (mesh.root / "none" / "review.html").exists()


def test_code_too_large_for_one_request_fails_before_submitting(mesh, tmp_path):
    (tmp_path / "big.py").write_text("DATA = '" + "x" * 200_000 + "'\n")
    done = mcs(mesh, "review", str(tmp_path), "--max-bytes", "65536")
    assert done.returncode == 1
    assert "over the server's request limit of 64 KiB (MCS_MAX_BODY_BYTES)" in done.stderr
    assert "Traceback" not in done.stderr
    tasks = mesh.admin.list_tasks(type="mcs-review")["tasks"]
    assert all(t["payload"] is None or "big.py" not in json.dumps(t["payload"]) for t in tasks)


class FakeReviewerModel:
    """An OpenAI-compatible chat server on loopback standing in for a model: it reads the numbered code
    in the prompt and reports each `eval(` and bare `except:` the way a model would, wordier than the
    analyzers and inside a ```json block."""

    def __init__(self):
        self.prompts = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                outer.prompts.append(prompt)
                findings, path = [], None
                for line in prompt.splitlines():
                    if line.startswith("=== ") and line.endswith(" ==="):
                        path = line[4:-4]
                    elif (m := re.match(r"^\s*(\d+)\| (.*)$", line)) and path:
                        number, code = int(m.group(1)), m.group(2)
                        if "eval(" in code:
                            findings.append((path, number, "critical", "Use of eval on untrusted input"))
                        if code.strip().startswith("except:"):
                            findings.append((path, number, "recommendation", "Bare except hides every error"))
                answer = (
                    "Here is what I found:\n```json\n"
                    + json.dumps(
                        {
                            "findings": [
                                {"file": p, "line": n, "severity": s, "title": t, "detail": "seen by the model"}
                                for p, n, s, t in findings
                            ]
                        }  # fmt: skip
                    )
                    + "\n```"
                )
                reply = {
                    "id": "chat-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                    ],  # fmt: skip
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                raw = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_llm_reviewer_joins_the_same_way(mesh, analyzer_agents, review, tmp_path):
    """`mcs agent llm` with the mcs-review capability: its text answer's findings merge with the analyzers'."""
    model = FakeReviewerModel()
    name = f"llm-{uid()}"
    creds = mesh.admin.create_agent(name, ["mcs-review"])
    env = dict(mesh.env) | {"MCS_AGENT_ID": name, "MCS_AGENT_SECRET": creds["secret"],
                            "MCS_WEBHOOK_SECRET": creds["webhook_secret"]}  # fmt: skip
    env.pop("MCS_ADMIN_TOKEN")
    log_path = tmp_path / "llm.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcs", "agent", "llm", "--base-url", model.url, "--model", "fake-reviewer",
             "--capability", "mcs-review", "--url", mesh.url],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: mesh.admin.get_agent(name)["status"] == "online", timeout=60, what="the LLM agent")
        done = mcs(mesh, "review", str(FIXTURE), "--out", str(tmp_path))
        assert done.returncode == 0, done.stderr + log_path.read_text()
        report = json.loads((tmp_path / "review.json").read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        model.close()
    assert code == 0, log_path.read_text()
    # The model saw the code, with line numbers, in its prompt.
    assert len(model.prompts) == 1 and "=== shop/orders.py ===" in model.prompts[0]
    assert "    8|     return eval(text)" in model.prompts[0]
    findings = {(f["file"], f["title"]): f for f in report["findings"]}
    eval_ = findings[("shop/orders.py", "Use of eval")]
    assert eval_["agents"] == sorted(["bandit", "pylint", "ruff", name]) and eval_["consensus"] == 3
    bare = findings[("shop/orders.py", "Bare except")]
    assert bare["agents"] == sorted(["pylint", "ruff", name]) and bare["consensus"] == 3
    llm_row = next(a for a in report["agents"] if a["agent"] == name)
    assert (llm_row["status"], llm_row["critical"], llm_row["recommendation"]) == ("ok", 1, 1)
    assert len(report["findings"]) == len(review[2]["findings"])  # nothing new: it merged into what was there


def test_the_analyzer_agents_run_none_of_a_payload_built_to_make_them(mesh, analyzer_agents, tmp_path):
    """The attack payload of tests/review_attack.py, fanned out to the five real agents (whose environment
    holds their agent and webhook secrets): each reviews it, and none of the planted code runs."""
    markers, outside = tmp_path / "markers", tmp_path / "outside"
    markers.mkdir()
    outside.mkdir()
    payload = review_attack.payload(markers, outside)

    def reviewers():  # an agent of an earlier test may still count as online for a moment
        agents = mesh.admin.list_agents()
        return {a["name"] for a in agents if a["status"] == "online" and "mcs-review" in a["capabilities"]}

    wait_until(lambda: reviewers() == set(TOOLS), timeout=60, what="the analyzers alone to have mcs-review online")
    parent = mesh.admin.submit("mcs-review", payload, capabilities=["mcs-review"], route="all", aggregate="consensus")
    try:
        done = mesh.admin.wait_for(parent["id"], timeout=100)
    finally:
        children = mesh.admin.list_tasks(parent=parent["id"])["tasks"]
        print([(c["assigned_to"], c["state"], c["attempts"], c["error"]) for c in children])
    assert sorted(c["assigned_to"] for c in children) == sorted(TOOLS)
    assert [(c["assigned_to"], c["state"], c["error"]) for c in children if c["state"] != "completed"] == []
    assert done["state"] == "completed"
    assert sorted(p.name for p in markers.iterdir()) == []
    findings = {(f["file"], f["title"]): f for f in done["result"]["findings"]}
    assert findings[("app.py", "Use of eval")]["agents"] == ["bandit", "pylint", "ruff"]


def test_a_payload_with_a_path_that_names_no_file_fails_for_good_with_the_reason(mesh, analyzer_agents):
    """`.` used to crash unpacking with an IndexError, which the agent retried as if it might pass."""
    task = mesh.admin.submit(
        "mcs-review", {"files": [{"path": "./", "content": "x = 1\n"}]}, capabilities=["mcs-review"], route="ruff",
        max_retries=3,
    )  # fmt: skip
    done = mesh.admin.wait_for(task["id"], timeout=120)
    assert (done["state"], done["attempts"]) == ("failed", 1)
    assert "not a review payload: bad file path './'" in json.dumps(done["error"])
