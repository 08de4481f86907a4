"""The conformance suite runs every test on both engines (docs/design/engines.md 6.1, River's driver tests):
the fixture `engine` is a migrated engine on a database of the test's own, SQLite's `Store` on a temp file
or a `PostgresEngine` on a fresh database of the session's server (`pg_cluster`), and `engine_factory`
opens more engines on that same database (two writers, as two replicas) for the race tests.

Select one engine with `-k sqlite` / `-k postgres` (the test ids end in `[sqlite]` / `[postgres]`) or
MCS_TEST_ENGINE=sqlite|postgres.
A test marked `sqlite_only` (it looks at SQLite internals) is deselected on PostgreSQL: it neither runs
nor counts as passed there. The PostgreSQL runs skip, saying how to install it, where the server is absent.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg

# Both engines, or only the one MCS_TEST_ENGINE names (as the rest of the suite's --engine will).
ENGINES = tuple(e for e in ("sqlite", "postgres") if os.environ.get("MCS_TEST_ENGINE", e) == e)
TEMPLATE = "mcs_conformance_template"  # the migrated database every PostgreSQL test copies


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: looks at SQLite internals; deselected on PostgreSQL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_pg = params.get("engine_factory") == "postgres"
        (drop if on_pg and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_template(pg_cluster: pg.PgCluster) -> str:
    """A database migrated once per session; each test gets a file copy of it (tens of ms)."""
    from mcs.engines.postgres.engine import PostgresEngine

    url = pg_cluster.create_database()
    engine = PostgresEngine(url, pool_size=1)
    try:
        engine.migrate()
    finally:
        engine.close()
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{TEMPLATE}"')
    return TEMPLATE


_copies = itertools.count()


def _copy(cluster: pg.PgCluster, template: str) -> str:
    """A new database copied from `template`; its URL. WAL_LOG, not pg.py's FILE_COPY: no checkpoint per
    copy, about half the time for a database this small (measured here: 0.3 s against 0.5-1.2 s)."""
    import psycopg

    name = f"c_{os.getpid()}_{next(_copies)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY WAL_LOG')
    return cluster.url(name)


@pytest.fixture(params=ENGINES)
def engine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens one more engine on this test's database at each call (`.first`: the migrated one)."""
    opened: list[Any] = []
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if request.param == "sqlite":
        from mcs.engines.sqlite.engine import Store

        path = tmp_path / "mcs.db"

        def make() -> Any:
            store = Store(path, synchronous="NORMAL")
            opened.append(store)
            return store

        make().migrate()
    else:
        from mcs.engines.postgres.engine import PostgresEngine

        cluster: pg.PgCluster = request.getfixturevalue("pg_cluster")
        url = _copy(cluster, request.getfixturevalue("pg_template"))

        def make() -> Any:
            engine = PostgresEngine(url, pool_size=4)
            opened.append(engine)
            return engine

        def cleanup() -> None:
            cluster.drop_database(url)

        make()
    yield _Factory(opened[0], make)
    for engine in opened:
        engine.close()
    cleanup()


class _Factory:
    """`engine_factory()` opens another engine on the test's database; `.first` is the migrated one."""

    def __init__(self, first: Any, make: Callable[[], Any]) -> None:
        self.first, self.make = first, make

    def __call__(self) -> Any:
        return self.make()


@pytest.fixture
def engine(engine_factory: _Factory) -> Any:
    """The test's migrated engine."""
    return engine_factory.first
