"""One validation run, end to end: find the file, skip it if unchanged, load it
(``consumer.load``), and record how the run ended.

The products, the job's completion and the run's record commit in one transaction; any
failure, a cancel, or a crash leaves the products exactly as they were.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal, TypeAlias

import asyncpg
import msgspec

from consumer import load
from consumer.metrics import ConsumerMetrics
from consumer.progress import (
    Activity,
    ErrorSink,
    LeaseLost,
    Progress,
    RunCancelled,
    count_text,
    ms_since,
)
from consumer.session import Spawner
from service.core import s3, s3_events
from service.core.contracts import EffectiveOptions, JobError, ValidationResult, job_error_code
from service.core.errors import InvalidRequest, JobFailure
from service.core.logs import get_logger
from service.core.retry import TRANSIENT
from service.core.s3 import S3Uri, head, parse_s3_uri
from service.core.s3_access import may_watch
from service.core.settings import Settings
from service.core.store import lifecycle, runs, s3_prefixes
from service.core.store import products as stage
from service.core.store.runs import ClaimedRun, Lease

log = get_logger(__name__)
# What the run_completed line reports of the result, besides its timings.
_LOGGED_COUNTS = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "inserted",
    "updated",
    "unchanged",
    "deleted",
    "file_unchanged",
)
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection
File: TypeAlias = tuple[str, int]  # the object read: (etag, size)

# Faults of a dependency rather than of the run: PostgreSQL or S3 unreachable.
INTERRUPTIONS: tuple[type[BaseException], ...] = (*TRANSIENT, *s3.UNREACHABLE)


__all__ = ["Deps", "LeaseLost", "RunCancelled", "RunEnd", "execute"]


class Deps(msgspec.Struct):
    settings: Settings
    pool: asyncpg.Pool
    s3: Any
    metrics: ConsumerMetrics | None = None
    spawner: Spawner = msgspec.field(default_factory=Spawner)


# How a run ended, for the consumer: ``interrupted`` runs are released (re-queued) by it.
RunEnd = Literal["completed", "failed", "cancelled", "lease_lost", "interrupted"]


async def execute(deps: Deps, run: ClaimedRun, activity: Activity) -> RunEnd:
    """Run the ETL and record its outcome; never raises for the run's own failures.

    A fault of a dependency (PostgreSQL or S3 unreachable) mid-run is ``interrupted``: the
    transaction is gone with its connection, nothing was written, and the caller gives the
    run back as soon as it can reach PostgreSQL again."""
    bound = log.bind(
        job_id=run.job_id, feed_id=run.feed_id, attempt=run.attempt, request_id=run.request_id
    )
    started = time.monotonic()
    bound.info(
        "run_started", mode=run.options.mode, dry_run=run.options.dry_run, force=run.options.force
    )
    try:
        result, etag, size = await _load(deps, run, started, activity)
    except asyncio.CancelledError:
        bound.warning("run_abandoned", duration_ms=ms_since(started))
        raise
    except Exception as exc:
        return await _not_completed(deps.pool, run, exc, bound, ms_since(started))
    counts = {name: getattr(result, name) for name in _LOGGED_COUNTS}
    bound.info(
        "run_completed",
        **counts,
        file_etag=etag,
        file_size=size,
        duration_ms=result.duration_ms,
        phases_ms=run.phases,
        fast_path_rows=run.stats.get("fast_rows"),
        load=run.stats,
    )
    if deps.metrics is not None:
        deps.metrics.rows_loaded(result)
    return "completed"


async def _not_completed(
    pool: asyncpg.Pool, run: ClaimedRun, exc: Exception, bound: Any, duration_ms: int
) -> RunEnd:
    """Record and log how a run that did not complete ended."""
    if isinstance(exc, JobFailure):
        error = JobError(job_error_code(exc.code, "INTERNAL_ERROR"), exc.message, exc.details)
        ok = await lifecycle.fail(pool, run, error)
        bound.warning(
            "run_failed",
            code=exc.code,
            error_message=exc.message,
            recorded=ok,
            duration_ms=duration_ms,
        )
        return "failed"
    if isinstance(exc, RunCancelled):
        ok = await lifecycle.cancelled(pool, run)
        bound.info("run_cancelled", recorded=ok, duration_ms=duration_ms)
        return "cancelled"
    if isinstance(exc, LeaseLost):
        bound.warning("run_lease_lost", duration_ms=duration_ms)
        return "lease_lost"
    if isinstance(exc, INTERRUPTIONS):
        error_text = f"{type(exc).__name__}: {exc}"[:500]
        bound.warning("run_interrupted", error=error_text, duration_ms=duration_ms)
        return "interrupted"
    bound.error("run_crashed", exc_info=exc)
    message = f"Internal error ({type(exc).__name__}); the load was rolled back"
    await lifecycle.fail(pool, run, JobError("INTERNAL_ERROR", message))
    return "failed"


def _summary(r: ValidationResult) -> str:
    if r.file_unchanged:
        return f"File unchanged since the last run: {count_text(r.unchanged)} rows unchanged"
    verb = "Validated (dry run)" if r.dry_run else "Loaded"
    n = count_text
    return (
        f"{verb} {n(r.rows_read)} rows: {n(r.inserted)} inserted, {n(r.updated)} updated,"
        f" {n(r.unchanged)} unchanged, {n(r.deleted)} deleted, {n(r.rows_rejected)} rejected"
    )


async def _load(
    deps: Deps, run: ClaimedRun, started: float, activity: Activity
) -> tuple[ValidationResult, str, int]:
    source = await _source(deps, run)
    info = source.info
    if not run.options.force:
        skipped = await _file_skip(deps, run, info.etag, info.size, started)
        if skipped is not None:
            return skipped, info.etag, info.size
    progress = Progress(deps.pool, run, info.size, activity)
    progress.started = started
    errors = ErrorSink(deps.pool, run)
    async with deps.pool.acquire() as conn:
        # Named for the runner's watchdog until the transaction has ended (its rollback
        # included), never once the connection is back in the pool for someone else.
        activity.backend_pid = conn.get_server_pid()
        activity.touch()
        try:
            async with conn.transaction():
                result = await load.load(
                    conn, deps.settings, deps.s3, run, source, progress, errors, deps.spawner
                )
                if not run.options.dry_run:
                    await stage.mark_loaded(conn, run.feed_id)
                await _complete(conn, run, result, (info.etag, info.size))
        finally:
            activity.backend_pid = None
        return result, info.etag, info.size


async def _source(deps: Deps, run: ClaimedRun) -> load.Source:
    """The feed's object, or its part files (a pattern: ``s3://b/export/part-*.csv.gz``), as
    they are now; FILE_NOT_FOUND if there is none, or its tenant may no longer read it (an
    operator may have taken a prefix back since it was registered: answered alike)."""
    feed = run.feed
    pattern = feed.s3_uri or ""
    missing = JobFailure(
        "FILE_NOT_FOUND",
        f"The feed's file {pattern} does not exist"
        if not s3_events.is_pattern(pattern)
        else f"No part file matches {pattern} (markers such as _SUCCESS are not parts)",
        {"s3_uri": pattern},
    )
    try:
        uri = parse_s3_uri(
            s3_events.fixed_part(pattern) + "x" if s3_events.is_pattern(pattern) else pattern
        )
    except InvalidRequest:
        raise missing from None
    if feed.source != "upload":  # an upload was written by the gateway itself
        allowed = await s3_prefixes.allowed(deps.pool, feed.tenant_id)
        if not may_watch(
            s3_events.fixed_part(pattern), feed.tenant_id, deps.settings.s3_bucket, allowed
        ):
            raise missing
    if not s3_events.is_pattern(pattern):
        info = await head(deps.s3, uri)
        if info is None:
            raise missing
        return load.Source(uri, info)
    parts = await s3.list_parts(deps.s3, pattern)
    if not parts:
        raise missing
    if len(parts) > s3.MAX_PARTS:
        raise JobFailure(
            "TOO_MANY_PARTS",
            f"{pattern} matches more than {s3.MAX_PARTS} part files",
            {"s3_uri": pattern, "limit": s3.MAX_PARTS},
        )
    folder = S3Uri(uri.bucket, uri.key[:-1])
    return load.Source(folder, s3.parts_identity(parts), parts)


async def _file_skip(
    deps: Deps, run: ClaimedRun, etag: str, size: int, started: float
) -> ValidationResult | None:
    prev = await runs.last_completed(deps.pool, run.job_id)
    if prev is None or prev.file_etag != etag or prev.file_size != size:
        return None
    if prev.options is None or prev.result is None:
        return None
    # ``force`` only says whether to skip: a forced run of the same file and options is
    # as good a reference as any (a dry run is not: it loaded nothing).
    before = msgspec.structs.replace(
        msgspec.json.decode(prev.options, type=EffectiveOptions), force=False
    )
    if before != msgspec.structs.replace(run.options, force=False):
        return None
    last = msgspec.json.decode(prev.result, type=ValidationResult)
    result = ValidationResult(
        rows_read=0,
        rows_valid=0,
        rows_rejected=0,
        inserted=0,
        updated=0,
        # The rows the file holds, whether the last run loaded it or skipped it too.
        unchanged=last.unchanged if last.file_unchanged else last.rows_valid,
        deleted=0,
        bytes_read=0,
        file_unchanged=True,
        ignored_columns=last.ignored_columns,
        columns=last.columns,
        attributes=last.attributes,
        issues=last.issues,
        files=last.files,
        first_error=None,
        duration_ms=ms_since(started),
        dry_run=run.options.dry_run,
    )
    await _complete(deps.pool, run, result, (etag, size))
    return result


async def _complete(db: Db, run: ClaimedRun, result: ValidationResult, file: File) -> None:
    """Mark the run completed, in the load's transaction; a cancel asked at any time before
    this commit wins: the load is rolled back and the run ends cancelled."""
    if await lifecycle.complete(db, run, result, _summary(result), file=file):
        return
    if await lifecycle.lease(db, run) is Lease.CANCEL_ASKED:
        raise RunCancelled()
    raise LeaseLost()
