"""Migration 0007's Python step: every stored product gets the row and sku hash the parse
worker computes (service/core/product.py), recomputed from its stored values."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.core.product import NAMES, canonical_line, row_hash, sku_hash, stored_text

BATCH = 10_000


async def rehash_products(conn: asyncpg.Connection) -> int:
    """Recompute both hashes of every product (inside the migration's transaction)."""
    await conn.execute(
        "CREATE TEMP TABLE rehash (feed_id text, sku text, row_hash bigint, sku_hash bigint)"
        " ON COMMIT DROP"
    )
    batch: list[tuple[Any, ...]] = []
    total = 0
    query = f"SELECT feed_id, {', '.join(NAMES)} FROM products"
    async for rec in conn.cursor(query, prefetch=BATCH):
        line = canonical_line([stored_text(rec[name]) for name in NAMES]).encode()
        batch.append((rec["feed_id"], rec["sku"], row_hash(line), sku_hash(rec["sku"].encode())))
        if len(batch) >= BATCH:
            total += await _flush(conn, batch)
    total += await _flush(conn, batch)
    await conn.execute(
        "UPDATE products p SET row_hash = r.row_hash, sku_hash = r.sku_hash FROM rehash r"
        " WHERE p.feed_id = r.feed_id AND p.sku = r.sku"
    )
    await conn.execute("ALTER TABLE products ALTER COLUMN sku_hash SET NOT NULL")
    return total


async def _flush(conn: asyncpg.Connection, batch: list[tuple[Any, ...]]) -> int:
    if not batch:
        return 0
    await conn.copy_records_to_table("rehash", records=batch)
    count = len(batch)
    batch.clear()
    return count
