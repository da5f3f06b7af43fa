"""Feeds and their submission/validation jobs."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import asyncpg
import msgspec

from service.core import ids
from service.core.contracts import DEFAULT_MAX_DELETED_RATIO, FeedSummary, FeedView
from service.core.store import lifecycle
from service.core.store.rows import FeedRow, columns, lock_by_id, one

F = TypeVar("F", bound=FeedSummary)
FEED_ROW = columns(FeedRow)


FEED_VIEW_SQL = """
SELECT f.id AS feed_id, f.name, f.status, f.s3_uri, f.mode, f.delimiter,
       rfc3339(f.created_at) AS created_at,
       f.validation_job_id, f.submission_job_id, f.max_rejected_rows, f.max_deleted_ratio,
       f.encoding, f.column_map::text AS columns, f.unknown_columns, f.description, f.tags,
       rfc3339(f.last_loaded_at) AS last_loaded_at, f.watch,
       (SELECT count(*) FROM products p WHERE p.feed_id = f.id AND p.deleted_at IS NULL)
           AS product_count
FROM feeds f WHERE f.id = $1 AND f.tenant_id = $2
"""


FEED_LIST_COLUMNS = """
    f.id AS feed_id, f.name, f.status, f.s3_uri, f.mode, f.delimiter,
    rfc3339(f.created_at) AS created_at, f.created_at AS created_ts,
    f.validation_job_id, f.submission_job_id, f.max_rejected_rows, f.max_deleted_ratio,
    f.encoding, f.column_map::text AS columns, f.unknown_columns, f.description, f.tags,
    rfc3339(f.last_loaded_at) AS last_loaded_at, f.watch
