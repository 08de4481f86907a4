"""The processes and commands on PostgreSQL (MCS_DATABASE_URL): `mcs api`, `mcs dispatcher` and `mcs watchdog`
as real processes on a real PostgreSQL 15 server (tests/pg.py), a task submitted over HTTP and done by a
pulling agent, `mcs status` and `mcs check`, /healthz naming the engine; `mcs backup`/`restore` refusing in
one line; a server that is down or a wrong password as one line without the password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import free_ports, uid
from tests.pg import PgCluster
from tests.polling import wait_until

SECRET = "s3cret-pw-" + "x" * 8  # a password that must never show in any output


def _mcs(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _env(tmp_path: Path, url: str, **more: str) -> dict[str, str]:
    return dict(os.environ) | {
        "MCS_DATABASE_URL": url,
        "MCS_DB": str(tmp_path / "unused" / "mcs.db"),  # must stay untouched on PostgreSQL
        "MCS_HOST": "127.0.0.1",
        "MCS_WATCHDOG_INTERVAL": "0.2",
        "MCS_LOG_LEVEL": "INFO",
        **more,
    }


@dataclass
class PgMesh:
    url: str
    env: dict[str, str]
    admin: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path
    metrics_ports: dict[str, int]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def pg_mesh(tmp_path: Path, pg_database: str) -> Iterator[PgMesh]:
    """`mcs migrate`, then api, dispatcher and watchdog as separate processes on the test's database."""
    api_port, dispatcher_port, watchdog_port = free_ports(3)
    token = "admin-" + uid()
    env = _env(
        tmp_path,
        pg_database,
        MCS_PORT=str(api_port),
        MCS_ADMIN_TOKEN=token,
        MCS_DISPATCHER_METRICS_PORT=str(dispatcher_port),
        MCS_WATCHDOG_METRICS_PORT=str(watchdog_port),
    )
    migrated = _mcs(["migrate", "--json"], env)
    assert migrated.returncode == 0, migrated.stderr
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files = []
    try:
        for name in ("api", "dispatcher", "watchdog"):
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            files.append(log)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "mcs", name], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{api_port}"
        ports = {"dispatcher": dispatcher_port, "watchdog": watchdog_port}

        def up() -> bool:
            for name, proc in procs.items():
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text(errors="replace")
            try:
                ok = httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                return ok and all(
                    httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=1).status_code == 200 for p in ports.values()
                )
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="api, dispatcher and watchdog on PostgreSQL to answer /healthz")
        yield PgMesh(url, env, {"Authorization": f"Bearer {token}"}, procs, tmp_path, ports)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in files:
            f.close()


def test_a_task_goes_through_api_dispatcher_and_watchdog_on_postgres(pg_mesh: PgMesh, tmp_path: Path) -> None:
    cap = "pg-" + uid()
    with httpx.Client(base_url=pg_mesh.url, timeout=15) as c:
        made = c.post("/v1/agents", json={"name": cap, "capabilities": [cap]}, headers=pg_mesh.admin)
        assert made.status_code == 201, made.text
        agent = {"X-Agent-ID": cap, "X-Agent-Secret": made.json()["secret"]}
        c.post("/v1/agents/register", json={"capabilities": [cap]}, headers=agent).raise_for_status()

        submitted = c.post("/v1/tasks", json={"type": cap, "payload": {"n": 7}}, headers=pg_mesh.admin)
        assert submitted.status_code in (200, 201), submitted.text
        task_id = submitted.json()["id"]

        claimed = c.post("/v1/tasks/claim", json={"wait": 10}, headers=agent)
        assert claimed.status_code == 200, claimed.text
        task = claimed.json()
        assert task["id"] == task_id and task["payload"] == {"n": 7}
        done = c.post(
            f"/v1/tasks/{task_id}/complete",
            json={"claim_token": task["claim_token"], "result": {"sum": 7}},
            headers=agent,
        )
        assert done.status_code == 200, done.text
        shown = c.get(f"/v1/tasks/{task_id}", headers=pg_mesh.admin).json()
        assert shown["state"] == "completed" and shown["result"] == {"sum": 7}

        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["engine"] == "postgres"
        assert health["engine_version"].startswith("15") and "sqlite_version" not in health
        scraped = c.get("/metrics").text  # the mesh state read from PostgreSQL; no SQLite file or disk gauges
        assert "mcs_state_up 1.0" in scraped and "mcs_database_size_bytes" not in scraped
        assert "mcs_disk_free_bytes{" not in scraped
    for name, port in pg_mesh.metrics_ports.items():
        process_health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert process_health["engine"] == "postgres", (name, process_health)

    # The dispatcher and watchdog write their heartbeats to PostgreSQL: `mcs check` and `mcs status` see them.
    for name in ("dispatcher", "watchdog"):
        checks: list[subprocess.CompletedProcess[str]] = []
        wait_until(
            lambda: checks.append(_mcs(["check", name], pg_mesh.env)) or checks[-1].returncode == 0,  # noqa: B023
            timeout=30,
            what=f"the {name}'s heartbeat on PostgreSQL",
        )
        assert checks[-1].stdout.startswith(f"{name} ok"), checks[-1].stderr
    api_check = _mcs(["check", "api"], pg_mesh.env)
    assert api_check.returncode == 0 and "api ok" in api_check.stdout, api_check.stderr
    notifier = _mcs(["check", "notifier"], pg_mesh.env)  # not started here: no heartbeat, said in one line
    assert notifier.returncode == 1 and "no heartbeat" in notifier.stderr
    status = _mcs(["status", "--json", "--url", pg_mesh.url], pg_mesh.env)
    assert status.returncode == 0, status.stderr
    import json

    data: dict[str, Any] = json.loads(status.stdout)
    assert {p["name"] for p in data["processes"]} >= {"dispatcher", "watchdog"}
    assert any(a["name"] == cap for a in data["agents"]["online"])
    assert not (tmp_path / "unused").exists()  # no SQLite file made on the side


