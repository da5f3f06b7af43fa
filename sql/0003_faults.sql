-- Surviving faults (issue 8).

-- The retry budget belongs to one run request, not to the job's whole history. `losses`
-- counts the consumers lost (lease expired) while running the current request, and
-- `interruptions` the times a dependency (PostgreSQL, S3) cut it off. A new request from a
-- client, an upstream service or a schedule starts both at 0; a shutdown re-queue spends
-- neither.
ALTER TABLE jobs
    ADD COLUMN losses integer NOT NULL DEFAULT 0,
    ADD COLUMN interruptions integer NOT NULL DEFAULT 0;

-- A feed can be run only once its file is stored: an upload that breaks off leaves the feed
-- `upload_failed` (a new PUT /feeds/{id}/file mends it), never a runnable job without a file.
ALTER TABLE feeds
    ADD COLUMN status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('receiving', 'ready', 'upload_failed'));

-- What a tenant may register by s3_uri, besides its own upload prefix: set by the operator
-- (python -m service allow-s3-prefix). A prefix is a whole s3://bucket/ or s3://bucket/path/.
CREATE TABLE tenant_s3_prefixes (
    tenant_id   bigint NOT NULL REFERENCES tenants(id),
    prefix      text NOT NULL CHECK (prefix ~ '^s3://[^/]+/(.*/)?$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, prefix)
);

-- updated_at is when the change happened, not when its transaction began (a 10 s load used
-- to show the second it started).
CREATE OR REPLACE FUNCTION jobs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.status, NEW.attempt, NEW.message, NEW.progress::text, NEW.retry_after,
        NEW.result::text, NEW.error::text, NEW.started_at, NEW.finished_at)
       IS DISTINCT FROM
       (OLD.status, OLD.attempt, OLD.message, OLD.progress::text, OLD.retry_after,
        OLD.result::text, OLD.error::text, OLD.started_at, OLD.finished_at) THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
