"""The no-op task bench/peers.py runs on huey, RQ and Celery, for the one peer named in PEERS_BENCH_SYSTEM.

Imported by that peer's worker processes (and by bench/peerload.py, the submitter). Only that peer's library is
imported, so a worker's memory holds no other peer's code. The task's first line takes the time; its last
line appends `tag i started finished` to the file PEERS_BENCH_MARKS with one O_APPEND write (no fsync): a
few microseconds, the same for every peer. MCS's counterpart is agentsim's webhook handler, which takes the
time as the webhook's body has been read.
"""

from __future__ import annotations

import os
import time
from typing import Any

SYSTEM = os.environ.get("PEERS_BENCH_SYSTEM", "")
MARKS = os.environ.get("PEERS_BENCH_MARKS", "")
_fd = -1
_pid = 0


def noop(tag: str, i: int) -> None:
    started = time.time()
    global _fd, _pid
    if _pid != os.getpid():  # first task in this process (or in a forked child)
        _fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _pid = os.getpid()
    os.write(_fd, f"{tag} {i} {started:.6f} {time.time():.6f}\n".encode())


huey: Any = None
app: Any = None
if SYSTEM == "huey":
    from huey import SqliteHuey

    # huey's defaults otherwise: WAL, the SQLite library's default synchronous (FULL here, as MCS's
    # MCS_SYNCHRONOUS), None results not stored.
    huey = SqliteHuey("peers", filename=os.environ["PEERS_BENCH_HUEY_DB"])
    huey_noop = huey.task(name="noop")(noop)
elif SYSTEM == "celery":
    from celery import Celery

    app = Celery("peertasks", broker=os.environ["PEERS_BENCH_REDIS_URL"])
    # No result backend (the task returns nothing); acks_late stays off (Celery's default).
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
    celery_noop = app.task(name="peertasks.noop")(noop)
