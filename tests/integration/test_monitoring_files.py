"""The monitoring files as shipped: promtool accepts the Prometheus config and rules, the alert rules'
unit tests pass, and the Grafana provisioning hangs together (datasource uid, dashboard folder)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: install Debian's prometheus package (.ci/run does)"
)


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules():
    out = promtool("check", "config", "prometheus.yml", cwd=MONITORING / "prometheus")
    assert "SUCCESS" in out and "10 rules found" in out


@needs_promtool
def test_every_alert_rule_fires_and_resolves_as_its_unit_tests_say():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=MONITORING / "prometheus")
    rules = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "prometheus" / "alerts_test.yml").read_text()))
    assert {r["alert"] for r in rules} == tested, "every alert needs a unit test in alerts_test.yml"


def test_prometheus_scrapes_the_four_processes_by_compose_service_name():
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "15s"
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {"api:8080", "dispatcher:9101", "watchdog:9102", "notifier:9103"}


@needs_promtool
def test_the_postgres_profile_scrapes_every_replica_under_the_same_labels():
    out = promtool("check", "config", "prometheus-postgres.yml", cwd=MONITORING / "prometheus")
    assert "SUCCESS" in out and "10 rules found" in out  # the same alerts
    sqlite = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus-postgres.yml").read_text())
    assert config["global"] == sqlite["global"] and config["rule_files"] == sqlite["rule_files"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mcs"  # the alerts and the dashboard select job="mcs"
    # One A lookup per compose service (one record per running replica), on the port prometheus.yml uses.
    found = {f"{sd['names'][0]}:{sd['port']}" for sd in job["dns_sd_configs"] if sd["type"] == "A"}
    ports = {t for group in sqlite["scrape_configs"][0]["static_configs"] for t in group["targets"]}
    assert found == {t.replace(":", "-pg:") for t in ports}
    (relabel,) = job["relabel_configs"]  # api-pg -> process="api", as the SQLite targets are labelled
    assert relabel["source_labels"] == ["__meta_dns_name"] and relabel["target_label"] == "process"
    assert re.fullmatch(relabel["regex"], "api-pg").expand(relabel["replacement"].replace("$1", r"\1")) == "api"


def _dashboards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))]


def test_grafana_datasource_and_dashboards_are_provisioned_consistently():
    sources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/mcs.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"

    dashboards = _dashboards()
    assert dashboards, "no dashboard JSON in monitoring/grafana/dashboards"
    for dash in dashboards:
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"]), "panel ids must be unique"
        for panel in panels:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert panel["targets"] and panel.get("description"), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"] and target["expr"].strip(), panel["title"]


def test_the_dashboard_has_the_panels_users_asked_for():
    titles = " | ".join(p["title"].lower() for d in _dashboards() for p in d["panels"])
    for wanted in (
        "throughput",
        "agent availability",
        "last seen",
        "queue depth by priority",
        "claim expirations and retries",
        "memory keys by namespace",
        "dispatch latency",
        "deliveries",
        "approvals waiting",
        "workflows by state",
        "blocked steps",
        "schedule ticks",
    ):
        assert wanted in titles, wanted
