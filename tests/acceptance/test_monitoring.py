"""Observability against a real Prometheus (Debian's package) scraping a real `mcs up`.

A workload with completions, retries, a permanent failure, an expired claim and an agent that goes
offline; then every PromQL expression in the Grafana dashboard and in alerts.yml is run through
Prometheus's HTTP API and must return data, the task-failed and agent-offline alerts must fire, and
`promtool check metrics` must accept each process's /metrics. The same failure reaches a fake Telegram
Bot API on loopback (MCS_TELEGRAM_API), through a 429 whose retry_after is honoured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.conftest import FakeAgent, Mesh, Receiver, free_ports, running_mesh, uid, wait_until
from tests.fakes import FakeTelegram, too_many_requests

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs Debian's prometheus package (prometheus and promtool); .ci/run installs it",
)

BOT_TOKEN = "4242:monitoring-test-token"
CHAT_ID = "-1001234"
RATE_WINDOW = "5m"  # stands in for Grafana's $__rate_interval: covers the whole test run
EXPECTED_FIRING = {"McsTaskFailed", "McsAgentOffline"}


class Prometheus:
    """`prometheus` on loopback with a temp config scraping the mesh every second, and our alert rules
    with their `for:` hold times cut to a second (the expressions are the shipped ones)."""

    def __init__(self, root: Path, mesh: Mesh) -> None:
        root.mkdir(parents=True, exist_ok=True)
        rules = re.sub(r"(?m)^(\s+for:)\s*\S+", r"\1 1s", (MONITORING / "prometheus" / "alerts.yml").read_text())
        (root / "alerts.yml").write_text(rules)
        targets = [{"targets": [f"127.0.0.1:{port}"], "labels": {"process": name}} for name, port in mesh.ports.items()]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "mcs", "static_configs": targets}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                return self.http.get("/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, what="prometheus to be ready", interval=0.2)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        return [r for r in answer["data"]["result"] if r["value"][1] not in ("NaN",)]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        alerts = self.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The mesh, Prometheus and the fake Telegram after the workload has run."""
    root = tmp_path_factory.mktemp("monitoring")
    telegram = FakeTelegram(script=[too_many_requests(retry_after=1)])
    hook = Receiver()
    agents: list[FakeAgent] = []
    prometheus: Prometheus | None = None
    try:
        with running_mesh(
            root / "mesh",
            MCS_TELEGRAM_BOT_TOKEN=BOT_TOKEN,
            MCS_TELEGRAM_CHAT_ID=CHAT_ID,
            MCS_TELEGRAM_API=telegram.url,
            MCS_ALERT_WEBHOOK_URL=hook.url,
        ) as mesh:
            prometheus = Prometheus(root / "prometheus", mesh)
            # Prometheus first sees every counter at its starting value, so rates have a baseline.
            wait_until(lambda: prometheus.value('sum(up{job="mcs"})') == 4, timeout=30, what="4 targets up")
            tag = uid()

            def agent(caps: list[str], **kw: Any) -> FakeAgent:
                made = FakeAgent(mesh=mesh, name=f"{caps[0]}-{tag}", capabilities=caps, **kw)
                agents.append(made)
                return made

            worker = agent(["mon-echo"])
            worker.register()
            flaky = agent(["mon-flaky"], mode="fail", error="<b>disk</b> full & more")
            flaky.register()
            holder = agent(["mon-hold"], mode="hold")
            holder.register()
            ghost = agent(["mon-ghost"])
            ghost.register(ttl=1)  # and never again: the watchdog marks it offline

            done = [
                mesh.admin.submit("mon-echo", {"n": i}, priority=p)
                for i, p in enumerate(["urgent", "normal", "low"] * 4)
            ]
            retried = mesh.admin.submit("mon-flaky", {"secret": "never in an alert"}, max_retries=1)
            held = mesh.admin.submit("mon-hold", {}, claim_ttl=1, max_retries=0)
            # A two-step workflow that completes, and one held at an approval gate (its next step blocked).
            flow = mesh.admin.submit_workflow(
                "mon-flow", [{"id": "a", "type": "mon-echo"}, {"id": "b", "type": "mon-echo", "depends_on": ["a"]}]
            )
            gated = [{"id": "go", "type": "approval"}, {"id": "ship", "type": "mon-echo", "depends_on": ["go"]}]
            mesh.admin.submit_workflow("mon-gate", gated)
            mesh.admin.mem_put("mesh", f"mon/{tag}/a", 1)
            mesh.admin.mem_put("mesh", f"mon/{tag}/b", 2)
            for task in done:
                assert mesh.admin.wait_for(task["id"], timeout=30)["state"] == "completed"
            assert mesh.admin.wait_for_workflow(flow["id"], timeout=30)["state"] == "completed"
            failed = mesh.admin.wait_for(retried["id"], timeout=30)
            assert failed["state"] == "failed" and failed["attempts"] == 2
            expired = mesh.admin.wait_for(held["id"], timeout=30)
            assert expired["state"] == "failed" and expired["error"] == "lease expired"
            wait_until(
                lambda: mesh.admin.get_agent(ghost.name)["status"] == "offline", timeout=30, what="ghost offline"
            )
            # Scrapes after the workload: the last state of every counter is in Prometheus.
            wait_until(
                lambda: (
                    prometheus.value("sum(mcs_tasks_completed_total)") == len(done) + 2
                    and prometheus.value('mcs_workflows{state="completed"}') == 1
                    and prometheus.value(f'mcs_agent_online{{agent="{ghost.name}"}}') == 0
                    and (prometheus.value("sum(mcs_claims_expired_total)") or 0) >= 1
                ),
                timeout=30,
                what="Prometheus to scrape the workload's results",
                interval=0.5,
            )
            yield {
                "mesh": mesh,
                "prometheus": prometheus,
                "telegram": telegram,
                "hook": hook,
                "ghost": ghost.name,
                "failed": [failed, expired],
                "completed": len(done) + 2,  # the echoes and the workflow's two steps
                "urgent": len(done) / 3,
            }
    finally:
        for a in agents:
            a.close()
        if prometheus is not None:
            prometheus.close()
        telegram.close()
        hook.close()


