"""The SQLite engine: one file in WAL mode shared by the processes of one machine. `engine` (Store,
AsyncStore), `connection` (connect, the writer lock, errors), `migrations` (0001-...), `backup`, `wake`
(the inotify CommitWatcher), `tx` (SqliteTx) and one module of dialect overrides per area."""
