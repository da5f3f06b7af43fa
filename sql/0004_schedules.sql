-- Feeds that run themselves (issue 12): one schedule per feed, a cron expression in a time
-- zone or a fixed interval, with the options its runs get. next_run_at is when the single
-- active scheduler (consumer/scheduler.py) next requests a run.
CREATE TABLE feed_schedules (
    feed_id        text PRIMARY KEY REFERENCES feeds(id) ON DELETE CASCADE,
    cron           text,
    timezone       text NOT NULL DEFAULT 'UTC',
    every_seconds  integer CHECK (every_seconds > 0),
    options        json NOT NULL DEFAULT '{}',
    next_run_at    timestamptz NOT NULL,
    last_run_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_seconds IS NULL))
);
CREATE INDEX feed_schedules_due_idx ON feed_schedules (next_run_at);
