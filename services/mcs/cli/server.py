"""The server processes: `mcs up`, `api`, `dispatcher`, `watchdog`, `notifier`, `migrate`, `check`,
`migrate-to-postgres`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mcs.cli.common import emit, json_option
from mcs.cli.root import main
from mcs.models import HEARTBEAT_MAX_AGE
from mcs.supervisor import EXIT_CANNOT_START, EXIT_RESTART

SERVER_PROCESSES = ("api", "dispatcher", "watchdog", "notifier")


def _settings() -> Any:
    from mcs.config import Settings

    return Settings.from_env()


def _where(name: str, settings: Any) -> str:
    """The address a server process listens on, for a "port in use" message."""
    if name in ("api", "up"):
        return f"{settings.host}:{settings.port}"
    port = getattr(settings, f"{name}_metrics_port")
    return f"{settings.bind_metrics_host}:{port} (MCS_{name.upper()}_METRICS_PORT)"


def _without_httpx_cli() -> None:
    """Before a server process imports anything: httpx imports its command-line tool (rich, pygments:
    about 4 MiB a process) whenever it can, and no server process runs it. A None in sys.modules makes
    that import fail, which httpx expects: without its `cli` extra installed it fails the same way."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _serve(name: str, run: Callable[[Any], Any]) -> None:
    """Run a server process; a start-up problem (port in use, bad setting, unusable database) is one line
    on stderr and exit code 78, which tells `mcs up` that restarting would not help. A database deleted or
    replaced under the process, locked past MCS_WRITE_LOCK_TIMEOUT at start, or a PostgreSQL server that
    does not answer, exits 75: `mcs up` and compose restart it (on the file now at the path)."""
    import errno

    from mcs.errors import DatabaseReplaced, DatabaseUnreachable, McsError, StoreBusy

    settings = None
    try:
        settings = _settings()
        run(settings)
    except DatabaseReplaced as exc:
        click.echo(f"mcs {name}: exiting to restart: {exc}", err=True)
        sys.exit(EXIT_RESTART)
    except (StoreBusy, DatabaseUnreachable) as exc:
        click.echo(f"mcs {name}: cannot start now: {exc}", err=True)
        sys.exit(EXIT_RESTART)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and settings is not None:
            why = f"the port is already in use: {_where(name, settings)} (another MCS? `mcs up --port N`)"
        else:
            why = str(exc)
        click.echo(f"mcs {name}: cannot start: {why}", err=True)
        sys.exit(EXIT_CANNOT_START)
    except McsError as exc:
        click.echo(f"mcs {name}: cannot start: {exc}", err=True)
        sys.exit(EXIT_CANNOT_START)


def _profile_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from mcs.profiles import NAME_PATTERN

    if value is not None and not NAME_PATTERN.match(value):
        raise click.BadParameter("letters, digits, - and _ only (at most 64)")
    return value


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="The api's port (sets MCS_PORT).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The data folder: database and admin token (sets MCS_DB to DATA/mcs.db) [default: ./data].",
)
@click.option(
    "--profile",
    default=None,
    callback=_profile_name,
    help="The name of this mesh's profile in the CLI's config file [default: local, or local-PORT].",
)
def up(port: int | None, data: Path | None, profile: str | None) -> None:
    """Run api, dispatcher, watchdog and notifier as four processes (the embedded default; env: MCS_DB,
    MCS_HOST, MCS_PORT, MCS_ADMIN_TOKEN).

    The metrics ports of the other three are 9101-9103 unless set (MCS_*_METRICS_PORT); one in use (a
    second mesh on this host) is replaced by a free port. On start it makes sure the CLI's config file
    (~/.config/mcs/config.toml) knows this mesh: it writes the file when there is none, else appends a
    profile for it (never changing what is there), so `mcs` finds it from any folder."""
    import os

    from mcs import supervisor
    from mcs.process import setup_logging

    if port is not None:
        os.environ["MCS_PORT"] = str(port)
    if data is not None:
        os.environ["MCS_DB"] = str(data / "mcs.db")
    setup_logging()
    code: list[int] = []
    _serve("up", lambda settings: code.append(supervisor.main(settings, profile=profile)))
    sys.exit(code[0] if code else 0)


@main.command()
def api() -> None:
    """Run the HTTP API alone (env: MCS_HOST, MCS_PORT, MCS_DB, MCS_ADMIN_TOKEN)."""
    _without_httpx_cli()
    from mcs.api.server import main as run

    _serve("api", run)


@main.command()
def dispatcher() -> None:
    """Run the dispatcher alone (env: MCS_DB, MCS_DISPATCHER_METRICS_PORT)."""
    _without_httpx_cli()
    from mcs.dispatcher import main as run

    _serve("dispatcher", run)


@main.command()
def watchdog() -> None:
    """Run the watchdog alone (env: MCS_DB, MCS_WATCHDOG_INTERVAL, MCS_WATCHDOG_METRICS_PORT)."""
    _without_httpx_cli()
    from mcs.watchdog import main as run

    _serve("watchdog", run)


@main.command()
def notifier() -> None:
    """Run the notifier alone (env: MCS_DB, MCS_NOTIFIER_METRICS_PORT, MCS_ALERT_WEBHOOK_URL)."""
    _without_httpx_cli()
    from mcs.notifier import main as run

    _serve("notifier", run)


