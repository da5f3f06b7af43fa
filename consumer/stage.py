"""The staging table of one run, and the merge that writes only what changed.

Everything here runs inside the run's transaction: staging, de-duplication, the merge and
the job's completion commit together or not at all.
"""

from __future__ import annotations

import asyncpg
import msgspec

STAGE_COLUMNS = [
    "line",
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "quantity",
    "category",
    "brand",
    "gtin",
    "updated_at",
    "active",
]

# The row hash is computed from the cleaned text the parse worker sends, by the same recipe
# as consumer.validate.hash_text (a unit test holds the two together).
_HASH = (
    "md5(sku || E'\\x1f' || name || E'\\x1f' || coalesce(description, '') || E'\\x1f' ||"
    " price || E'\\x1f' || currency || E'\\x1f' || quantity || E'\\x1f' ||"
    " coalesce(category, '') || E'\\x1f' || coalesce(brand, '') || E'\\x1f' ||"
    " coalesce(gtin, '') || E'\\x1f' || coalesce(updated_at, '') || E'\\x1f' || active)::uuid"
)

_VALUES = (
    "s.sku, s.name, s.description, s.price::numeric(12,2), s.currency, s.quantity::integer,"
    " s.category, s.brand, s.gtin, s.updated_at::timestamptz, s.active::boolean, s.row_hash"
)


class MergeCounts(msgspec.Struct):
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def stage_name(job_id: str, attempt: int) -> str:
    return f"stage_{job_id.lower()}_{attempt}"


async def create_stage(conn: asyncpg.Connection, table: str) -> None:
    # UNLOGGED: no WAL for rows that live one transaction; created in the run's transaction,
    # so a rollback (or a crash) takes it away with everything else.
    await conn.execute(
        f"CREATE UNLOGGED TABLE {table} ("
        " line integer NOT NULL, sku text NOT NULL, name text NOT NULL, description text,"
        " price text NOT NULL, currency text NOT NULL, quantity text NOT NULL, category text,"
        " brand text, gtin text, updated_at text, active text NOT NULL,"
        f" row_hash uuid GENERATED ALWAYS AS ({_HASH}) STORED)"
    )


async def duplicates(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    """Later occurrences of a sku (the first one wins), in file order, removed from staging."""
    await conn.execute(f"ANALYZE {table}")
    rows: list[asyncpg.Record] = await conn.fetch(
        f"WITH dup AS (SELECT sku FROM {table} GROUP BY sku HAVING count(*) > 1),"
        f" ranked AS (SELECT s.line, s.sku, min(s.line) OVER (PARTITION BY s.sku) AS first_line"
        f"  FROM {table} s JOIN dup USING (sku))"
        f" DELETE FROM {table} t USING ranked r WHERE t.line = r.line AND r.line > r.first_line"
        f" RETURNING t.line, t.sku, r.first_line, t.name, t.price, t.currency"
    )
    return sorted(rows, key=lambda r: r["line"])


async def merge(
    conn: asyncpg.Connection, table: str, feed_id: str, job_id: str, *, snapshot: bool
) -> MergeCounts:
    counts = MergeCounts()
    feed_has_rows = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE feed_id = $1)", feed_id
    )
    if feed_has_rows:
        # Changed rows (hash differs) and revived ones; equal rows are not touched at all.
        status = await conn.execute(
            f"UPDATE products p SET name = s.name, description = s.description,"
            f" price = s.price::numeric(12,2), currency = s.currency,"
            f" quantity = s.quantity::integer, category = s.category, brand = s.brand,"
            f" gtin = s.gtin, updated_at = s.updated_at::timestamptz,"
            f" active = s.active::boolean, row_hash = s.row_hash, last_changed_at = now(),"
            f" deleted_at = NULL"
            f" FROM {table} s WHERE p.feed_id = $1 AND p.sku = s.sku"
            f" AND (p.row_hash <> s.row_hash OR p.deleted_at IS NOT NULL)",
            feed_id,
        )
        counts.updated = int(status.split()[-1])
        status = await conn.execute(
            f"INSERT INTO products (sku, name, description, price, currency, quantity, category,"
            f" brand, gtin, updated_at, active, row_hash, feed_id, first_seen_job)"
            f" SELECT {_VALUES}, $1, $2 FROM {table} s WHERE NOT EXISTS"
            f" (SELECT 1 FROM products p WHERE p.feed_id = $1 AND p.sku = s.sku)",
            feed_id,
            job_id,
        )
        counts.inserted = int(status.split()[-1])
        if snapshot:
            status = await conn.execute(
                f"UPDATE products p SET deleted_at = now(), last_changed_at = now()"
                f" WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
                f" AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.sku = p.sku)",
                feed_id,
            )
            counts.deleted = int(status.split()[-1])
    else:
        status = await conn.execute(
            f"INSERT INTO products (sku, name, description, price, currency, quantity, category,"
            f" brand, gtin, updated_at, active, row_hash, feed_id, first_seen_job)"
            f" SELECT {_VALUES}, $1, $2 FROM {table} s",
            feed_id,
            job_id,
        )
        counts.inserted = int(status.split()[-1])
    return counts


async def dry_counts(
    conn: asyncpg.Connection, table: str, feed_id: str, *, snapshot: bool
) -> MergeCounts:
    """What ``merge`` would do, counted without writing a single product."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE p.sku IS NULL) AS inserted,"
        f" count(*) FILTER (WHERE p.sku IS NOT NULL AND (p.row_hash <> s.row_hash"
        f"   OR p.deleted_at IS NOT NULL)) AS updated"
        f" FROM {table} s LEFT JOIN products p ON p.feed_id = $1 AND p.sku = s.sku",
        feed_id,
    )
    deleted = 0
    if snapshot:
        deleted = await conn.fetchval(
            f"SELECT count(*) FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.sku = p.sku)",
            feed_id,
        )
    return MergeCounts(inserted=row["inserted"], updated=row["updated"], deleted=deleted)
