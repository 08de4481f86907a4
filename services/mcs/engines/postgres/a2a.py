"""PostgreSQL's own SQL for the a2a area: overrides of mcs.engines.sql.a2a where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.a2a import A2aSql


class A2aPg(A2aSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
