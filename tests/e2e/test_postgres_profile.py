"""compose.yaml's `postgres` profile, the parts that need no PostgreSQL engine in MCS: the compose model
with and without the profile, the PostgreSQL image in a compose project of its own (health, the `mcs`
role over the compose network, data across a restart, a fast stop), and the HAProxy image and the
profile's Prometheus config next to two real api replicas (on SQLite: neither can tell, and both find them
by the `api-pg` DNS name as in the profile). The replicated kill -9 test (docs/design/engines.md 6.2)
comes with the engine."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import PROMETHEUS_IMAGE, REPO, UP_TIMEOUT, Images, docker, say, wait_until

SQLITE_SERVICES = ["api", "dispatcher", "watchdog", "notifier"]
PG_SERVICES = ["api-pg", "dispatcher-pg", "watchdog-pg", "notifier-pg"]
# compose.yaml before the profile (branch seam0): the default services must come out of `docker compose
# config` as they did then. If you change them on purpose, move this to your commit.
BEFORE_PROFILE = "bf96131df4302a0bf04b75a8cb91b233ec93da76"


def compose_config(tmp_path: Path, compose_file: Path, *args: str, **settings: str) -> dict[str, Any]:
    """`docker compose config` as JSON for `compose_file` with only these settings (none from this shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCS_", "COMPOSE_", "POSTGRES_", "PROMETHEUS_"))}
    env_file = tmp_path / f"{uuid.uuid4().hex[:8]}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {"MCS_ADMIN_TOKEN": "x", **settings}.items()))
    cmd = ["docker", "compose", "--project-directory", str(REPO), "--env-file", str(env_file), "-f", str(compose_file)]
    config = [*cmd, *args, "config", "--format", "json"]
    proc = subprocess.run(config, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_default_services_are_unchanged_by_the_profile(tmp_path: Path) -> None:
    before = tmp_path / "compose-before.yaml"
    show = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_PROFILE}:compose.yaml"], capture_output=True)
    assert show.returncode == 0, f"needs the git history of this repository: {show.stderr.decode().strip()}"
    before.write_bytes(show.stdout)
    settings = {"GRAFANA_ADMIN_PASSWORD": "x"}
    old = compose_config(tmp_path, before, **settings)
    new = compose_config(tmp_path, REPO / "compose.yaml", **settings)
    assert sorted(new["services"]) == sorted(old["services"])  # no service of the profile without it
    for service in SQLITE_SERVICES:
        assert new["services"][service].pop("scale") == 1, service  # ${MCS_SQLITE_SCALE:-1}
    assert new["services"] == old["services"]
    assert new["volumes"] == old["volumes"] and new["networks"] == old["networks"]


def test_the_profile_adds_postgres_the_proxy_and_two_replicas_of_each_process(tmp_path: Path) -> None:
    settings = {"GRAFANA_ADMIN_PASSWORD": "x", "POSTGRES_PASSWORD": "0123abcd"}
    both = compose_config(tmp_path, REPO / "compose.yaml", "--profile", "postgres", **settings)["services"]
    assert set(both) == {*SQLITE_SERVICES, *PG_SERVICES, "postgres", "proxy", "prometheus", "grafana"}
    for name in PG_SERVICES:
        service = both[name]
        assert service["deploy"]["replicas"] == 2 and service["profiles"] == ["postgres"], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        env = service["environment"]
        assert env["MCS_DATABASE_URL"] == "postgresql://mcs:0123abcd@postgres:5432/mcs", name
        assert set(env) == {*both["api"]["environment"], "MCS_DATABASE_URL"}, name  # the same settings as SQLite's
        assert {"api-pg", "proxy", "postgres"} <= set(env["MCS_EGRESS_DENY"].split(",")), name
        assert service["image"] == both["api"]["image"] and service["pull_policy"] == "never", name
        assert "ports" not in service, name  # only through the proxy
    assert both["proxy"]["ports"] == both["api"]["ports"]  # where the api is published without the profile
    assert both["postgres"]["volumes"][0]["source"] == "pgdata" and "ports" not in both["postgres"]

    # PostgreSQL alone: the SQLite four scaled to nothing, Prometheus on the replicas' config.
    alone = {"MCS_SQLITE_SCALE": "0", "COMPOSE_PROFILES": "postgres", "PROMETHEUS_CONFIG": "prometheus-postgres.yml"}
    services = compose_config(tmp_path, REPO / "compose.yaml", **settings, **alone)["services"]
    assert {name: services[name]["scale"] for name in SQLITE_SERVICES} == dict.fromkeys(SQLITE_SERVICES, 0)
    assert "--config.file=/etc/prometheus/prometheus-postgres.yml" in services["prometheus"]["command"]


def test_the_postgres_stack_alone_creates_none_of_the_sqlite_processes(
    tmp_path: Path, images: Images, postgres_image: str, proxy_image: str
) -> None:
    """The .env of the README's "The `postgres` profile", run by `docker compose --dry-run create`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCS_", "COMPOSE_", "POSTGRES_", "PROMETHEUS_"))}
    project = f"mcs-e2e-dry-{uuid.uuid4().hex[:8]}"
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "COMPOSE_PROFILES": "postgres",
        "POSTGRES_PASSWORD": "0123abcd",
        "MCS_SQLITE_SCALE": "0",
        "PROMETHEUS_CONFIG": "prometheus-postgres.yml",
        "MCS_ADMIN_TOKEN": "x",
        "GRAFANA_ADMIN_PASSWORD": "x",
        "MCS_PULL_POLICY": "never",
        "MCS_IMAGE": images.mcs,
        "POSTGRES_IMAGE": postgres_image,
        "PROXY_IMAGE": proxy_image,
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "GRAFANA_IMAGE": PROMETHEUS_IMAGE,  # no Grafana image here; a dry run only needs one that exists
    }
    env_file = tmp_path / "alone.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    cmd = ["docker", "compose", "--env-file", str(env_file), "-f", str(REPO / "compose.yaml"), "--dry-run", "create"]
    create = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert create.returncode == 0, create.stderr
    created = set(re.findall(rf"Container {project}-(\S+)\s+Created", create.stdout + create.stderr))
    replicas = {f"{name}-{n}" for name in PG_SERVICES for n in (1, 2)}
    assert created == {*replicas, "postgres-1", "proxy-1", "prometheus-1", "grafana-1"}  # none of the SQLite four


def test_the_profile_refuses_to_start_without_postgres_password(tmp_path: Path, postgres_image: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCS_", "COMPOSE_", "POSTGRES_"))}
    env_file = tmp_path / "no-password.env"
    settings = {"MCS_ADMIN_TOKEN": "x", "GRAFANA_ADMIN_PASSWORD": "x", "POSTGRES_IMAGE": postgres_image}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**settings, "MCS_PULL_POLICY": "never"}.items()))
    cmd = ["docker", "compose", "--env-file", str(env_file), "-f", str(REPO / "compose.yaml"), "--profile", "postgres"]
    dry_run = [*cmd, "--dry-run", "up", "-d", "postgres"]
    up = subprocess.run(dry_run, capture_output=True, text=True, env=env, timeout=60)
    assert up.returncode != 0
    assert 'environment variable "POSTGRES_PASSWORD" required by secret' in up.stderr
    # ... and plain `docker compose` (no profile) does not need it.
    assert subprocess.run([*cmd[:-2], "config", "-q"], capture_output=True, env=env, timeout=60).returncode == 0


@pytest.mark.parametrize(
    "settings",
    [[], ["-e", "POSTGRES_PASSWORD_FILE=/dev/null"]],  # the second: `POSTGRES_PASSWORD=` in .env, an empty secret
    ids=["unset", "empty"],
)
def test_the_postgres_image_refuses_a_first_start_without_a_password(postgres_image: str, settings: list[str]) -> None:
    proc = docker("run", "--rm", *settings, postgres_image, check=False, timeout=60)
    assert proc.returncode == 78, proc.stderr  # EX_CONFIG: restarting will not help
    assert "set POSTGRES_PASSWORD in .env" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---------------------------------------------------------------- the postgres service in compose


@dataclass
class PgProject:
    """A compose project of the repository's compose.yaml running only its `postgres` service."""

    name: str
    env_file: Path
    image: str
    password: str

    def compose(self, *args: str, check: bool = True, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        cmd = ["compose", "--env-file", str(self.env_file), "-f", str(REPO / "compose.yaml"), "--profile", "postgres"]
        return docker(*cmd, *args, check=check, timeout=timeout)

    def inspect(self) -> dict[str, Any]:
        (cid,) = self.compose("ps", "-aq", "postgres").stdout.split()
        return json.loads(docker("inspect", cid).stdout)[0]

    def psql(self, sql: str, *, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """psql in another container on the project's network, to host `postgres` like the MCS processes."""
        return docker(
            "run", "--rm", "--network", f"{self.name}_default", "--entrypoint", "psql",
            "-e", f"PGPASSWORD={self.password if password is None else password}", "-e", "PGCONNECT_TIMEOUT=10",
            self.image, "--host=postgres", "--username=mcs", "--dbname=mcs", "--no-align", "--tuples-only",
            "--command", sql,
            check=False, timeout=60,
        )  # fmt: skip

    def wait_healthy(self, *, after: str = "") -> dict[str, Any]:
        """The container's inspect once it is healthy (and started after `after`, a StartedAt)."""

        def healthy() -> dict[str, Any] | None:
            info = self.inspect()
            state = info["State"]
            fresh = state["Running"] and state["StartedAt"] != after
            return info if fresh and state["Health"]["Status"] == "healthy" else None

        return wait_until(healthy, timeout=120, what="postgres to be healthy")


@pytest.fixture(scope="module")
def pg_project(
    pytestconfig: pytest.Config, postgres_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgProject]:
    tmp = tmp_path_factory.mktemp("pg")
    name = f"mcs-e2e-pg-{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(16)
    settings = {
        "COMPOSE_PROJECT_NAME": name,
        "MCS_ADMIN_TOKEN": "not-started-here",
        "GRAFANA_ADMIN_PASSWORD": "not-started-here",
        "POSTGRES_IMAGE": postgres_image,
        "POSTGRES_PASSWORD": password,
        "MCS_PULL_POLICY": "never",
        "MCS_HEALTHCHECK_INTERVAL": "2s",
        "MCS_API_PORT": "",
        "PROMETHEUS_PORT": "",
        "GRAFANA_PORT": "",
    }
    env_file = tmp / "pg.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    project = PgProject(name, env_file, postgres_image, password)
    started = time.monotonic()
    try:
        project.compose("up", "-d", "--wait", "postgres")
        say(pytestconfig, f"compose project {name}: postgres healthy in {time.monotonic() - started:.1f} s")
        yield project
    finally:
        project.compose("down", "--volumes", "--timeout", "5", check=False)
        docker("volume", "rm", f"{name}_pgdata", check=False)


def test_postgres_is_healthy_and_takes_the_mcs_role_only_with_its_password(pg_project: PgProject) -> None:
    info = pg_project.wait_healthy()
    assert info["Config"]["User"] == "postgres"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/var/lib/postgresql/data"]["Name"] == f"{pg_project.name}_pgdata"

    ok = pg_project.psql("SELECT current_user, current_database(), current_setting('server_version_num')::int / 10000")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "mcs|mcs|15"
    stored = pg_project.psql("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'mcs'")
    assert stored.stdout.strip() == "SCRAM-SHA-256$"  # the password is kept hashed, never in clear

    wrong = pg_project.psql("SELECT 1", password=pg_project.password + "x")
    assert wrong.returncode != 0 and 'password authentication failed for user "mcs"' in wrong.stderr
    without = pg_project.psql("SELECT 1", password="")  # no trust over the network
    assert without.returncode != 0 and "no password supplied" in without.stderr


def test_postgres_keeps_its_data_across_a_restart(pg_project: PgProject) -> None:
    created = pg_project.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('across a restart')")
    assert created.returncode == 0, created.stderr
    before = pg_project.inspect()["State"]["StartedAt"]

    pg_project.compose("restart", "postgres")
    pg_project.wait_healthy(after=before)

    kept = pg_project.psql("SELECT v FROM kept")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip() == "across a restart"
    logs = pg_project.compose("logs", "--no-color", "postgres").stdout
    assert logs.count("mcs-postgres: initialised") == 1  # the second start found its cluster in the volume


def test_postgres_stops_at_once_with_a_client_connected(pytestconfig: pytest.Config, pg_project: PgProject) -> None:
    client = f"{pg_project.name}-client"
    docker(
        "run", "-d", "--name", client, "--network", f"{pg_project.name}_default", "--entrypoint", "psql",
        "-e", f"PGPASSWORD={pg_project.password}", pg_project.image,
        "--host=postgres", "--username=mcs", "--dbname=mcs", "--command", "SELECT pg_sleep(600)",
    )  # fmt: skip
    try:
        sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
        wait_until(lambda: pg_project.psql(sleeping).stdout.strip() == "1", timeout=60, what="the client's query")
        started = time.monotonic()
        pg_project.compose("stop", "--timeout", "20", "postgres")
        say(pytestconfig, f"postgres stopped in {time.monotonic() - started:.1f} s with a client connected")
        state = pg_project.inspect()["State"]
        # SIGINT, PostgreSQL's fast shutdown: it ends the client's session and exits 0 by itself. With Docker's
        # default SIGTERM it would wait for the client until `stop` gives up and kills it (exit 137).
        assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False)
        out = docker("logs", client).stderr
        assert "terminating connection due to administrator command" in out, out
    finally:
        docker("rm", "-f", client, check=False)


# ---------------------------------------------------------------- the proxy


def test_the_proxy_config_passes_haproxy_check(proxy_image: str) -> None:
    proc = docker("run", "--rm", "--entrypoint", "haproxy", proxy_image, "-c", "-f", "/etc/haproxy/haproxy.cfg")
    out = proc.stdout + proc.stderr
    assert "Configuration file is valid" in out
    assert "[WARNING]" not in out and "[ALERT]" not in out, out


@dataclass
class ProxyRig:
    """The proxy image with api containers (the mcs image, on SQLite) answering to `api-pg` on one network."""

    name: str
    mcs_image: str
    proxy: str
    apis: list[str]
    others: list[str]  # more containers on the network, removed with it

    def start_api(self, index: int) -> str:
        container = f"{self.name}-api-{index}"
        docker(
            "run", "-d", "--name", container, "--network", self.name, "--network-alias", "api-pg",
            "-v", f"{self.name}:/data", "-e", "MCS_ADMIN_TOKEN=proxy-test", "-e", "MCS_HOST=0.0.0.0",
            self.mcs_image, "api",
        )  # fmt: skip
        self.apis.append(container)
        return container

    @property
    def url(self) -> str:
        published = docker("port", self.proxy, "8080").stdout.split()[0]
        return f"http://{published}"

    def servers_up(self) -> int:
        """How many `api` servers HAProxy has UP (its stats page, from inside the container)."""
        csv = docker("exec", self.proxy, "curl", "-s", "http://127.0.0.1:8404/stats;csv", check=False).stdout
        rows = [line.split(",") for line in csv.splitlines() if line.startswith("api,api")]
        return sum(1 for row in rows if row[17] == "UP")

    def health(self) -> str:
        return str(json.loads(docker("inspect", self.proxy).stdout)[0]["State"]["Health"]["Status"])


@pytest.fixture(scope="module")
def proxy_rig(images: Images, proxy_image: str) -> Iterator[ProxyRig]:
    name = f"mcs-e2e-proxy-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    rig = ProxyRig(name, images.mcs, f"{name}-haproxy", [], [])
    try:
        rig.start_api(1)
        rig.start_api(2)
        docker(
            "run", "-d", "--name", rig.proxy, "--network", name, "-p", "127.0.0.1::8080",
            "--health-interval", "1s", proxy_image,
        )  # fmt: skip
        yield rig
    finally:
        for container in [rig.proxy, *rig.apis, *rig.others]:
            docker("rm", "-fv", container, check=False)
        docker("network", "rm", name, check=False)
        docker("volume", "rm", name, check=False)


def test_prometheus_finds_each_api_replica_by_dns_with_the_usual_labels(proxy_rig: ProxyRig) -> None:
    """monitoring/prometheus/prometheus-postgres.yml on a real Prometheus, next to the two api replicas."""
    prometheus = f"{proxy_rig.name}-prometheus"
    docker(
        "run", "-d", "--name", prometheus, "--network", proxy_rig.name, "-p", "127.0.0.1::9090",
        "-v", f"{REPO / 'monitoring' / 'prometheus'}:/etc/prometheus:ro", PROMETHEUS_IMAGE,
        "--config.file=/etc/prometheus/prometheus-postgres.yml", "--storage.tsdb.path=/prometheus",
    )  # fmt: skip
    proxy_rig.others.append(prometheus)
    url = f"http://{docker('port', prometheus, '9090').stdout.split()[0]}/api/v1/targets"

    def scraped() -> list[dict[str, Any]] | None:
        try:
            targets = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return targets if len(targets) == 2 and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(scraped, timeout=90, what="Prometheus to scrape both api replicas", interval=1)
    assert [(t["labels"]["job"], t["labels"]["process"]) for t in targets] == [("mcs", "api")] * 2
    assert len({t["labels"]["instance"] for t in targets}) == 2  # one series per replica


def test_the_proxy_spreads_over_the_replicas_it_finds_and_follows_them(proxy_rig: ProxyRig) -> None:
    wait_until(lambda: proxy_rig.servers_up() == 2, timeout=120, what="HAProxy to see both api replicas up")
    wait_until(lambda: proxy_rig.health() == "healthy", timeout=30, what="the proxy's healthcheck")
    with httpx.Client(base_url=proxy_rig.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        agents = http.get("/v1/agents", headers={"Authorization": "Bearer proxy-test"})
        assert agents.status_code == 200, agents.text

        docker("stop", proxy_rig.apis[0])
        wait_until(lambda: proxy_rig.servers_up() == 1, timeout=60, what="HAProxy to drop the stopped replica")
        assert [http.get("/healthz").status_code for _ in range(6)] == [200] * 6

        docker("stop", proxy_rig.apis[1])
        wait_until(lambda: proxy_rig.health() == "unhealthy", timeout=60, what="the proxy to report no replica")
        assert http.get("/proxy-health").status_code == 503
        assert http.get("/healthz").status_code == 503

        docker("start", proxy_rig.apis[0])  # back on the network, maybe at another address: found by DNS
        wait_until(lambda: proxy_rig.servers_up() == 1, timeout=120, what="HAProxy to find the replica again")
        assert http.get("/healthz").status_code == 200