def test_backup_and_restore_refuse_on_postgres(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    for args in (["backup", str(tmp_path / "copy.db")], ["restore", str(tmp_path / "copy.db")]):
        done = _mcs(args, env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip() == "use pg_dump -Fc / pg_restore (README, Run on PostgreSQL)"
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "unused").exists()


def _closed_port() -> int:
    (port,) = free_ports(1)
    return port


def test_a_server_that_is_down_is_one_line_naming_host_port_and_the_process_is_restarted(tmp_path: Path) -> None:
    port = _closed_port()
    env = _env(tmp_path, f"postgresql://mcs:{SECRET}@127.0.0.1:{port}/mcs", MCS_PORT=str(free_ports(1)[0]))
    for name in ("api", "dispatcher", "watchdog"):
        done = _mcs([name], env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 75, (name, done.stderr)  # EXIT_RESTART: `mcs up` and compose start it again
        assert len(lines) == 1 and lines[0].startswith(f"mcs {name}: cannot start now: "), done.stderr
        assert f"127.0.0.1:{port}" in lines[0] and SECRET not in done.stderr + done.stdout
    check = _mcs(["check", "dispatcher"], env)
    assert check.returncode == 1 and f"127.0.0.1:{port}" in check.stderr
    assert len(check.stderr.strip().splitlines()) == 1 and SECRET not in check.stderr


@pytest.fixture
def password_role(pg_cluster: PgCluster, pg_database: str) -> Iterator[str]:
    """A role that must give its password over TCP (the test cluster trusts everyone else): its name."""
    import psycopg

    role = "pw_" + uid()
    hba = pg_cluster.data / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + before)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(before)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_wrong_password_is_one_line_without_the_password(
    tmp_path: Path, pg_cluster: PgCluster, password_role: str
) -> None:
    url = f"postgresql://{password_role}:{SECRET}@127.0.0.1:{pg_cluster.port}/postgres"
    env = _env(tmp_path, url, MCS_PORT=str(free_ports(1)[0]))

    def refused() -> bool:  # the reload of pg_hba.conf takes effect at once, but only for new connections
        return "password authentication failed" in _mcs(["check", "watchdog"], env).stderr

    wait_until(refused, timeout=10, what="the server to ask the new role for its password")
    for args in (["api"], ["watchdog"], ["check", "watchdog"], ["migrate"]):
        done = _mcs(args, env)
        out = done.stderr + done.stdout
        assert done.returncode not in (0, 75), (args, out)  # restarting would not help: it says so
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert "password authentication failed" in done.stderr and SECRET not in out, (args, out)
        assert "Traceback" not in out
    started = time.monotonic()
    api = _mcs(["api"], env)
    assert api.returncode == 78 and time.monotonic() - started < 30  # EXIT_CANNOT_START: `mcs up` stops


def _with_password(url: str) -> str:
    """The same database with a password in the URL (the test server trusts loopback, so any will do)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def test_mcs_up_migrates_a_postgres_database_once_and_starts_on_it(tmp_path: Path, pg_database: str) -> None:
    from tests.acceptance.conftest import LAUNCH_MCS_UP

    api_port, *metrics = free_ports(4)
    env = _env(
        tmp_path,
        _with_password(pg_database),
        MCS_PORT=str(api_port),
        MCS_ADMIN_TOKEN="admin-" + uid(),
        MCS_DISPATCHER_METRICS_PORT=str(metrics[0]),
        MCS_WATCHDOG_METRICS_PORT=str(metrics[1]),
        MCS_NOTIFIER_METRICS_PORT=str(metrics[2]),
        HOME=str(tmp_path),  # the CLI config file `mcs up` writes
    )
    assert _mcs(["migrate", "--check"], env).returncode == 1  # an empty database: everything pending
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-c", LAUNCH_MCS_UP], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def answering() -> Any:
                assert up.poll() is None, log_path.read_text(errors="replace")
                try:
                    health = httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1)
                except httpx.HTTPError:
                    return None
                return health.json() if health.status_code == 200 else None

            health = wait_until(answering, timeout=60, what="`mcs up` on PostgreSQL to answer /healthz")
            assert health["engine"] == "postgres" and health["engine_version"].startswith("15")
            assert _mcs(["migrate", "--check"], env).returncode == 0  # `mcs up` migrated it before the four
        finally:
            up.terminate()
            up.wait(timeout=30)
    out = log_path.read_text(errors="replace")
    assert "database postgresql://postgres:****@127.0.0.1" in out and SECRET not in out, out[-3000:]
    assert "migrated: 0001" in out  # once, by `mcs up`


def test_mcs_up_with_the_server_down_is_one_line_and_a_restartable_exit(tmp_path: Path) -> None:
    port = _closed_port()
    env = _env(tmp_path, f"postgresql://mcs:{SECRET}@127.0.0.1:{port}/mcs", MCS_PORT=str(free_ports(1)[0]))
    done = _mcs(["up"], env)
    lines = [line for line in done.stderr.strip().splitlines() if line]
    assert done.returncode == 75, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"mcs up: cannot start now: cannot connect to PostgreSQL at 127.0.0.1:{port}: ")
    assert SECRET not in done.stderr + done.stdout


def _pg_ctl(cluster: PgCluster, *args: str) -> None:
    from tests.pg import BIN, _as_postgres

    options = f"-k {cluster.root} -p {cluster.port} -c listen_addresses=127.0.0.1 -c synchronous_commit=off"
    command = [str(BIN / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.root / "log"), "-w", *args]
    if args[0] == "start":
        command += ["-o", options]
    subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=60)


def test_mcs_up_restarts_a_process_while_postgres_is_down_until_it_is_back(tmp_path: Path) -> None:
    """The server goes away under a running `mcs up`: a process that dies then cannot start, says so in one
    line naming host:port (exit 75), and is started again with backoff until the server is back."""
    from tests.acceptance.conftest import LAUNCH_MCS_UP, Mesh

    cluster = PgCluster().start()  # its own server: this test stops it
    try:
        url = _with_password(cluster.create_database())
        api_port, *metrics = free_ports(4)
        env = _env(
            tmp_path,
            url,
            MCS_PORT=str(api_port),
            MCS_ADMIN_TOKEN="admin-" + uid(),
            MCS_DISPATCHER_METRICS_PORT=str(metrics[0]),
            MCS_WATCHDOG_METRICS_PORT=str(metrics[1]),
            MCS_NOTIFIER_METRICS_PORT=str(metrics[2]),
            HOME=str(tmp_path),
        )
        log_path = tmp_path / "up.log"
        with open(log_path, "wb") as log:
            up = subprocess.Popen([sys.executable, "-c", LAUNCH_MCS_UP], env=env, stdout=log, stderr=subprocess.STDOUT)
            mesh = Mesh(tmp_path, env, up, log_path, f"http://127.0.0.1:{api_port}", None, {})  # type: ignore[arg-type]
            try:

                def dispatcher_health() -> int | None:
                    assert up.poll() is None, log_path.read_text(errors="replace")
                    try:
                        return httpx.get(f"http://127.0.0.1:{metrics[0]}/healthz", timeout=1).status_code
                    except httpx.HTTPError:
                        return None

                wait_until(lambda: dispatcher_health() == 200, timeout=60, what="the dispatcher on PostgreSQL")
                _pg_ctl(cluster, "stop", "-m", "fast")
                old = mesh.kill_child("dispatcher")
                wait_until(
                    lambda: log_path.read_text(errors="replace").count("mcs dispatcher: cannot start now: ") >= 2,
                    timeout=30,
                    what="the dispatcher to be started again, and to fail again, while the server is down",
                )
                assert up.poll() is None  # exit 75 is "restart me": `mcs up` keeps everything running
                _pg_ctl(cluster, "start")
                mesh.wait_restarted("dispatcher", old, timeout=30)
                wait_until(lambda: dispatcher_health() == 200, timeout=60, what="the dispatcher back on PostgreSQL")
            finally:
                up.terminate()
                up.wait(timeout=30)
        out = log_path.read_text(errors="replace")
        failures = [line for line in out.splitlines() if "mcs dispatcher: cannot start now: " in line]
        assert failures and all(f"cannot connect to PostgreSQL at 127.0.0.1:{cluster.port}: " in x for x in failures)
        assert SECRET not in out
    finally:
        cluster.stop()
