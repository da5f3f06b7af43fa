-- Row hashes become PostgreSQL's 64-bit hashtextextended() of the cleaned values joined by
-- U+001F, instead of md5(...)::uuid. Staging computes a hash for every row of every run:
-- md5 and the uuid cast cost about 1 s of database CPU per million rows, this about 0.1 s.
-- 64 bits are plenty for what the hash does, telling whether one sku's row changed (a
-- change goes unnoticed with probability 2^-64). The recipe lives here only; the staging
-- table computes it (consumer/stage.py), and consumer.validate.hash_text spells it in Python.

-- The canonical text of a timestamp, as the parse worker cleans it (consumer.rules).
CREATE FUNCTION canonical_time(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM ts)::bigint % 1000000 <> 0
                THEN to_char(ts AT TIME ZONE 'UTC', '.US') ELSE '' END
        || 'Z';

-- Every argument is the cleaned text as staged; NULL means absent (quantity 0, active true).
-- Written with || (immutable) rather than concat_ws (stable), so that PostgreSQL inlines it
-- into the staging table's generated column instead of calling a SQL function per row.
CREATE FUNCTION product_hash(
    sku text, name text, description text, price text, currency text, quantity text,
    category text, brand text, gtin text, updated_at text, active text
) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN hashtextextended(sku || E'\x1f' || name || E'\x1f' || coalesce(description, '')
        || E'\x1f' || price || E'\x1f' || currency || E'\x1f' || coalesce(quantity, '0')
        || E'\x1f' || coalesce(category, '') || E'\x1f' || coalesce(brand, '')
        || E'\x1f' || coalesce(gtin, '') || E'\x1f' || coalesce(updated_at, '')
        || E'\x1f' || coalesce(active, 'true'), 0);

-- Stored rows get the new hash from their stored values, so the first run after this
-- migration still finds unchanged rows unchanged.
ALTER TABLE products ALTER COLUMN row_hash TYPE bigint USING product_hash(
    sku, name, description, price::text, currency::text, quantity::text, category, brand,
    gtin, canonical_time(updated_at), active::text);
