"""`mcs backup` and `mcs restore` through click's runner on real SQLite files: what they refuse, each with
one line and nothing changed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcs.cli import main
from mcs.engines.sqlite.engine import Store
from mcs.state import outbox as outbox_store

pytestmark = pytest.mark.sqlite_only  # backup/restore of the SQLite file


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data" / "mcs.db"
    monkeypatch.setenv("MCS_DB", str(path))
    store = Store(path)
    store.migrate()
    store.write(
        lambda conn: conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES ('ann', 'h', 'whsec_x', 0)"
        )
    )
    store.close()
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_backup_then_restore_round_trip(db, tmp_path):
    code, out, _ = run("backup", str(tmp_path / "b.db"), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["agents"] == 1 and summary["integrity"] == "ok" and summary["source"] == str(db)
    assert (tmp_path / "b.db").stat().st_mode & 0o777 == 0o600  # it holds the agents' secrets' hashes
    code, out, _ = run("backup", str(tmp_path))  # a folder: a new timestamped file in it
    assert code == 0 and "1 agents" in out and "integrity ok" in out
    assert len(list(tmp_path.glob("mcs-*.db"))) == 1

    code, out, err = run("restore", str(tmp_path / "b.db"))
    assert code == 0, err
    assert "1 agents" in out and "kept as" in out
    assert len(list(db.parent.glob("mcs.db.before-restore-*"))) == 1


def test_backup_refuses_to_overwrite_and_needs_a_database(db, tmp_path, monkeypatch):
    target = tmp_path / "b.db"
    target.write_text("precious")
    code, _, err = run("backup", str(target))
    assert code == 1 and err.count("\n") == 1 and "already exists" in err
    assert target.read_text() == "precious"
    monkeypatch.setenv("MCS_DB", str(tmp_path / "nothing" / "mcs.db"))
    code, _, err = run("backup", str(tmp_path / "c.db"))
    assert code == 1 and "no database at" in err
    assert not (tmp_path / "nothing").exists()


def _untouched(db: Path) -> bool:
    return not list(db.parent.glob("mcs.db.before-restore-*")) and Store(db).read(
        lambda conn: conn.execute("SELECT count(*) FROM agents").fetchone()[0] == 1
    )


def test_restore_refuses_while_a_heartbeat_is_recent(db, tmp_path):
    """A process in another container is invisible in /proc here: its recent heartbeat row says it runs."""
    run("backup", str(tmp_path / "b.db"))
    store = Store(db)
    store.write(outbox_store.beat, process="dispatcher", pid=4242, started_at=time.time(), now=time.time())
    store.close()
    code, _, err = run("restore", str(tmp_path / "b.db"))
    assert code == 1 and err.count("\n") == 1
    assert "refusing to restore while MCS runs" in err and "dispatcher (heartbeat 0 s ago, pid 4242)" in err
    assert _untouched(db)
    # Once it stopped cleanly its row says so (its last beat kept, for `mcs check` and the alert on its age).
    store = Store(db)
    store.write(outbox_store.mark_stopped, process="dispatcher", pid=4242)
    [beat] = [b for b in store.read(outbox_store.heartbeats) if b.name == "dispatcher"]
    assert beat.pid == 0 and beat.beat_at > time.time() - 60
    store.close()
    code, _, err = run("restore", str(tmp_path / "b.db"))
    assert code == 0, err


def test_restore_refuses_a_damaged_or_foreign_file(db, tmp_path):
    assert run("backup", str(tmp_path / "b.db"))[0] == 0
    damaged = tmp_path / "damaged.db"
    data = bytearray((tmp_path / "b.db").read_bytes())
    page = 4096
    data[3 * page : 4 * page] = os.urandom(page)  # a page of the agents table's b-tree overwritten
    damaged.write_bytes(bytes(data))
    code, _, err = run("restore", str(damaged))
    assert code == 1 and err.count("\n") == 1, err
    assert "integrity" in err or "not a readable SQLite database" in err or "malformed" in err
    (tmp_path / "junk.db").write_text("not a database")
    code, _, err = run("restore", str(tmp_path / "junk.db"))
    assert code == 1 and "not a readable SQLite database" in err
    assert _untouched(db)


def test_restore_refuses_a_backup_from_a_newer_mcs(db, tmp_path):
    run("backup", str(tmp_path / "b.db"))
    store = Store(tmp_path / "b.db")
    store.write(
        lambda conn: conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('mcs', '0099_future', 'x')"
        )
    )
    store.close()
    code, _, err = run("restore", str(tmp_path / "b.db"))
    assert code == 1 and "written by a newer MCS (migration 0099_future is unknown here)" in err
    assert _untouched(db)


def test_restore_into_an_empty_data_folder(db, tmp_path, monkeypatch):
    run("backup", str(tmp_path / "b.db"))
    fresh = tmp_path / "new-home" / "data" / "mcs.db"
    monkeypatch.setenv("MCS_DB", str(fresh))
    code, out, err = run("restore", str(tmp_path / "b.db"), "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["agents"] == 1 and answer["replaced_kept_as"] is None
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["mcs.db", "mcs.db-writelock"]
