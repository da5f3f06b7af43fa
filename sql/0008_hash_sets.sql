-- Each feed's stored hashes, packed: the (row_hash, sku_hash) pair of every live product, as
-- 16 bytes (two little-endian int64) a product, in parts of a few megabytes. A re-run reads
-- them in tens of milliseconds instead of scanning the feed's rows (docs/benchmarks.md).
--
-- It is a cache that is never wrong:
-- * every statement that writes products drops the sets it may have made stale (the
--   trigger below): inside a load, the set of the feed being loaded (the load says which
--   by the transaction-local setting feedjobs.loading_feed); anywhere else, every set;
-- * a load writes its feed's new set last, in its own transaction, after its last write to
--   products, so a set that exists is the one of the last committed write;
-- * a write outside a load (a migration, a hand-written statement) first takes the
--   exclusive form of the advisory lock that every load holds in shared form, so it never
--   interleaves with a load that is reading or writing a set;
-- * UNLOGGED: no WAL for a cache; a crash (or a replica's promotion) leaves the table
--   empty, and the next run of each feed reads its hashes from products instead.
CREATE UNLOGGED TABLE feed_hash_sets (
    feed_id text    NOT NULL,
    part    integer NOT NULL,
    pairs   bytea   NOT NULL,
    PRIMARY KEY (feed_id, part)
);
-- Random bytes do not compress: store them as they are, without trying.
ALTER TABLE feed_hash_sets ALTER COLUMN pairs SET STORAGE EXTERNAL;

CREATE FUNCTION products_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    loading text := current_setting('feedjobs.loading_feed', true);
BEGIN
    IF coalesce(loading, '') = '' THEN
        -- (the two-key form: its own lock space, apart from the feeds' bigint locks)
        PERFORM pg_advisory_xact_lock(1718379876, 1);
        DELETE FROM feed_hash_sets;
    ELSE
        DELETE FROM feed_hash_sets WHERE feed_id = loading;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER products_written
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION products_written();
