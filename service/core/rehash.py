"""The stored products' hashes, kept in the code's canonical form (``CANONICAL_VERSION``).

When the canonical line changes (service/core/product.py), the row hashes stored before
no longer match what the parse worker computes, and every row would look changed. After
the SQL migrations, ``ensure_canonical`` compares the stored form's version with the
code's and, when they differ, recomputes both hashes of every product from its stored
values, in batches of ``BATCH`` by key (each batch its own transaction, only rows whose
hashes differ written), then records the version. Nothing here names a column: the
registry's ``stored_line`` does.
"""

from __future__ import annotations

import asyncpg

from service.core.logs import get_logger
from service.core.product import CANONICAL_VERSION, PRODUCT, Registry, row_hash, sku_hash

log = get_logger(__name__)

BATCH = 10_000

_UPDATE = (
    "UPDATE products p SET row_hash = u.row_hash, sku_hash = u.sku_hash"
    " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
    "  AS u(feed_id, sku, row_hash, sku_hash)"
    " WHERE p.feed_id = u.feed_id AND p.sku = u.sku"
)


async def ensure_canonical(conn: asyncpg.Connection, version: int = CANONICAL_VERSION) -> int:
    """Rehash the stored products if they are in another canonical form; returns how many
    rows were rewritten."""
    if await conn.fetchval("SELECT to_regclass('canonical_form') IS NULL"):
        return 0  # a schema migrated only part of the way (sql_dir of a test)
    stored = await conn.fetchval("SELECT version FROM canonical_form")
    if stored == version:
        return 0
    rewritten = await rehash_products(conn)
    await conn.execute("ALTER TABLE products ALTER COLUMN sku_hash SET NOT NULL")
    await conn.execute("UPDATE canonical_form SET version = $1", version)
    log.info("products_rehashed", rows=rewritten, canonical_version=version, was=stored)
    return rewritten


async def rehash_products(conn: asyncpg.Connection, registry: Registry = PRODUCT) -> int:
    """Recompute both hashes of every product, batch by batch; returns the rows changed."""
    query = (
        f"SELECT feed_id, sku, {registry.stored_list}, row_hash, sku_hash FROM products"
        f" WHERE (feed_id, sku) > ($1, $2) ORDER BY feed_id, sku LIMIT {BATCH}"
    )
    after = ("", "")
    total = 0
    while rows := await conn.fetch(query, *after):
        feeds, skus, rows_h, skus_h = [], [], [], []
        for r in rows:
            rh = row_hash(registry.stored_line(r))
            sh = sku_hash(r["sku"].encode())
            if rh != r["row_hash"] or sh != r["sku_hash"]:
                feeds.append(r["feed_id"])
                skus.append(r["sku"])
                rows_h.append(rh)
                skus_h.append(sh)
        if feeds:
            await conn.execute(_UPDATE, feeds, skus, rows_h, skus_h)
        total += len(feeds)
        after = (rows[-1]["feed_id"], rows[-1]["sku"])
    return total
