-- Row hashes move from PostgreSQL to the parse worker: xxh3-64 of the row's canonical line
-- (service/product.py), so that the worker can recognise an unchanged row by hashing the
-- line it read, and only rows it does not recognise reach PostgreSQL. Each product also
-- keeps the hash of its sku, which the worker uses to find a changed row's stored twin
-- (duplicates, snapshot deletes) without the skus themselves.
--
-- PostgreSQL cannot compute xxh3: after the migrations, the runner recomputes both hashes
-- of every stored product in Python (service/core/rehash.py, told so by 0012) and only
-- then makes sku_hash NOT NULL. The first run after the upgrade therefore still finds
-- unchanged rows unchanged.
ALTER TABLE products ADD COLUMN sku_hash bigint;

DROP FUNCTION product_hash(text, text, text, text, text, text, text, text, text, text, text);
DROP FUNCTION canonical_time(timestamptz);

-- A first load COPYs straight into products: last_changed_at is then when each row was
-- written (feed-format.md), not when the load's transaction began.
ALTER TABLE products ALTER COLUMN last_changed_at SET DEFAULT clock_timestamp();