"""
FEED_FILTER = (
    "f.tenant_id = $1 AND ($2::text IS NULL OR f.status = $2)"
    " AND ($3::text[] IS NULL OR CASE WHEN $4 THEN f.tags @> $3 ELSE f.tags && $3 END)"
)


async def list_feeds(
    db: asyncpg.Pool,
    tenant_id: int,
    *,
    status: str | None,
    cursor: tuple[datetime, str] | None,
    limit: int,
    newest_first: bool = True,
    with_total: bool = False,
    tags: list[str] | None = None,
    all_tags: bool = False,
) -> tuple[list[tuple[FeedSummary, datetime]], int | None]:
    """A page of a tenant's feeds in creation order, and, if asked, how many match in all.
    No product counts: a count per feed is a scan of its products. Each feed comes with its
    creation time at full precision (the next page's cursor)."""
    total: int | None = None
    if with_total:
        total = await db.fetchval(
            f"SELECT count(*) FROM feeds f WHERE {FEED_FILTER}",
            tenant_id,
            status,
            tags,
            all_tags,
        )
    order, after = ("DESC", "<") if newest_first else ("ASC", ">")
    after_ts, after_id = cursor if cursor else (None, "")
    rows = await db.fetch(
        f"SELECT {FEED_LIST_COLUMNS} FROM feeds f WHERE {FEED_FILTER}"
        f" AND ($5::timestamptz IS NULL OR (f.created_at, f.id) {after} ($5, $6))"
        f" ORDER BY f.created_at {order}, f.id {order} LIMIT $7",
        tenant_id,
        status,
        tags,
        all_tags,
        after_ts,
        after_id,
        limit,
    )
    return [(_feed(FeedSummary, r), r["created_ts"]) for r in rows], total


def _feed(cls: type[F], record: asyncpg.Record) -> F:
    """A feed as the API shows it (its mapping read as JSON)."""
    names = cls.__struct_fields__
    fields = {k: v for k, v in record.items() if k in names}
    fields["columns"] = msgspec.json.decode(fields["columns"])
    return cls(**fields)


async def next_number(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT nextval('object_number_seq')")
    return n


async def create_feed(
    conn: asyncpg.Connection,
    *,
    tenant_id: int,
    name: str | None,
    s3_uri: str | None,
    source: str,
    mode: str,
    delimiter: str,
    max_rejected_rows: int | None,
    submission_status: lifecycle.JobStart,
    max_deleted_ratio: float = DEFAULT_MAX_DELETED_RATIO,
    encoding: str = "utf-8",
    columns: dict[str, str] | None = None,
    unknown_columns: str = "keep",
    description: str | None = None,
    tags: list[str] | None = None,
    submission_result: str | None = None,
) -> tuple[str, str, str, int]:
    """Insert a feed with its JS and JV jobs; returns (feed_id, js_id, jv_id, number).

    ``s3_uri`` may be None for uploads: the key is derived from the new ids.
    """
    n = await next_number(conn)
    feed_id = ids.make_id(ids.FEED, n)
    js_id = ids.make_id(ids.SUBMISSION, n)
    jv_id = ids.make_id(ids.VALIDATION, n)
    await conn.execute(
        "INSERT INTO feeds (id, tenant_id, name, s3_uri, source, mode, delimiter,"
        " max_rejected_rows, validation_job_id, submission_job_id, status, max_deleted_ratio,"
        " encoding, column_map, unknown_columns, description, tags) VALUES ($1, $2, $3, $4, $5,"
        "  $6, $7, $8, $9, $10, CASE WHEN $4 = '' THEN 'receiving' ELSE 'ready' END, $11, $12,"
        "  $13::jsonb, $14, $15, $16)",
        feed_id,
        tenant_id,
        name or feed_id,
        s3_uri or "",
        source,
        mode,
        delimiter,
        max_rejected_rows,
        jv_id,
        js_id,
        max_deleted_ratio,
        encoding,
        msgspec.json.encode(columns or {}).decode(),
        unknown_columns,
        description,
        sorted(set(tags or [])),
    )
    await lifecycle.create_job(
        conn,
        js_id,
        n,
        tenant_id,
        feed_id,
        "submission",
        submission_status,
        result=submission_result,
    )
    await lifecycle.create_job(conn, jv_id, n, tenant_id, feed_id, "validation", "created")
    return feed_id, js_id, jv_id, n


async def new_submission(conn: asyncpg.Connection, tenant_id: int, feed_id: str) -> tuple[str, int]:
    """A new JS job for a new version of an uploaded feed's file."""
    n = await next_number(conn)
    js_id = ids.make_id(ids.SUBMISSION, n)
    await lifecycle.create_job(
        conn, js_id, n, tenant_id, feed_id, "submission", "running", message="Receiving upload"
    )
    return js_id, n


async def get_feed(
    conn: asyncpg.Connection | asyncpg.Pool, feed_id: str, tenant_id: int
) -> FeedView | None:
    """The tenant's feed as the API shows it (without its schedule: ``schedules.get``)."""
    record = await conn.fetchrow(FEED_VIEW_SQL, feed_id, tenant_id)
    return None if record is None else _feed(FeedView, record)


async def update_feed(
    conn: asyncpg.Connection, feed_id: str, tenant_id: int, fields: dict[str, object]
) -> bool:
    """Set the given fields (name, description, tags) of the tenant's feed."""
    allowed = {"name", "description", "tags"}
    assert set(fields) <= allowed
    if not fields:
        return await owned(conn, feed_id, tenant_id)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
    status: str = await conn.execute(
        f"UPDATE feeds SET {sets} WHERE id = $1 AND tenant_id = $2",
        feed_id,
        tenant_id,
        *fields.values(),
    )
    return status != "UPDATE 0"


async def owned(db: asyncpg.Connection | asyncpg.Pool, feed_id: str, tenant_id: int) -> bool:
    found = await db.fetchval(
        "SELECT 1 FROM feeds WHERE id = $1 AND tenant_id = $2", feed_id, tenant_id
    )
    return found is not None


async def get_feed_row(conn: asyncpg.Connection | asyncpg.Pool, feed_id: str) -> FeedRow | None:
    return one(FeedRow, await conn.fetchrow(f"SELECT {FEED_ROW} FROM feeds WHERE id = $1", feed_id))


async def lock_feed_row(
    conn: asyncpg.Connection, feed_id: str, tenant_id: int | None = None
) -> FeedRow | None:
    """The feed (the tenant's, if one is named), locked until the transaction ends."""
    return await lock_by_id(conn, FeedRow, "feeds", feed_id, tenant_id)


async def set_file(conn: asyncpg.Connection, feed_id: str, s3_uri: str, js_id: str) -> None:
    """A file version is stored: the feed reads it from now on, and can be run."""
    await conn.execute(
        "UPDATE feeds SET s3_uri = $2, submission_job_id = $3, status = 'ready' WHERE id = $1",
        feed_id,
        s3_uri,
        js_id,
    )


async def set_watch(conn: asyncpg.Connection, feed_id: str, watch: str) -> None:
    await conn.execute("UPDATE feeds SET watch = $2 WHERE id = $1", feed_id, watch)


async def upload_failed(conn: asyncpg.Connection, feed_id: str) -> None:
    """An upload broke off: a feed that never had a file becomes ``upload_failed``; one that
    had keeps its previous version."""
    await conn.execute(
        "UPDATE feeds SET status = 'upload_failed' WHERE id = $1 AND status <> 'ready'", feed_id
    )
