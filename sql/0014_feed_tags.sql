-- Feeds carry a description and tags (as the job-management API we replace has them); their
-- jobs inherit the tags: GET /jobs?tag= filters by the feed's.
ALTER TABLE feeds
    ADD COLUMN description text,
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX feeds_tags ON feeds USING gin (tags);
