-- What each run changed, recorded by the load in its own transaction (docs/api.md,
-- "Changes"). One row per product a run inserted, updated, revived or deleted; a first
-- (direct) load writes one row with no sku instead of a million: its changes are the
-- feed's products with first_seen_job/first_seen_run = that run, read when asked.
--
-- seq comes from one uncached sequence: the loads of one feed are serialised by the feed
-- lock until they commit, so within a feed seq grows in commit order, which is what the
-- change feed's cursor needs (a cached sequence would hand each session its own range).
ALTER TABLE products ADD COLUMN first_seen_run integer;

CREATE SEQUENCE product_change_seq;

CREATE TABLE product_changes (
    feed_id  text NOT NULL,
    seq      bigint NOT NULL DEFAULT nextval('product_change_seq'),
    job_id   text NOT NULL,
    attempt  integer NOT NULL,
    sku      text,                  -- NULL: a first load's every product ("inserted")
    change   text NOT NULL CHECK (change IN ('inserted', 'updated', 'revived', 'deleted')),
    columns  text[],                -- updated/revived: the columns and attributes.<key> that differ
    PRIMARY KEY (feed_id, seq)
);
-- No second index: a run's changes are the feed's seq range its change set names (the feed
-- lock keeps another run's out of it), read and purged by the primary key.

-- One row per run that changed its feed: its range of the change feed (first_seq..last_seq,
-- nothing else of the feed in it) and its counts
-- (updated excludes revived here; the job's result counts them together).
CREATE TABLE change_sets (
    job_id        text NOT NULL,
    attempt       integer NOT NULL,
    feed_id       text NOT NULL,
    first_seq     bigint NOT NULL,
    last_seq      bigint NOT NULL,
    inserted      integer NOT NULL,
    updated       integer NOT NULL,
    revived       integer NOT NULL,
    deleted       integer NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX change_sets_age ON change_sets (committed_at);

-- Retention deletes old changes; a cursor at or below a feed's horizon is gone (410).
CREATE TABLE product_change_horizon (
    feed_id text PRIMARY KEY,
    purged_through bigint NOT NULL
);

-- The columns (and attributes.<key>) two versions of a product differ in.
CREATE FUNCTION jsonb_changed_keys(a jsonb, b jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY(
        SELECT 'attributes.' || k FROM (
            SELECT key AS k FROM jsonb_each_text(coalesce(a, '{}'))
            UNION SELECT key FROM jsonb_each_text(coalesce(b, '{}'))) keys
        WHERE (coalesce(a, '{}') -> k) IS DISTINCT FROM (coalesce(b, '{}') -> k)
        ORDER BY k);

-- The job's webhook payload links to what its run changed.
CREATE OR REPLACE FUNCTION jobs_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, webhook_id, event_type, job_id, body)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, 'job.' || NEW.status,
           NEW.id,
           json_build_object(
               'type', 'job.' || NEW.status,
               'timestamp', rfc3339(clock_timestamp()),
               'data', json_build_object(
                   'job_id', NEW.id, 'feed_id', NEW.feed_id, 'job_type', NEW.job_type,
                   'status', NEW.status, 'attempt', NEW.attempt, 'result', NEW.result,
                   'error', NEW.error,
                   'links', json_build_object(
                       'job', '/jobs/' || NEW.id,
                       'errors', '/jobs/' || NEW.id || '/errors',
                       'changes', '/jobs/' || NEW.id || '/changes?run=' || NEW.attempt,
                       'products', '/feeds/' || NEW.feed_id || '/products')))::text
    FROM webhooks w
    WHERE w.tenant_id = NEW.tenant_id AND w.disabled_at IS NULL
      AND ('job.' || NEW.status) = ANY (w.events)
      AND (w.feed_ids IS NULL OR NEW.feed_id = ANY (w.feed_ids));
    RETURN NULL;
END $$;

-- One feed.changed event per run that changed the feed: on the events exchange (through
-- the outbox) and to the webhooks that asked for it, in the load's transaction.
CREATE FUNCTION feed_changed(p_job text, p_data json) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
    body json;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job;
    body := json_build_object('type', 'feed.changed', 'timestamp', rfc3339(clock_timestamp()),
                              'data', p_data);
    INSERT INTO outbox (exchange, routing_key, message_id, body)
    VALUES ('jobs.events', 'feed.changed', gen_random_uuid()::text,
            convert_to((p_data::jsonb || jsonb_build_object(
                'occurred_at', rfc3339(clock_timestamp())))::text, 'UTF8'));
    INSERT INTO webhook_deliveries (id, webhook_id, event_type, job_id, body)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, 'feed.changed', p_job,
           body::text
    FROM webhooks w
    WHERE w.tenant_id = j.tenant_id AND w.disabled_at IS NULL
      AND 'feed.changed' = ANY (w.events)
      AND (w.feed_ids IS NULL OR j.feed_id = ANY (w.feed_ids));
END $$;
