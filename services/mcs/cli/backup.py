"""`mcs backup PATH` (a consistent copy of the live database, while the mesh runs) and `mcs restore PATH`
(put one back, while nothing runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mcs.cli.common import emit, json_option
from mcs.cli.root import main
from mcs.errors import StoreError


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _counts(d: dict[str, Any]) -> str:
    return f"{d['tasks']} tasks, {d['agents']} agents, {d['memory_keys']} memory keys"


PG_REFUSAL = "use pg_dump -Fc / pg_restore (README, Run on PostgreSQL)"
EXIT_NOT_HERE = 2  # the command does not apply to this engine


def _db() -> Path:
    """MCS_DB; on PostgreSQL (MCS_DATABASE_URL set) one line on stderr and exit 2: these commands copy
    SQLite files, and PostgreSQL has its own tools for that."""
    from mcs.config import Settings

    settings = Settings.from_env()
    if settings.database_url is not None:
        click.echo(PG_REFUSAL, err=True)
        raise SystemExit(EXIT_NOT_HERE)
    return settings.db


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_option
def backup(path: Path, as_json: bool) -> None:
    """Copy the live database to PATH (a new file, or a folder for mcs-<UTC time>.db) while MCS runs,
    then check the copy with PRAGMA integrity_check (env: MCS_DB). SQLite only: on PostgreSQL use pg_dump."""
    from mcs.engines.sqlite import backup as backup_store

    db = _db()
    try:
        summary = backup_store.backup(db, path)
    except OSError as exc:  # what the store did not foresee still ends in one line
        raise StoreError(f"backup failed: {exc}") from exc
    data = {"source": str(db), **summary.as_json()}
    emit(
        data,
        as_json,
        lambda d: f"backed up {d['source']} to {d['path']}: {_size(d['bytes'])}, {_counts(d)}; integrity ok",
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_option
def restore(path: Path, as_json: bool) -> None:
    """Put the backup PATH in place of the database, keeping the one it replaces aside as
    <db>.before-restore-<UTC time>. Refuses while any MCS process runs on it (env: MCS_DB). SQLite only: on
    PostgreSQL use pg_restore."""
    from mcs.engines.sqlite import backup as backup_store

    db = _db()
    try:
        summary, aside = backup_store.restore(db, path)
    except OSError as exc:
        raise StoreError(f"restore failed: {exc}") from exc
    data = {"source": str(path), **summary.as_json(), "replaced_kept_as": str(aside) if aside else None}
    emit(
        data,
        as_json,
        lambda d: (
            f"restored {d['source']} into {d['path']}: {_counts(d)}"
            + (f"; the database it replaced is kept as {d['replaced_kept_as']}" if d["replaced_kept_as"] else "")
        ),
    )
