"""PostgreSQL's own SQL for the maintenance area: overrides of mcs.engines.sql.maintenance where the dialects differ."""

from __future__ import annotations

import json
from typing import Any

from mcs.engines.sql.maintenance import MaintenanceSql


def _plan_lines(node: dict[str, Any], lines: list[str]) -> None:
    """One line per node of an EXPLAIN (FORMAT JSON) plan: its type, table and index, depth first."""
    index = node.get("Index Name")
    relation = node.get("Relation Name")
    lines.append(f"{node.get('Node Type', '')} {relation or ''} {f'USING {index}' if index else ''}".strip())
    for child in node.get("Plans") or []:
        _plan_lines(child, lines)


class MaintenancePg(MaintenanceSql):
    """The shared retention statements are PostgreSQL's (no INDEXED BY, ids through jsonb); only the plans
    are read differently: EXPLAIN (FORMAT JSON) with sequential scans discouraged, one line per plan node."""

    def retention_query_plans(self) -> dict[str, list[str]]:
        plans: dict[str, list[str]] = {}
        self.run("SET LOCAL enable_seqscan = off")
        for name, sql in self.RETENTION_SQL.items():
            params = ("[]",) if "jsonb_array_elements_text" in sql else (0,) * sql.count("?")
            plan = self.value("EXPLAIN (FORMAT JSON) " + sql, params)
            doc = json.loads(plan) if isinstance(plan, str) else plan
            lines: list[str] = []
            _plan_lines(doc[0]["Plan"], lines)
            plans[name] = lines
        return plans
