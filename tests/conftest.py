"""Every test, and every process a test starts, gets a config home of its own: the CLI reads (and `mcs up`
writes) $XDG_CONFIG_HOME/mcs/config.toml, and a developer's own file must neither steer nor receive tests."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator

import pytest

from tests import pg


def pytest_configure(config: object) -> None:
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
