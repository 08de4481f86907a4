"""Every test, and every process a test starts, gets a config home of its own: the CLI reads (and `mcs up`
writes) $XDG_CONFIG_HOME/mcs/config.toml, and a developer's own file must neither steer nor receive tests."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config: object) -> None:
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="mcs-test-config-")
    os.environ.pop("MCS_PROFILE", None)
