-- A snapshot never deletes by accident: a snapshot run that would delete more than this
-- share of the feed's live products fails TOO_MANY_DELETIONS and writes nothing (a file
-- cut short upstream would otherwise empty most of a catalogue). 1 allows any share.
-- The default is contracts.DEFAULT_MAX_DELETED_RATIO (tests/unit/test_settings_ids.py).
ALTER TABLE feeds ADD COLUMN max_deleted_ratio double precision NOT NULL DEFAULT 0.5
    CHECK (max_deleted_ratio >= 0 AND max_deleted_ratio <= 1);
