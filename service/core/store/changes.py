"""What runs changed (``product_changes``, ``change_sets``): recorded by the load in its
transaction (``service.core.store.products.merge`` writes the rows; this module the first
load's single row and the run's set), read as a run's change list and as a feed's change
feed, and purged by retention.

A position in a list is ``(seq, sku)``: past every change up to ``seq``, or, inside a first
load's change (one row standing for all the products it inserted, read in sku order), past
that ``sku``. ``sku`` is ``""`` when the change at ``seq`` is passed whole.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from service.core.contracts import FeedChanged, encode

Position = tuple[int, str]
START: Position = (0, "")


class Change(msgspec.Struct, frozen=True):
    seq: int
    job_id: str
    attempt: int
    sku: str
    change: str  # inserted, updated, revived, deleted
    columns: list[str] | None
    position: Position  # the position just past this change


class ChangeSet(msgspec.Struct, frozen=True):
    """One run's changes: its cursor range and counts."""

    feed_id: str
    job_id: str
    attempt: int
    first_seq: int
    last_seq: int
    inserted: int
    updated: int
    revived: int
    deleted: int


async def first_load(conn: asyncpg.Connection, feed_id: str, job_id: str, attempt: int) -> None:
    """A first load inserted every product it wrote: one row says so (read by expanding it
    to the products with this first_seen_job and first_seen_run)."""
    await conn.execute(
        "INSERT INTO product_changes (feed_id, job_id, attempt, sku, change)"
        " VALUES ($1, $2, $3, NULL, 'inserted')",
        feed_id,
        job_id,
        attempt,
    )


async def last_seq(conn: asyncpg.Connection, feed_id: str) -> int:
    """The feed's last change so far (0: none); asked under the feed lock, before a load
    writes, everything of the feed after it is that load's."""
    seq: int | None = await conn.fetchval(
        "SELECT max(seq) FROM product_changes WHERE feed_id = $1", feed_id
    )
    return seq or 0


async def close_set(
    conn: asyncpg.Connection,
    feed_id: str,
    job_id: str,
    attempt: int,
    after: int,
    counts: dict[str, int],
) -> ChangeSet | None:
    """Record the run's change set: its range of the feed's change feed (every change of
    the feed after ``after``, the feed's ``last_seq`` before it wrote) and its counts.
    None: nothing changed."""
    row = await conn.fetchrow(
        "SELECT (SELECT seq FROM product_changes WHERE feed_id = $1 AND seq > $2"
        "   ORDER BY seq LIMIT 1) AS first_seq,"
        " (SELECT seq FROM product_changes WHERE feed_id = $1 AND seq > $2"
        "   ORDER BY seq DESC LIMIT 1) AS last_seq",
        feed_id,
        after,
    )
    if row["first_seq"] is None:
        return None
    made = ChangeSet(
        feed_id=feed_id,
        job_id=job_id,
        attempt=attempt,
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        inserted=counts["inserted"],
        updated=counts["updated"],
        revived=counts["revived"],
        deleted=counts["deleted"],
    )
    await conn.execute(
        "INSERT INTO change_sets (feed_id, job_id, attempt, first_seq, last_seq, inserted,"
        " updated, revived, deleted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        *msgspec.structs.astuple(made),
    )
    return made


async def announce(conn: asyncpg.Connection, job_id: str, event: FeedChanged) -> None:
    """One ``feed.changed``: on the events exchange (outbox) and to its webhooks."""
    await conn.execute("SELECT feed_changed($1, $2::json)", job_id, encode(event).decode())


class RunState(msgspec.Struct, frozen=True):
    status: str
    finished_at: datetime | None
    changed: bool  # completed, not a dry run, and its result counts products written


async def run_of(db: asyncpg.Pool, job_id: str, attempt: int) -> RunState | None:
    row = await db.fetchrow(
        "SELECT status, finished_at, status = 'completed'"
        "   AND NOT coalesce((result->>'dry_run')::boolean, false)"
        "   AND coalesce((result->>'inserted')::bigint, 0)"
        "     + coalesce((result->>'updated')::bigint, 0)"
        "     + coalesce((result->>'deleted')::bigint, 0) > 0 AS changed"
        " FROM job_runs WHERE job_id = $1 AND attempt = $2",
        job_id,
        attempt,
    )
    return None if row is None else RunState(**dict(row))


async def change_set(db: asyncpg.Pool, job_id: str, attempt: int) -> ChangeSet | None:
    row = await db.fetchrow(
        "SELECT feed_id, job_id, attempt, first_seq, last_seq, inserted, updated, revived,"
        " deleted FROM change_sets WHERE job_id = $1 AND attempt = $2",
        job_id,
        attempt,
    )
    return None if row is None else ChangeSet(**dict(row))


async def horizon(db: asyncpg.Pool, feed_id: str) -> int:
    """The feed's last change purged by retention (0: none): older cursors are gone."""
    seq: int | None = await db.fetchval(
        "SELECT purged_through FROM product_change_horizon WHERE feed_id = $1", feed_id
    )
    return seq or 0


