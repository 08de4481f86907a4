"""Every test, and every process a test starts, gets a config home of its own: the CLI reads (and `mcs up`
writes) $XDG_CONFIG_HOME/mcs/config.toml, and a developer's own file must neither steer nor receive tests."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import engine, pg


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=engine.ENGINES,
        default=None,
        help=f"the storage engine the suites run on (default: ${engine.ENV} or {engine.DEFAULT})",
    )


def _engine(config: pytest.Config) -> str:
    return str(config.getoption("--engine", None) or engine.from_env())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests about the other engine's internals (not skipped: they do not run, nor count)."""
    other = "sqlite_only" if _engine(config) == "postgres" else "postgres_only"
    keep = [item for item in items if item.get_closest_marker(other) is None]
    dropped = [item for item in items if item.get_closest_marker(other) is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[_DESELECTED] = (other, len(dropped))


_DESELECTED = pytest.StashKey[tuple[str, int]]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"mcs engine: {_engine(config)}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    marker, count = config.stash.get(_DESELECTED, ("", 0))
    terminalreporter.write_line(f"mcs engine: {_engine(config)}; {count} {marker} test(s) deselected")


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background by a non-interactive shell (a CI runner's `cmd &`), pytest inherits SIGINT
    # ignored, and so would every process a test starts (an ignored signal survives exec): the tests that
    # press Ctrl-C on `mcs task watch` or `mcs up` would wait forever. A handler is reset to the default
    # at exec, so each child gets Ctrl-C as a user's terminal would give it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="mcs-test-config-")
    os.environ.pop("MCS_PROFILE", None)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.PgCluster]:
    """One throwaway PostgreSQL server for the session (skips, saying how to install it, when absent)."""
    why = pg.missing()
    if why:
        pytest.skip(why)
    cluster = pg.PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: pg.PgCluster) -> Iterator[str]:
    """The URL of an empty database of this test's own on the session's server."""
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture(scope="session")
def engine_name(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgres": `--engine`, else $MCS_TEST_ENGINE, else sqlite."""
    return _engine(request.config)


@pytest.fixture
def database_urls(request: pytest.FixtureRequest, engine_name: str) -> Iterator[Callable[[str], str | None]]:
    """On PostgreSQL, a function from a name (a test's "database file") to the URL of a migrated database
    of this test's own, made on first use and dropped at the end: one name, one database. On SQLite it
    answers None (the test uses its file)."""
    if engine_name != "postgres":
        yield lambda name: None
        return
    cluster: pg.PgCluster = request.getfixturevalue("pg_cluster")
    made: dict[str, str] = {}

    def url(name: str) -> str:
        if name not in made:
            made[name] = cluster.create_database(template=cluster.migrated_template())
        return made[name]

    try:
        yield url
    finally:
        for made_url in made.values():
            cluster.drop_database(made_url)


@pytest.fixture
def database_url(database_urls: Callable[[str], str | None]) -> str | None:
    """This test's migrated PostgreSQL database (None on SQLite): what `settings` fixtures put in
    `database_url`."""
    return database_urls("mcs.db")
