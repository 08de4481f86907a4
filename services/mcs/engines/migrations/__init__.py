"""Schema migrations for both engines from one list (`catalog.MIGRATIONS`; docs/design/engines.md, section 3).

The PostgreSQL engine calls `apply_postgres(conn)` and `pending_postgres(conn)`; `describe` tells what a
migrated database holds, engine-independently, for the drift test and `schema.json`.
"""

from mcs.engines.migrations.catalog import MIGRATIONS, Migration, apply_postgres, pending_postgres

__all__ = ["MIGRATIONS", "Migration", "apply_postgres", "pending_postgres"]
