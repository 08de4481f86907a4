"""The state machine and authorisation, engine-free: functions that take a `Tx` (mcs.engines.base) and
models, decide, and return models; the api and the processes render and send them.

Call them through an engine, as the api does: `await db.write(state.tasks.claim, task_id=..., ...)`.
Nothing here imports a database driver or an engine package (`import-linter` checks it in CI).
"""
