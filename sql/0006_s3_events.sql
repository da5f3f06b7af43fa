-- Feeds that follow S3 (issue 12): `watch` is the s3:// key, or prefix ending in '/' with
-- an optional glob in its last part, whose new object versions the feed loads. The newest
-- event seen per (feed, key) is kept, so duplicated or reordered events never load an
-- older version over a newer one, nor the same version twice. `run_pending` marks a feed
-- whose newest version arrived while its job was busy: the scheduler runs it once idle.
ALTER TABLE feeds ADD COLUMN watch text, ADD COLUMN run_pending boolean NOT NULL DEFAULT false;
CREATE INDEX feeds_watch_idx ON feeds (watch) WHERE watch IS NOT NULL;

CREATE TABLE feed_object_versions (
    feed_id    text NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
    key        text NOT NULL,
    sequencer  text NOT NULL,
    etag       text,
    size       bigint,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feed_id, key)
);
CREATE INDEX feeds_run_pending_idx ON feeds (id) WHERE run_pending;
