"""Jobs: the read views, listing, and the locked reads the lifecycle starts from.

Every change of a job's status is in ``lifecycle.py``; rejections are in ``rejections.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec

from service.core.contracts import (
    EffectiveOptions,
    JobStatus,
    JobType,
    Mode,
    RunOptions,
    RunView,
)
from service.core.store.rows import JobRow, lock_by_id, many, one, raw

JOB_COLUMNS = """
    j.id AS job_id, j.feed_id, j.job_type, j.status, rfc3339(j.created_at) AS created_at,
    rfc3339(j.updated_at) AS updated_at, rfc3339(j.started_at) AS started_at,
    rfc3339(j.finished_at) AS finished_at, j.attempt, j.message, j.progress::text AS progress,
    CASE WHEN j.status IN ('queued', 'running') THEN coalesce(j.retry_after, 2) END AS retry_after,
    j.result::text AS result, j.error::text AS error, j.version
"""

RUNS_SQL = (
    "SELECT attempt, status, rfc3339(requested_at) AS requested_at,"
    " rfc3339(started_at) AS started_at, rfc3339(finished_at) AS finished_at, requested_by,"
    " options::text AS options, result::text AS result, error::text AS error"
    " FROM job_runs WHERE job_id = $1 ORDER BY attempt DESC"
)
GET_JOB_SQL = f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1 AND j.tenant_id = $2"


class JobRecord(msgspec.Struct, frozen=True):
    """A job as the API shows it (``JOB_COLUMNS``): times as RFC 3339 text, JSON as text."""

    job_id: str
    feed_id: str
    job_type: JobType
    status: JobStatus
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    attempt: int
    message: str | None
    progress: str | None
    retry_after: int | None
    result: str | None
    error: str | None
    version: int


class JobPageRecord(JobRecord, frozen=True):
    """A job of a listing, with its place in the order (for the next page's cursor)."""

    created_ts: datetime
    seq: int


async def get_job(
    db: asyncpg.Pool | asyncpg.Connection, job_id: str, tenant_id: int
) -> JobRecord | None:
    return one(JobRecord, await db.fetchrow(GET_JOB_SQL, job_id, tenant_id))


async def list_jobs(
    db: asyncpg.Pool,
    tenant_id: int,
    *,
    statuses: list[str] | None,
    job_type: str | None,
    feed_id: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: tuple[datetime, int, str] | None,
    limit: int,
    newest_first: bool = True,
    with_total: bool = False,
    tags: list[str] | None = None,
    all_tags: bool = False,
) -> tuple[list[JobPageRecord], int | None]:
    """A page of the tenant's jobs in creation order (newest first unless asked), and, if
    asked, how many match the filters in all."""
    where = ["j.tenant_id = $1"]
    args: list[Any] = [tenant_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if statuses:
        where.append(f"j.status = ANY({arg(statuses)}::text[])")
    if job_type:
        where.append(f"j.job_type = {arg(job_type)}")
    if feed_id:
        where.append(f"j.feed_id = {arg(feed_id)}")
    if created_after:
        where.append(f"j.created_at > {arg(created_after)}")
    if created_before:
        where.append(f"j.created_at < {arg(created_before)}")
    if tags:  # a job has its feed's tags
        match = "@>" if all_tags else "&&"
        where.append(
            f"EXISTS (SELECT 1 FROM feeds f WHERE f.id = j.feed_id AND f.tags {match}"
            f" {arg(tags)}::text[])"
        )
    total: int | None = None
    if with_total:
        total = await db.fetchval(f"SELECT count(*) FROM jobs j WHERE {' AND '.join(where)}", *args)
    if cursor:
        after = f"({arg(cursor[0])}, {arg(cursor[1])}, {arg(cursor[2])})"
        where.append(f"(j.created_at, j.seq, j.id) {'<' if newest_first else '>'} {after}")
    order = "DESC" if newest_first else "ASC"
    sql = (
        f"SELECT {JOB_COLUMNS}, j.created_at AS created_ts, j.seq FROM jobs j"
        f" WHERE {' AND '.join(where)}"
        f" ORDER BY j.created_at {order}, j.seq {order}, j.id {order} LIMIT {arg(limit)}"
    )
    return many(JobPageRecord, await db.fetch(sql, *args)), total


class FeedDefaults(Protocol):
    """What a run's options default to: the feed's settings."""

    @property
    def mode(self) -> Mode: ...
    @property
    def max_rejected_rows(self) -> int | None: ...
    @property
    def delimiter(self) -> str: ...
    @property
    def max_deleted_ratio(self) -> float: ...
    @property
    def encoding(self) -> str: ...
    @property
    def column_map(self) -> str: ...
    @property
    def unknown_columns(self) -> str: ...


def effective_options(options: RunOptions | None, feed: FeedDefaults) -> EffectiveOptions:
    opts = options or RunOptions()
    return EffectiveOptions(
        mode=opts.mode or feed.mode,
        max_rejected_rows=(
            opts.max_rejected_rows if opts.max_rejected_rows is not None else feed.max_rejected_rows
        ),
        dry_run=opts.dry_run,
        force=opts.force,
        delimiter=feed.delimiter,
        max_deleted_ratio=(
            opts.max_deleted_ratio if opts.max_deleted_ratio is not None else feed.max_deleted_ratio
        ),
        encoding=opts.encoding or feed.encoding,
        # A run's mapping replaces the feed's (it is not merged with it).
        columns=(
            opts.columns if opts.columns is not None else msgspec.json.decode(feed.column_map)
        ),
        unknown_columns=opts.unknown_columns or feed.unknown_columns,
    )


async def lock_job(
    conn: asyncpg.Connection, job_id: str, tenant_id: int | None = None
) -> JobRow | None:
    """The job, locked until the transaction ends (None: no such job, or not the tenant's)."""
    return await lock_by_id(conn, JobRow, "jobs", job_id, tenant_id)


async def validation_job_of(conn: asyncpg.Connection, feed_id: str | None) -> str | None:
    if feed_id is None:
        return None
    job_id: str | None = await conn.fetchval(
        "SELECT validation_job_id FROM feeds WHERE id = $1", feed_id
    )
    return job_id


async def run_request_id(conn: asyncpg.Connection, job_id: str, attempt: int) -> str | None:
    request_id: str | None = await conn.fetchval(
        "SELECT request_id FROM job_runs WHERE job_id = $1 AND attempt = $2", job_id, attempt
    )
    return request_id


async def list_runs(db: asyncpg.Pool, job_id: str) -> list[RunView]:
    """The job's runs, newest first."""
    rows = await db.fetch(RUNS_SQL, job_id)
    return [
        RunView(
            **{k: v for k, v in r.items() if k not in ("options", "result", "error")},
            options=msgspec.Raw(r["options"].encode()),
            result=raw(r["result"]),
            error=raw(r["error"]),
        )
        for r in rows
    ]
