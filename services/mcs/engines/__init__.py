"""Storage engines: one package per database, behind the protocols of `mcs.engines.base`.

Layers (docs/design/engines.md): the api and the processes call `mcs.state` (the state machine and
authorisation, engine-free, models in and out), which calls a `Tx` (one transaction's data access). Each
engine implements `Tx`: the SQL both engines share lives in `mcs.engines.sql` mixins written against the
primitives of `SqlTx`, and what differs lives in `mcs.engines.sqlite` and `mcs.engines.postgres`. Nothing
outside `mcs.engines` (and, until it moves here, `mcs.store`) imports a database driver.
"""
