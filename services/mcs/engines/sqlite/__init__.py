"""The SQLite engine: one file in WAL mode shared by the processes of one machine (today's `mcs.store`,
moving here piece by piece)."""