@main.command()
@click.option("--check", is_flag=True, help="Only list the pending migrations; exit 1 if there are any.")
@json_option
def migrate(check: bool, as_json: bool) -> None:
    """Apply pending database migrations (env: MCS_DB, or MCS_DATABASE_URL for PostgreSQL).

    Several processes migrating one database at once take turns; the later ones find nothing to do."""
    settings = _settings()
    if settings.database_url:
        from mcs.engines.migrations.catalog import migrate_url
        from mcs.engines.migrations.connection import redact

        names, version = migrate_url(settings.database_url, check=check)
        data: dict[str, Any] = {"engine": "postgres", "database": redact(settings.database_url)}
        data.update({"engine_version": version})
    else:
        from mcs.engines import open_engine
        from mcs.engines.sqlite import migrations as sqlite_migrations
        from mcs.engines.sqlite.engine import sqlite_version

        if check and not settings.db.exists():  # a check creates no database
            names = list(sqlite_migrations.migrations.names)
        else:
            store = open_engine(settings, process="migrate")  # SQLite's Store here: MCS_DATABASE_URL is unset
            try:
                names = store.pending_migrations() if check else store.migrate()
            finally:
                store.close()
        data = {"engine": "sqlite", "db": str(settings.db), "sqlite_version": sqlite_version()}
    if check:
        data["pending"] = names
        emit(data, as_json, lambda d: f"pending {', '.join(d['pending'])}" if d["pending"] else "up to date")
        if names:
            sys.exit(1)
        return
    data["applied"] = names
    emit(data, as_json, lambda d: f"applied {', '.join(d['applied'])}" if d["applied"] else "up to date")


@main.command()
@click.argument("process", type=click.Choice(SERVER_PROCESSES))
@click.option("--max-age", default=HEARTBEAT_MAX_AGE, show_default=True, help="Seconds a heartbeat may be old.")
def check(process: str, max_age: float) -> None:
    """Exit 0 if PROCESS wrote its heartbeat recently, 1 if not (for container healthchecks; env: MCS_DB or
    MCS_DATABASE_URL)."""
    from mcs.engines import open_engine
    from mcs.process import instance_name
    from mcs.state import outbox as outbox_state

    settings = _settings()
    if process == "api":
        import httpx

        try:
            response = httpx.get(f"http://{settings.host}:{settings.port}/healthz", timeout=5)
        except httpx.HTTPError as exc:
            click.echo(f"api unhealthy: {exc}", err=True)
            sys.exit(1)
        if response.status_code != 200:
            try:
                health = response.json()
            except ValueError:
                health = {}
            if isinstance(health, dict) and health.get("status") == "disk_full":
                click.echo(f"api unhealthy: disk full ({health.get('free_bytes')} bytes free)", err=True)
            else:
                click.echo(f"api unhealthy: HTTP {response.status_code}", err=True)
            sys.exit(1)
        click.echo("api ok")
        return
    store = open_engine(settings, process="check")  # SQLite's Store, or PostgreSQL with MCS_DATABASE_URL
    try:
        beats = [b for b in store.read(outbox_state.heartbeats) if b.name == process]
    finally:
        store.close()
    # This instance's row: MCS_INSTANCE's, or else the replicas' on this host (a container's healthcheck
    # runs beside its process), or else any replica's (a check from elsewhere on the database's machine).
    if settings.instance:
        mine = [b for b in beats if b.instance == settings.instance]
    else:
        host = instance_name(None).rsplit(":", 1)[0] + ":"
        mine = [b for b in beats if b.instance.startswith(host)] or beats
    if not mine:
        click.echo(f"{process}: no heartbeat (it never ran on this database)", err=True)
        sys.exit(1)
    beat = max(mine, key=lambda b: b.beat_at)
    age = time.time() - beat.beat_at
    which = f" {beat.instance}" if len(beats) > 1 else ""
    if age > max_age:
        click.echo(f"{process}{which}: no heartbeat for {age:.0f} s", err=True)
        sys.exit(1)
    click.echo(f"{process}{which} ok (heartbeat {age:.1f} s ago)")


@main.command("migrate-to-postgres")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The SQLite database to copy [default: MCS_DB, ./data/mcs.db].",
)
@click.option("--to", "target", required=True, help="The empty PostgreSQL database: postgresql://user:pw@host/name.")
@json_option
def migrate_to_postgres(source: Path | None, target: str, as_json: bool) -> None:
    """Copy a SQLite database into an empty PostgreSQL one and verify the copy (row counts and a SHA-256
    per table); exit 1 if any table differs.

    Stop MCS first: it refuses while a process uses the SQLite file, unless that file is fully migrated,
    and if the target already holds MCS data. The copy is one transaction: a failure leaves the target
    empty. Then set MCS_DATABASE_URL and start MCS on PostgreSQL."""
    from mcs.engines.copy import migrate_to_postgres as copy

    if not target.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter("a postgresql:// URL", param_hint="--to")
    report = copy(source if source is not None else _settings().db, target)
    emit(report.as_json(), as_json, _copy_table)
    if not report.ok:
        bad = ", ".join(t.table for t in report.tables if not t.ok)
        click.echo(f"the copy differs from the source in: {bad} (the target is left as it is for inspection)", err=True)
        sys.exit(1)


def _copy_table(data: dict[str, Any]) -> str:
    lines = [f"{'table':<20} {'rows':>10} {'in target':>10}  sha256 (source / target, first 16)"]
    for t in data["tables"]:
        mark = "" if t["ok"] else "  DIFFERS"
        lines.append(
            f"{t['table']:<20} {t['source_rows']:>10} {t['target_rows']:>10}"
            f"  {t['source_sha256'][:16]} / {t['target_sha256'][:16]}{mark}"
        )
    verdict = "counts and checksums match" if data["ok"] else "DIFFERENCES FOUND"
    lines.append(f"copied {data['rows']} rows of {len(data['tables'])} tables in {data['seconds']} s: {verdict}")
    return "\n".join(lines)
