"""The products table as a load writes it: the feed lock, the stored hashes, staging, and
the merge that writes only what changed (the consumer's ``consumer.load`` drives it).

Everything here runs inside the run's transaction: staging, de-duplication, the merge and
the job's completion commit together or not at all. Column lists and types come from the
one declaration of the product row (``service.core.product``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from decimal import Decimal

import asyncpg
import msgspec

from service.core.product import PRODUCT, Registry
from service.core.store.rows import many


class MergeCounts(msgspec.Struct):
    inserted: int = 0
    updated: int = 0  # revived ones included
    deleted: int = 0
    revived: int = 0  # of the updated, those that were deleted (counted when recorded)


# The advisory lock (two-key form) of sql/0008_hash_sets.sql's trigger.
OUTSIDE_WRITES_LOCK = "1718379876, 1"


def ident(name: str) -> str:
    """A quoted SQL identifier: the one way a name goes into a statement."""
    return '"' + name.replace('"', '""') + '"'


def stage_name(job_id: str, attempt: int) -> str:
    return f"stage_{job_id.lower()}_{attempt}"


def _count(status: str) -> int:
    return int(status.split()[-1])


async def lock_feed(conn: asyncpg.Connection, feed_id: str) -> None:
    """Two runs of one feed never load at once; different feeds go in parallel. The load
    also says which feed it loads (its writes to products then drop only that feed's
    packed hash set) and holds the shared form of the lock a write to products outside a
    load takes first (sql/0008_hash_sets.sql)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7)),"
        f" pg_advisory_xact_lock_shared({OUTSIDE_WRITES_LOCK}),"
        " set_config('feedjobs.loading_feed', $1, true)",
        feed_id,
    )


async def feed_is_empty(conn: asyncpg.Connection, feed_id: str) -> bool:
    """No product at all, live or deleted: a first load, which goes straight in."""
    return not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE feed_id = $1)", feed_id
    )


async def copy_stored_hashes(
    conn: asyncpg.Connection, feed_id: str, output: Callable[[bytes], Awaitable[None]]
) -> None:
    """The row and sku hash of every live product of the feed, as binary COPY chunks."""
    await conn.copy_from_query(
        "SELECT row_hash, sku_hash FROM products WHERE feed_id = $1 AND deleted_at IS NULL",
        feed_id,
        output=output,
        format="binary",
    )


async def create_stage(conn: asyncpg.Connection, table: str, registry: Registry = PRODUCT) -> None:
    # UNLOGGED: no WAL for rows that live one transaction; created in the run's transaction,
    # so a rollback (or a crash) takes it away with everything else.
    await conn.execute(registry.stage_ddl(ident(table)))


async def copy_rows(
    conn: asyncpg.Connection,
    table: str | None,
    source: AsyncIterable[bytes],
    registry: Registry = PRODUCT,
) -> None:
    """COPY the worker's lines into the stage ``table``, or (None) straight into products."""
    if table is None:
        await conn.copy_to_table(
            "products", source=source, columns=list(registry.direct_columns), format="csv"
        )
    else:
        columns = list(registry.stage_columns)
        await conn.copy_to_table(table, source=source, columns=columns, format="csv")


