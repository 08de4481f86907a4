"""A throwaway PostgreSQL cluster for the tests (Debian's postgresql-15, as ../shared/ENVIRONMENT.md says).

`PgCluster.start()` runs initdb and pg_ctl as the `postgres` user (both refuse root) in a fresh folder, on
a free loopback port with its socket in that folder, and `stop()` ends it (`pg_ctl -m fast`). Tests use
the session fixture `pg_cluster` (tests/conftest.py) and get a database of their own from `pg_database`:
CREATE DATABASE is tens of milliseconds, so every test starts empty. `synchronous_commit=off` (never
`fsync=off`): fast, and a crash of the test machine loses only test data. The module imports nothing from
pytest, so bench/engines.py starts its cluster with it too (`synchronous_commit="on"`, durability equal to
SQLite's FULL, and `settings` for pg_stat_statements).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(os.environ.get("MCS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL = "apt-get install -y postgresql-15 (or set MCS_TEST_PG_BIN to a PostgreSQL 15+ bin folder)"
USER = "postgres"  # the cluster's superuser role and the OS user that runs it
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections


def missing() -> str | None:
    """Why a cluster cannot start here (None: it can)."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL server binaries not found in {BIN}: {INSTALL}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to start PostgreSQL as the postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *args] if os.geteuid() == 0 else args


@dataclass
class PgCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcs-pg-")))
    port: int = field(default_factory=_free_port)
    synchronous_commit: str = "off"  # the tests' default; "on" waits for the WAL flush as SQLite FULL does
    settings: dict[str, str] = field(default_factory=dict)  # more `-c name=value` server settings
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _template: str | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgCluster:
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, USER, USER)
        init = [str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth-local=trust"]
        init += ["--auth-host=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        subprocess.run(_as_postgres(init), check=True, capture_output=True, timeout=120)
        options = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1"
        options += f" -c synchronous_commit={self.synchronous_commit} -c max_connections=300 -c shared_buffers=64MB"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        start = [str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w"]
        start += ["-t", str(START_TIMEOUT), "start", "-o", options]
        done = subprocess.run(_as_postgres(start), capture_output=True, text=True, timeout=START_TIMEOUT + 10)
        if done.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.strip()}\n{log[-2000:]}")
        return self

    def postmaster_pid(self) -> int:
        """The server's main process (its backends, WAL writer, checkpointer etc. are its children)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        stop = [str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); its URL."""
        import psycopg

        name = f"t_{os.getpid()}_{next(self._names)}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else "")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)
        return self.url(name)

    def migrated_template(self) -> str:
        """The name of a database migrated once (every migration of the PostgreSQL engine), made on first
        call: `create_database(template=...)` then copies it in tens of milliseconds per test. No
        connection to it stays open (CREATE DATABASE ... TEMPLATE needs none)."""
        if self._template is None:
            from mcs.engines.postgres.engine import PostgresEngine

            url = self.create_database()
            engine = PostgresEngine(url, pool_size=1, process="test-template")
            try:
                engine.migrate()
            finally:
                engine.close()
            self._template = url.rsplit("/", 1)[1]
        return self._template

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
