-- Signed webhooks (Standard Webhooks): a tenant's endpoints, and one delivery per (status
-- event, matching endpoint), written by the same trigger-time transaction as the job's
-- status change itself: a delivery can no more be lost than the change can. The consumer's
-- deliverer (consumer/webhooks.py) sends them, at least once, with retries; the delivery's
-- id is the `webhook-id` of every attempt.
CREATE SEQUENCE webhook_seq;
CREATE TABLE webhooks (
    id              text PRIMARY KEY,
    tenant_id       bigint NOT NULL REFERENCES tenants (id),
    url             text NOT NULL,
    events          text[] NOT NULL,
    feed_ids        text[],                    -- NULL: every feed of the tenant
    secret          text NOT NULL,             -- whsec_<base64>
    previous_secret text,                      -- still signed with until previous_until
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    disabled_reason text
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id) WHERE disabled_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,          -- msg_<32 hex>: the webhook-id header
    seq             bigserial UNIQUE,
    webhook_id      text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    job_id          text,
    body            text NOT NULL,             -- the exact bytes signed and sent
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- also the lease of one in flight
    last_status     integer,                   -- the receiver's HTTP status
    last_error      text,
    last_latency_ms integer,
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, webhook_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, seq);

CREATE FUNCTION jobs_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
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
                       'products', '/feeds/' || NEW.feed_id || '/products')))::text
    FROM webhooks w
    WHERE w.tenant_id = NEW.tenant_id AND w.disabled_at IS NULL
      AND ('job.' || NEW.status) = ANY (w.events)
      AND (w.feed_ids IS NULL OR NEW.feed_id = ANY (w.feed_ids));
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_webhooks AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_webhooks();
