"""SQL of the a2a area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class A2aSql(SqlTx):
    """Implements mcs.engines.areas.a2a.A2aTx; dialect-specific methods are overridden per engine."""
