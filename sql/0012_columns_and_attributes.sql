-- Real merchant feeds: a feed's header mapping ({"their header": "our column"}) and what
-- becomes of the columns that map to none; those kept are each product's attributes
-- (jsonb, values as text), part of its canonical line and so of its row hash.
ALTER TABLE feeds
    ADD COLUMN column_map jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN unknown_columns text NOT NULL DEFAULT 'keep'
        CHECK (unknown_columns IN ('keep', 'ignore', 'reject'));
ALTER TABLE products ADD COLUMN attributes jsonb;

-- The canonical form the stored row hashes were computed in (service/core/product.py's
-- CANONICAL_VERSION): migrate rehashes every product when the code's differs.
CREATE TABLE canonical_form (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  integer NOT NULL
);
-- Rows stored before 0007 still lack their sku hash: they are rehashed after the migrations
-- (version 0), which then makes sku_hash NOT NULL; otherwise the hashes are version 1's.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM products WHERE sku_hash IS NULL) THEN
        INSERT INTO canonical_form (version) VALUES (0);
    ELSE
        ALTER TABLE products ALTER COLUMN sku_hash SET NOT NULL;
        INSERT INTO canonical_form (version) VALUES (1);
    END IF;
END $$;