async def drop_stage(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {ident(table)}")


class Duplicate(msgspec.Struct, frozen=True):
    """A later occurrence of a sku: its line, the first line, and its cleaned values."""

    line: int
    sku: str
    first_line: int
    name: str
    price: Decimal
    currency: str


async def duplicates(conn: asyncpg.Connection, table: str) -> list[Duplicate]:
    """Later occurrences of a sku (the first one wins), in file order, removed from staging.
    Only the staged path needs this: a recognising worker rejects duplicates itself."""
    await conn.execute(f"ANALYZE {ident(table)} (sku)")
    # A plain SELECT may run in parallel; the DELETE (which may not) only runs when needed.
    repeated = await conn.fetch(f"SELECT sku FROM {ident(table)} GROUP BY sku HAVING count(*) > 1")
    if not repeated:
        return []
    t = ident(table)
    rows = await conn.fetch(
        f"WITH ranked AS (SELECT line, sku, min(line) OVER (PARTITION BY sku) AS first_line"
        f"  FROM {t} WHERE sku = ANY($1::text[]))"
        f" DELETE FROM {t} t USING ranked r WHERE t.line = r.line AND r.line > r.first_line"
        f" RETURNING t.line, t.sku, r.first_line, t.name, t.price, t.currency",
        [r["sku"] for r in repeated],
    )
    return sorted(many(Duplicate, rows), key=lambda d: d.line)


async def merge(
    conn: asyncpg.Connection,
    table: str,
    feed_id: str,
    run: tuple[str, int],
    *,
    snapshot: bool,
    gone: list[int] | None,
    few: bool,
    fresh: bool,
    record: bool,
    registry: Registry = PRODUCT,
) -> MergeCounts:
    """Write the staged rows that differ from the stored ones (changed, revived, new) and,
    for a snapshot, delete the products the file no longer holds: ``gone`` (their row
    hashes) when the worker recognised rows, else every live sku not staged.

    ``run``: the (job id, attempt) writing. ``record``: each product written also becomes
    a row of ``product_changes`` (its sku, how it changed and, for an update, which columns
    and attributes differ), written by the same statement as the product.

    ``few``: the stage is small beside the feed (a re-run that changed a few rows). The
    merge then looks each staged sku up by the primary key. PostgreSQL's planner prefers
    to hash-join the feed's whole table, which costs 5x more for 1% of a million rows.
    ``fresh``: some staged sku may have no product yet (else the INSERT is skipped)."""
    counts = MergeCounts()
    job_id, attempt = run
    if few:
        await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
    # A recognising worker stages only rows to write; on the staged path the hash decides.
    set_list = f"{registry.update_set}, last_changed_at = statement_timestamp(), deleted_at = NULL"
    if record:
        # The stored row ``o`` is read once, by the key, and updated by its ctid (a TID
        # scan): its old values give the change list what changed, at no second lookup.
        counts.updated, counts.revived = await _recorded(
            conn,
            f"UPDATE products p SET {set_list} FROM {ident(table)} d"
            " JOIN products o ON o.feed_id = $1 AND o.sku = d.sku"
            " WHERE p.ctid = o.ctid AND (o.row_hash <> d.row_hash OR o.deleted_at IS NOT NULL)"
            " RETURNING p.sku, CASE WHEN o.deleted_at IS NULL THEN 'updated' ELSE 'revived'"
            f" END AS change, {registry.changed_columns} AS columns",
            feed_id,
            run,
        )
    else:
        counts.updated = _count(
            await conn.execute(
                f"UPDATE products p SET {set_list} FROM {ident(table)} d WHERE p.feed_id = $1"
                " AND p.sku = d.sku AND (p.row_hash <> d.row_hash OR p.deleted_at IS NOT NULL)",
                feed_id,
            )
        )
    if fresh:
        insert = (
            f"INSERT INTO products ({registry.column_list}, feed_id, first_seen_job,"
            f" first_seen_run, last_changed_at) SELECT {registry.column_list}, $1, $2, $3,"
            f" statement_timestamp() FROM {ident(table)} d WHERE NOT EXISTS"
            " (SELECT 1 FROM products p WHERE p.feed_id = $1 AND p.sku = d.sku)"
        )
        if record:
            counts.inserted, _ = await _recorded(
                conn,
                f"{insert} RETURNING sku, 'inserted' AS change, NULL::text[] AS columns",
                feed_id,
                run,
            )
        else:
            counts.inserted = _count(await conn.execute(insert, feed_id, job_id, attempt))
    if few:
        await conn.execute("RESET enable_hashjoin; RESET enable_mergejoin")
    if snapshot:
        counts.deleted = await _delete_gone(conn, table, feed_id, gone, run if record else None)
    return counts


async def _recorded(
    conn: asyncpg.Connection, write: str, feed_id: str, run: tuple[str, int], *args: object
) -> tuple[int, int]:
    """Run ``write`` (``$1`` the feed, ``$2``/``$3`` the run, ``$4``... ``args``; RETURNING
    sku, change and columns) and record what it returns as the run's changes: (rows, of
    them revived)."""
    # $2 and $3 must appear in the statement for their types: the write may not use them.
    row = await conn.fetchrow(
        f"WITH w AS ({write}), c AS (INSERT INTO product_changes"
        " (feed_id, job_id, attempt, sku, change, columns)"
        " SELECT $1, $2::text, $3::integer, sku, change, columns FROM w RETURNING change)"
        " SELECT count(*) AS n, count(*) FILTER (WHERE change = 'revived') AS revived FROM c",
        feed_id,
        *run,
        *args,
    )
    return int(row["n"]), int(row["revived"])


_DELETE = (
    "UPDATE products p SET deleted_at = statement_timestamp(),"
    " last_changed_at = statement_timestamp()"
)


async def _delete_gone(
    conn: asyncpg.Connection,
    table: str,
    feed_id: str,
    gone: list[int] | None,
    run: tuple[str, int] | None,
) -> int:
    """Delete what a snapshot no longer holds; ``run``: record each as the run's change."""
    if gone is None:
        write = (
            f"{_DELETE} WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)"
        )
        args: tuple[object, ...] = ()
    elif gone:
        write = (
            f"{_DELETE} FROM unnest(${4 if run else 2}::bigint[]) AS g(row_hash)"
            " WHERE p.feed_id = $1 AND p.deleted_at IS NULL AND p.row_hash = g.row_hash"
        )
        args = (gone,)
    else:
        return 0
    if run is None:
        return _count(await conn.execute(write, feed_id, *args))
    returning = f"{write} RETURNING p.sku, 'deleted' AS change, NULL::text[] AS columns"
    deleted, _ = await _recorded(conn, returning, feed_id, run, *args)
    return deleted


async def snapshot_deletions(conn: asyncpg.Connection, table: str, feed_id: str) -> tuple[int, int]:
    """(products a snapshot of the stage would delete, the feed's live products), counted
    before anything is written (the staged path's TOO_MANY_DELETIONS check)."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE NOT EXISTS"
        f"   (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)) AS gone, count(*) AS live"
        f" FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL",
        feed_id,
    )
    return int(row["gone"]), int(row["live"])


async def live_count(conn: asyncpg.Connection, feed_id: str) -> int:
    """The feed's live products."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM products WHERE feed_id = $1 AND deleted_at IS NULL", feed_id
        )
    )


async def dry_counts(
    conn: asyncpg.Connection, table: str, feed_id: str, *, snapshot: bool, gone: list[int] | None
) -> MergeCounts:
    """What ``merge`` would do, counted without writing a single product."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE p.sku IS NULL) AS inserted,"
        f" count(*) FILTER (WHERE p.sku IS NOT NULL AND (p.row_hash <> s.row_hash"
        f"   OR p.deleted_at IS NOT NULL)) AS updated"
        f" FROM {ident(table)} s LEFT JOIN products p ON p.feed_id = $1 AND p.sku = s.sku",
        feed_id,
    )
    deleted = 0
    if snapshot and gone is not None:
        deleted = len(gone)
    elif snapshot:
        deleted = await conn.fetchval(
            f"SELECT count(*) FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)",
            feed_id,
        )
    return MergeCounts(inserted=row["inserted"], updated=row["updated"], deleted=deleted)


async def mark_loaded(conn: asyncpg.Connection, feed_id: str) -> None:
    await conn.execute(
        "UPDATE feeds SET last_loaded_at = statement_timestamp() WHERE id = $1", feed_id
    )
