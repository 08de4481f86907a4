"""`mcs api`: serve the app with Hypercorn on MCS_HOST:MCS_PORT (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from mcs import metrics
from mcs.api import create_app
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.process import setup_logging
from mcs.state import stats as stats_store

log = logging.getLogger("mcs.api")

FILE_CHECK_INTERVAL = 1.0  # seconds between checks that the database path still names the file opened


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None  # one log line per request costs more than the request; metrics count them
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn's 100 overflows when a few thousand agents connect at once: the kernel drops the SYNs
    # and clients retry after 1 s, 3 s, 7 s. Linux caps it at net.core.somaxconn (4096 since 5.4).
    config.backlog = settings.api_backlog
    # A connection that sends nothing for the read timeout is closed (a request stalled in its body);
    # one still in its headers, or idle, after the keep-alive time (from the start: a slowloris).
    # Long polls are cut to the keep-alive time too; see Settings.api_keep_alive for why.
    config.read_timeout = math.ceil(settings.api_read_timeout) or None  # Hypercorn takes whole seconds
    config.keep_alive_timeout = settings.api_keep_alive
    config.graceful_timeout = 5
    return config


def main(settings: Settings | None = None) -> None:
    setup_logging()
    settings = (settings or Settings.from_env()).with_admin_token_file()
    store: Any = open_engine(settings, process="api")  # SQLite's Store, or PostgreSQL with MCS_DATABASE_URL
    applied = store.migrate()
    if applied:
        log.info("migrated", extra={"action": "migrate", "applied": applied})
    metrics.init_task_series(store.read(stats_store.task_types))
    if not settings.admin_token:
        log.warning(
            "no admin token: set MCS_ADMIN_TOKEN (admin endpoints answer 401 until then)",
            extra={"action": "no_admin_token"},
        )
    app = create_app(settings, store)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("api listening", extra={"action": "start", "url": f"http://{settings.host}:{settings.port}"})
        shutdown: Any = stop.wait
        watch = asyncio.create_task(watch_file(stop))
        try:
            await serve(app, hypercorn_config(settings), shutdown_trigger=shutdown)
        finally:
            watch.cancel()

    async def watch_file(stop: asyncio.Event) -> None:
        """Stop serving once the database file is deleted or replaced (seen here, or by a refused write),
        so the process exits and is restarted on the file now at the path."""
        while not stop.is_set():
            await asyncio.sleep(FILE_CHECK_INTERVAL)
            if not await asyncio.to_thread(store.same_file):
                log.error("database file deleted or replaced; exiting", extra={"action": "database_replaced"})
                stop.set()

    try:
        try:
            import uvloop

            uvloop.run(run())
        except ImportError:
            asyncio.run(run())
    finally:
        store.close()
    if store.replaced is not None:  # why serving stopped: DatabaseReplaced, exit 75, to be restarted
        store.check_file()
