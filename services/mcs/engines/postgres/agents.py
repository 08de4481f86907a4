"""PostgreSQL's own SQL for the agents area: overrides of mcs.engines.sql.agents where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.agents import AgentSql


class AgentPg(AgentSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    ALL_AFTER: ClassVar[str] = "OFFSET ?"

    def agent_changes(self, after: int | None) -> tuple[set[str], int]:
        # agent_events ids are taken at INSERT, so one committing late with a lower id would be passed over.
        # event_log ids are given after commit by the sequencer (docs/design/engines.md 5.3): read those.
        # Rows not numbered yet are not seen yet, and will be, with ids above every id read so far.
        latest = int(self.value("SELECT coalesce(max(id), 0) FROM event_log"))
        if after is None or latest <= after:
            return set(), latest
        rows = self.rows(
            "SELECT DISTINCT a.agent FROM event_log l JOIN agent_events a ON a.id = l.ref"
            " WHERE l.stream = 'agent' AND l.id > ?",
            (after,),
        )
        return {r[0] for r in rows}, latest
