-- feedjobs schema. Applied once, recorded in schema_migrations (see service/migrate.py).

CREATE FUNCTION rfc3339(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

CREATE TABLE tenants (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants(id),
    key_hash    bytea NOT NULL UNIQUE,        -- sha256 of the key; the key itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One number sequence for feeds and jobs: FD00013 comes with JS00013 and JV00013.
CREATE SEQUENCE object_number_seq;

CREATE TABLE feeds (
    id                  text PRIMARY KEY,
    tenant_id           bigint NOT NULL REFERENCES tenants(id),
    name                text NOT NULL,
    s3_uri              text NOT NULL,
    source              text NOT NULL CHECK (source IN ('upload', 'register')),
    mode                text NOT NULL DEFAULT 'upsert' CHECK (mode IN ('upsert', 'snapshot')),
    delimiter           text NOT NULL DEFAULT ',',
    max_rejected_rows   integer,
    validation_job_id   text NOT NULL,
    submission_job_id   text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_loaded_at      timestamptz
);
CREATE INDEX feeds_tenant_idx ON feeds (tenant_id, id);

CREATE TABLE jobs (
    id              text PRIMARY KEY,
    seq             bigint NOT NULL,            -- the id's number: ordering and cursors
    tenant_id       bigint NOT NULL REFERENCES tenants(id),
    feed_id         text NOT NULL REFERENCES feeds(id),
    job_type        text NOT NULL CHECK (job_type IN ('submission', 'validation')),
    status          text NOT NULL CHECK (status IN
                        ('created', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    attempt         integer NOT NULL DEFAULT 0,
    options         json,
    message         text,
    progress        json,                       -- json, not jsonb: documents shown to clients
    retry_after     integer,                    -- keep the key order they were written in
    result          json,
    error           json,
    lease_until     timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    queued_at       timestamptz,
    published_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    version         bigint NOT NULL DEFAULT 1   -- bumped on every change: the ETag
);
CREATE INDEX jobs_tenant_list_idx ON jobs (tenant_id, created_at DESC, seq DESC);
CREATE INDEX jobs_active_idx ON jobs (status, lease_until) WHERE status IN ('queued', 'running');

-- The version (the ETag) moves only when something a client sees changes: lease renewals
-- and bookkeeping columns do not wake long polls or invalidate caches.
CREATE FUNCTION jobs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.status, NEW.attempt, NEW.message, NEW.progress::text, NEW.retry_after,
        NEW.result::text, NEW.error::text, NEW.started_at, NEW.finished_at)
       IS DISTINCT FROM
       (OLD.status, OLD.attempt, OLD.message, OLD.progress::text, OLD.retry_after,
        OLD.result::text, OLD.error::text, OLD.started_at, OLD.finished_at) THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_touch();

-- Long polls wait on this channel: the payload is the job id.
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('job_changed', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION jobs_notify();

CREATE TABLE job_runs (
    job_id          text NOT NULL REFERENCES jobs(id),
    attempt         integer NOT NULL,
    status          text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    requested_by    text NOT NULL,
    request_id      text,
    options         json NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz,
    result          json,
    error           json,
    -- what the file was when this run read it: the file-level skip compares these
    file_etag       text,
    file_size       bigint,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_errors (
    job_id      text NOT NULL REFERENCES jobs(id),
    attempt     integer NOT NULL,
    ordinal     integer NOT NULL,               -- file order
    line        integer NOT NULL,
    column_name text,
    code        text NOT NULL,
    message     text NOT NULL,
    raw         text NOT NULL,
    PRIMARY KEY (job_id, attempt, ordinal)
);
CREATE INDEX job_errors_order_idx ON job_errors (job_id, attempt, line, ordinal);

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    exchange     text NOT NULL,                 -- logical name: 'jobs' or 'jobs.events'
    routing_key  text NOT NULL,
    message_id   text NOT NULL,
    body         bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE idempotency_keys (
    tenant_id     bigint NOT NULL REFERENCES tenants(id),
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        integer NOT NULL,
    body          bytea NOT NULL,
    headers       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE products (
    feed_id          text NOT NULL,
    sku              text NOT NULL,
    name             text NOT NULL,
    description      text,
    price            numeric(12, 2) NOT NULL,
    currency         char(3) NOT NULL,
    quantity         integer NOT NULL,
    category         text,
    brand            text,
    gtin             text,
    updated_at       timestamptz,
    active           boolean NOT NULL,
    row_hash         uuid NOT NULL,             -- digest of the cleaned values
    first_seen_job   text NOT NULL,
    last_changed_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    PRIMARY KEY (feed_id, sku)
);

-- Every status change of a job becomes a `job.<status>` event in the outbox, in the same
-- transaction as the change itself: no code path can forget one, none can be lost.
CREATE FUNCTION jobs_status_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO outbox (exchange, routing_key, message_id, body)
    VALUES ('jobs.events', 'job.' || NEW.status, gen_random_uuid()::text,
            convert_to(json_build_object(
                'job_id', NEW.id, 'feed_id', NEW.feed_id, 'job_type', NEW.job_type,
                'status', NEW.status, 'attempt', NEW.attempt, 'result', NEW.result,
                'error', NEW.error, 'occurred_at', rfc3339(clock_timestamp()))::text, 'UTF8'));
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_status_event AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_status_event();
