"""Event ids in commit order (docs/design/engines.md 5.3).

On PostgreSQL an identity value is taken at INSERT, not at COMMIT: a transaction that inserted an event
row with id 7 may commit after another's id 8 was read, and a reader that moved past 8 never sees 7. So the
audit triggers insert `event_log` rows with `id NULL` (and a `tmp` identity giving their insert order),
and `events_sequence` numbers the rows that have committed, one sequencer at a time (an advisory lock),
after the largest id given so far. Rows appear to readers in increasing id order with no gap filled
later. Idempotent: any replica may run it at any time; a run that numbered rows touches event_log, so
its commit notifies EVENTS and the other replicas' streams read the new ids.
"""

from __future__ import annotations

from mcs.engines.base import Tx

LOCK_SPACE = "events_sequence"

SEQUENCE_SQL = """
UPDATE event_log AS e SET id = n.base + n.rn
FROM (
    SELECT tmp, row_number() OVER (ORDER BY tmp) AS rn,
           (SELECT coalesce(max(id), 0) FROM event_log) AS base
    FROM event_log WHERE id IS NULL
) AS n
WHERE e.tmp = n.tmp
"""


def events_sequence(tx: Tx) -> int:
    """Number the committed event_log rows that have no id yet; how many it numbered (SQLite: 0)."""
    if tx.dialect != "postgres":
        return 0  # SQLite's ids already commit in order: one writer at a time
    tx.lock_name(LOCK_SPACE, "")
    # A statement started after the lock was granted sees every commit made before it (READ COMMITTED),
    # including the numbering of the sequencer that held the lock before.
    return int(tx.execute(SEQUENCE_SQL).rowcount)
