-- 0022_task_counts_slots, PostgreSQL side (the SQLite side, m0022_task_counts_slots, changes nothing: its
-- writes are serial, so one counter row per group costs no waiting there).
-- task_counts (0017) kept one row per (state, priority, capabilities, route), updated by a trigger in the
-- transaction of every task state change and held until that transaction's commit was on disk: every two
-- state changes of similar tasks waited for each other, across every replica (bench/engines.py measured
-- 176 ms of statement time per task, 5.7 backends waiting on those rows on average, 18 ms with the
-- triggers off). Each group now has up to 16 rows, one per connection slot (the backend's pid modulo 16):
-- concurrent transactions on different connections touch different rows. A row's n is that slot's net
-- change and may be negative (a task counted in by one connection, out by another); readers sum a
-- group's rows, as they did already, and the dispatcher's "groups with queued tasks" asks sum(n) > 0.

ALTER TABLE task_counts ADD COLUMN slot bigint NOT NULL DEFAULT 0;
ALTER TABLE task_counts DROP CONSTRAINT task_counts_pkey;
ALTER TABLE task_counts ADD PRIMARY KEY (state, priority, capabilities, route, slot);

CREATE OR REPLACE FUNCTION mcs_task_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (state, priority, capabilities, route, n, slot)
        VALUES (NEW.state, NEW.priority, NEW.capabilities, NEW.route, 1, pg_backend_pid() % 16)
        ON CONFLICT (state, priority, capabilities, route, slot) DO UPDATE SET n = task_counts.n + 1;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mcs_task_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (state, priority, capabilities, route, n, slot)
        VALUES (OLD.state, OLD.priority, OLD.capabilities, OLD.route, -1, pg_backend_pid() % 16)
        ON CONFLICT (state, priority, capabilities, route, slot) DO UPDATE SET n = task_counts.n - 1;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mcs_task_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (state, priority, capabilities, route, n, slot)
        VALUES (OLD.state, OLD.priority, OLD.capabilities, OLD.route, -1, pg_backend_pid() % 16)
        ON CONFLICT (state, priority, capabilities, route, slot) DO UPDATE SET n = task_counts.n - 1;
    INSERT INTO task_counts (state, priority, capabilities, route, n, slot)
        VALUES (NEW.state, NEW.priority, NEW.capabilities, NEW.route, 1, pg_backend_pid() % 16)
        ON CONFLICT (state, priority, capabilities, route, slot) DO UPDATE SET n = task_counts.n + 1;
    RETURN NULL;
END $$;
