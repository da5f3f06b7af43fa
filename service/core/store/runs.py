"""Runs: what one is (the types the lifecycle and the consumer pass around), the last
completed one (file skip), and the sweeper's candidates.

The runs' state changes are in ``lifecycle.py``.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import asyncpg
import msgspec

from service.core.contracts import EffectiveOptions
from service.core.store import outbox
from service.core.store.rows import FeedRow, JobRow, columns, many, one

# What queueing a run costs the run request's retry budget (see queue_runs).
Spend = Literal["new_request", "loss", "interruption", "nothing"]
ReleaseReason = Literal["shutdown", "interrupted", "stalled"]
Released = Literal["requeued", "failed", "cancelled", "gone"]


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    UNKNOWN = "unknown"  # no such job or feed: dead-letter
    NOT_RUNNABLE = "not_runnable"  # a submission job: dead-letter
    NOT_READY = "not_ready"  # the feed has no stored file: dead-letter
    ALREADY_ACTIVE = "already_active"  # running (or queued for another message): no-op
    STALE = "stale"  # names an attempt that is not the queued one: no-op


class Lease(enum.Enum):
    """What a running job's consumer learns when it renews its lease or writes progress."""

    HELD = "held"  # still ours, carry on
    CANCEL_ASKED = "cancel_asked"  # still ours, but a client asked to cancel
    LOST = "lost"  # no longer ours (re-queued or ended by someone else): stop, write nothing


class RunKey(msgspec.Struct, kw_only=True):
    """One run: the job and its attempt (the fencing token)."""

    job_id: str
    attempt: int


class ClaimedRun(RunKey, kw_only=True):
    feed_id: str
    options: EffectiveOptions
    request_id: str | None
    feed: FeedRow
    phases: dict[str, int] = {}  # milliseconds since the run started, at the end of each phase
    stats: dict[str, Any] = {}  # how the load went: its path, fast-path rows, known rows


class RunToQueue(msgspec.Struct, frozen=True):
    """One run to queue: a (locked) validation job's id and current attempt, and the run's
    options, origin and what it costs the retry budget."""

    job_id: str
    attempt: int
    options: EffectiveOptions
    requested_by: str
    request_id: str | None
    spend: Spend = "new_request"


class CompletedRun(msgspec.Struct, frozen=True):
    attempt: int
    options: str | None
    result: str | None
    file_etag: str | None
    file_size: int | None


async def last_completed(db: asyncpg.Pool, job_id: str) -> CompletedRun | None:
    row = await db.fetchrow(
        "SELECT attempt, options::text AS options, result::text AS result, file_etag, file_size"
        " FROM job_runs WHERE job_id = $1 AND status = 'completed'"
        " ORDER BY attempt DESC LIMIT 1",
        job_id,
    )
    return one(CompletedRun, row)


# -- the sweeper's (consumer/sweeper.py) ---------------------------------------------------


async def lock_expired(conn: asyncpg.Connection) -> list[JobRow]:
    """Running jobs whose lease ran out (their consumer is gone), locked; others skipped."""
    rows = await conn.fetch(
        f"SELECT {columns(JobRow)} FROM jobs"
        " WHERE status = 'running' AND job_type = 'validation' AND lease_until < now()"
        " FOR UPDATE SKIP LOCKED"
    )
    return many(JobRow, rows)


async def lock_lost_requests(conn: asyncpg.Connection, older_than: int) -> list[JobRow]:
    """Jobs queued for longer than ``older_than`` seconds while no run request is waiting
    in the outbox (the caller knows the broker's queue is empty): their message was lost."""
    rows = await conn.fetch(
        f"SELECT {columns(JobRow)} FROM jobs WHERE status = 'queued'"
        " AND queued_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL"
        "   AND o.exchange = 'jobs')"
        " FOR UPDATE SKIP LOCKED",
        older_than,
    )
    return many(JobRow, rows)


async def republish(conn: asyncpg.Connection, job: JobRow) -> None:
    """A queued job's run request was lost: it goes into the outbox again, and the job
    waits from now."""
    await outbox.add_run_requests(conn, [(job.id, job.attempt, None)])
    await conn.execute("UPDATE jobs SET queued_at = now() WHERE id = $1", job.id)


async def backend_busy(db: asyncpg.Pool, pid: int) -> bool:
    """Whether PostgreSQL is working on the backend's statement right now (running it, or
    waiting for a lock it needs): a run whose backend is busy is slow, not stuck. A COPY
    FROM STDIN waiting for our next bytes (``ClientRead``) is not busy: it waits on us."""
    return bool(
        await db.fetchval(
            "SELECT state = 'active' AND wait_event IS DISTINCT FROM 'ClientRead'"
            " FROM pg_stat_activity WHERE pid = $1",
            pid,
        )
    )


async def terminate_backend(db: asyncpg.Pool, pid: int) -> bool:
    """End a run's backend: its transaction rolls back, and whatever waits on it (a client
    library wedged on its own cancel request included) sees the connection close."""
    return bool(await db.fetchval("SELECT pg_terminate_backend($1)", pid))