def _dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                exprs.append((panel["title"], target["expr"].replace("$__rate_interval", RATE_WINDOW)))
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_dashboard_expression_returns_data(observed):
    prometheus = observed["prometheus"]
    empty = [f"{title}: {expr}" for title, expr in _dashboard_exprs() if not prometheus.query(expr)]
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)


def test_the_numbers_on_the_dashboard_are_the_workload(observed):
    p = observed["prometheus"]
    assert p.value("sum(mcs_tasks_completed_total)") == observed["completed"]
    assert p.value('sum(mcs_tasks_completed_total{priority="urgent"})') == observed["urgent"]
    assert p.value("sum(mcs_tasks_failed_total)") == 2
    assert p.value("sum(mcs_tasks_retried_total)") == 1  # the flaky task's first failure
    assert p.value("sum(mcs_claims_expired_total)") == 1
    assert p.value("sum(mcs_tasks_failed_recently)") == 2
    assert p.value(f'mcs_agent_online{{agent="{observed["ghost"]}"}}') == 0
    assert p.value('mcs_memory_keys{namespace="mesh"}') >= 2
    assert p.value('sum(mcs_queue_depth{state="queued"})') == 0
    assert p.value('sum by (kind) (mcs_webhook_deliveries_total{kind="webhook", outcome="delivered"})') >= 14
    assert p.value('sum(up{job="mcs"})') == 4
    workflows = {r["metric"]["state"]: float(r["value"][1]) for r in p.query("sum by (state) (mcs_workflows)")}
    assert workflows == {"running": 1, "completed": 1, "failed": 0, "canceled": 0}
    assert p.value('sum(mcs_queue_depth{state="blocked"})') == 1  # the step behind the approval gate
    assert p.value("sum(mcs_approvals_waiting)") == 1
    assert p.value('sum(mcs_workflows_total{event="completed"})') == 1
    ticks = p.query("sum by (outcome) (rate(mcs_schedule_ticks_total[5m]))")
    assert {r["metric"]["outcome"] for r in ticks} == {"fired", "skipped"}  # on the panel at 0 before any tick


def test_every_alert_expression_returns_data_and_the_expected_alerts_fire(observed):
    prometheus = observed["prometheus"]
    for rule in _alert_rules():
        expr = rule["expr"].strip()
        if rule["alert"] in EXPECTED_FIRING:
            assert prometheus.query(expr), f"{rule['alert']} should hold after the workload: {expr}"
        else:  # quiet on a healthy mesh: what it compares against must still exist
            selector = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$", "", expr)
            assert selector != expr and prometheus.query(selector), f"{rule['alert']}: no data for {selector}"
            assert not prometheus.query(expr), f"{rule['alert']} holds on a healthy mesh: {expr}"
    wait_until(
        lambda: EXPECTED_FIRING <= prometheus.firing(),
        timeout=30,
        what=f"alerts {sorted(EXPECTED_FIRING)} to fire",
        interval=0.5,
    )


def test_promtool_accepts_every_process_metrics(observed):
    mesh = observed["mesh"]
    for name, port in mesh.ports.items():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "mcs_" in text, name
        done = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True)
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_the_failure_reached_telegram_after_its_429_and_the_webhook(observed):
    telegram, hook = observed["telegram"], observed["hook"]
    failed_ids = {t["id"] for t in observed["failed"]}
    wait_until(
        lambda: sum(1 for m in telegram.messages() if any(i in m["text"] for i in failed_ids)) >= 2,
        timeout=30,
        what="both task.failed alerts on Telegram",
    )
    tokens = {token for _, token, _ in telegram.calls}
    assert tokens == {BOT_TOKEN}
    # The first call got the 429; the same message went again only after the 1 s Telegram asked for.
    limited_at, _, limited = telegram.calls[0]
    again = [at for at, _, body in telegram.calls[1:] if body["text"] == limited["text"]]
    assert again and again[0] - limited_at >= 1.0, "the 429's retry_after of 1 s was not honoured"
    flaky_alert = next(m for m in telegram.messages() if observed["failed"][0]["id"] in m["text"])
    assert flaky_alert["chat_id"] == CHAT_ID and flaky_alert["parse_mode"] == "HTML"
    assert "&lt;b&gt;disk&lt;/b&gt; full &amp; more" in flaky_alert["text"]
    assert "never in an alert" not in json.dumps(telegram.messages())
    wait_until(
        lambda: any("approval waiting" in m["text"] for m in telegram.messages()),
        timeout=30,
        what="the approval.waiting alert on Telegram",
    )
    gate = [m for m in telegram.messages() if "approval waiting" in m["text"]]
    assert "workflow mon-gate" in gate[0]["text"] and "<code>go</code>" in gate[0]["text"]
    offline = [m for m in telegram.messages() if observed["ghost"] in m["text"]]
    assert offline and "offline" in offline[0]["text"]
    assert {b["type"] for b in hook.bodies} >= {"task.failed", "agent.offline"}
    mesh = observed["mesh"]
    assert BOT_TOKEN not in mesh.log()
    for port in mesh.ports.values():
        assert BOT_TOKEN not in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