async def head(db: asyncpg.Pool, feed_id: str) -> Position:
    """The position past the feed's last change."""
    seq: int | None = await db.fetchval(
        "SELECT max(seq) FROM product_changes WHERE feed_id = $1", feed_id
    )
    return (seq or await horizon(db, feed_id), "")


_FIELDS = "seq, job_id, attempt, sku, change, columns"


async def run_changes(
    db: asyncpg.Pool, made: ChangeSet, after: Position, limit: int
) -> list[Change]:
    """Up to ``limit`` changes of one run (its set's range), after ``after``, in the order
    it made them."""
    return await _page(
        db,
        made.feed_id,
        f"SELECT {_FIELDS} FROM product_changes WHERE feed_id = $1"
        " AND seq >= greatest($2::bigint, $4) AND seq <= $3 ORDER BY seq LIMIT $5",
        (made.feed_id, made.first_seq, made.last_seq),
        after,
        limit,
    )


async def feed_changes(db: asyncpg.Pool, feed_id: str, after: Position, limit: int) -> list[Change]:
    """Up to ``limit`` changes of the feed after ``after``, in commit order."""
    return await _page(
        db,
        feed_id,
        f"SELECT {_FIELDS} FROM product_changes WHERE feed_id = $1 AND seq >= $2"
        " ORDER BY seq LIMIT $3",
        (feed_id,),
        after,
        limit,
    )


async def _page(
    db: asyncpg.Pool,
    feed_id: str,
    query: str,
    args: tuple[object, ...],
    after: Position,
    limit: int,
) -> list[Change]:
    """The rows of ``query`` (from seq ``$n``, at most ``$n+1``), a first load's row read as
    its products; from ``after``, ``limit`` changes in all."""
    out: list[Change] = []
    seq, sku = after
    from_seq = seq if sku else seq + 1  # a first load's row passed part way: read it again
    while len(out) < limit:
        rows = await db.fetch(query, *args, from_seq, limit - len(out))
        if not rows:
            break
        for r in rows:
            if r["sku"] is not None:
                out.append(_change(r, r["sku"], r["change"], r["columns"], ""))
            else:
                skus = await _first_loaded(
                    db,
                    feed_id,
                    r["job_id"],
                    r["attempt"],
                    sku if r["seq"] == seq else "",
                    limit - len(out),
                )
                out += [_change(r, s, "inserted", None, s) for s in skus]
                if len(out) >= limit:
                    return out
                if out and out[-1].seq == r["seq"]:  # the first load's row passed whole
                    out[-1] = msgspec.structs.replace(out[-1], position=(r["seq"], ""))
            if len(out) >= limit:
                return out
        from_seq = rows[-1]["seq"] + 1
    return out


def _change(
    r: asyncpg.Record, sku: str, change: str, columns: list[str] | None, within: str
) -> Change:
    """A change of row ``r``: ``within`` a first load's row, the sku it is at ('': whole)."""
    return Change(
        seq=r["seq"],
        job_id=r["job_id"],
        attempt=r["attempt"],
        sku=sku,
        change=change,
        columns=columns,
        position=(r["seq"], within),
    )


async def _first_loaded(
    db: asyncpg.Pool, feed_id: str, job_id: str, attempt: int, after: str, limit: int
) -> list[str]:
    rows = await db.fetch(
        "SELECT sku FROM products WHERE feed_id = $1 AND first_seen_job = $2"
        " AND first_seen_run = $3 AND sku > $4 ORDER BY sku LIMIT $5",
        feed_id,
        job_id,
        attempt,
        after,
        limit,
    )
    return [r["sku"] for r in rows]


async def delete_old_changes(conn: asyncpg.Connection, before: datetime, batch: int) -> int:
    """Changes of runs that committed before ``before`` (one batch), oldest set first. The
    feed's horizon moves past a set before its first row goes, so a cursor into it is
    answered 410, never with part of it."""
    gone = 0
    async with conn.transaction():
        sets = await conn.fetch(
            "SELECT feed_id, job_id, attempt, first_seq, last_seq FROM change_sets"
            " WHERE committed_at < $1 ORDER BY committed_at LIMIT 10",
            before,
        )
        for s in sets:
            await conn.execute(
                "INSERT INTO product_change_horizon (feed_id, purged_through) VALUES ($1, $2)"
                " ON CONFLICT (feed_id) DO UPDATE SET purged_through ="
                " greatest(product_change_horizon.purged_through, excluded.purged_through)",
                s["feed_id"],
                s["last_seq"],
            )
            status = await conn.execute(
                "DELETE FROM product_changes WHERE ctid = ANY(ARRAY(SELECT ctid"
                " FROM product_changes WHERE feed_id = $1 AND seq BETWEEN $2 AND $3 LIMIT $4))",
                s["feed_id"],
                s["first_seq"],
                s["last_seq"],
                batch - gone,
            )
            deleted = int(status.split()[-1])
            gone += deleted
            if gone >= batch:
                break
            await conn.execute(
                "DELETE FROM change_sets WHERE job_id = $1 AND attempt = $2",
                s["job_id"],
                s["attempt"],
            )
    return gone
