-- Retention (issue 12): old rejections and run history are deleted in small batches, and
-- uploaded file versions beyond the newest few are removed from S3. A submission job keeps
-- its row and summary; file_purged_at says its file is gone.
ALTER TABLE jobs ADD COLUMN file_purged_at timestamptz;
CREATE INDEX job_runs_finished_idx ON job_runs (finished_at) WHERE finished_at IS NOT NULL;
