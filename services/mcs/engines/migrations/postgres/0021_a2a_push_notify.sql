-- 0021_a2a_push_notify, PostgreSQL side (the SQLite side, m0021_a2a_push_notify, changes nothing: SQLite's
-- notifier sees every commit through PRAGMA data_version).
-- The a2a_push_on_state trigger adds outbox rows (kind a2a_push) whenever a task with push configs changes
-- state. The transaction that changed the state notifies the channels of the tables its own statements
-- wrote (mcs_tasks here), and cannot see what a trigger wrote: without this, a notifier waiting on
-- mcs_outbox would send the push only at its next idle pass (up to a second late). The trigger now
-- notifies mcs_outbox itself when it added a row. PostgreSQL delivers it only if the transaction commits,
-- and folds it with an identical one the transaction sends at COMMIT.

CREATE OR REPLACE FUNCTION mcs_a2a_push_on_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)
        SELECT 'a2a_push', 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'a2a:' || c.owner, NEW.id,
               json_build_object('config_id', c.id, 'from', OLD.state, 'state', NEW.state, 'at', NEW.updated_at)::text,
               NEW.updated_at, NEW.updated_at, NEW.updated_at
        FROM a2a_push_configs c WHERE c.task_id = NEW.id;
    IF FOUND THEN
        PERFORM pg_notify('mcs_outbox', '');
    END IF;
    RETURN NULL;
END $$;
