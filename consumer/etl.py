"""One validation run, end to end: S3 → parse worker → COPY into staging → merge.

The products, the job's completion and the run's record commit in one transaction; any
failure, a cancel, or a crash leaves the products exactly as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import asyncpg
import botocore.exceptions
import msgspec

from consumer import runs, stage
from consumer.frames import Batch, End, Fatal, Frame, Header, WorkerConfig, decoder
from consumer.metrics import ConsumerMetrics
from consumer.rules import COLUMNS
from consumer.runs import ClaimedRun
from service.contracts import EffectiveOptions, FirstError, ValidationResult
from service.errors import InvalidRequest, JobFailure
from service.logs import get_logger
from service.retry import TRANSIENT
from service.s3 import S3Uri, head, parse_s3_uri, read_stream
from service.s3_access import may_read
from service.settings import Settings
from service.store import s3_prefixes

log = get_logger(__name__)

PROGRESS_EVERY = 1.0  # seconds
ERROR_FLUSH = 2000


# Faults of a dependency rather than of the run: PostgreSQL or S3 unreachable.
INTERRUPTIONS: tuple[type[BaseException], ...] = (
    *TRANSIENT,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
    aiohttp.ClientError,  # aiobotocore's transport: a body cut off mid-read
)


class RunCancelled(Exception):
    pass


class LeaseLost(Exception):
    pass


class Deps(msgspec.Struct):
    settings: Settings
    pool: asyncpg.Pool
    s3: Any
    metrics: ConsumerMetrics | None = None


def _ms(since: float) -> int:
    return round((time.monotonic() - since) * 1000)


def _n(value: int) -> str:
    return f"{value:,}"


def _same_options(a: EffectiveOptions, b: EffectiveOptions) -> bool:
    return a == b


class ErrorSink:
    """Writes rejections to job_errors in batches (own connection: kept even if the load
    rolls back, since they tell why) and remembers the first one in file order."""

    def __init__(self, pool: asyncpg.Pool, run: ClaimedRun) -> None:
        self.pool = pool
        self.run = run
        self.pending: list[tuple[Any, ...]] = []
        self.count = 0
        self.first: FirstError | None = None

    async def add(self, line: int, column: str | None, code: str, message: str, raw: str) -> None:
        self.count += 1
        if self.first is None or line < self.first.line:
            self.first = FirstError(line=line, column=column, code=code, message=message)
        self.pending.append(
            (self.run.job_id, self.run.attempt, self.count, line, column, code, message, raw[:1024])
        )
        if len(self.pending) >= ERROR_FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        records, self.pending = self.pending, []
        async with self.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "job_errors",
                records=records,
                columns=[
                    "job_id",
                    "attempt",
                    "ordinal",
                    "line",
                    "column_name",
                    "code",
                    "message",
                    "raw",
                ],
            )


class Progress:
    def __init__(self, deps: Deps, run: ClaimedRun, bytes_total: int) -> None:
        self.deps = deps
        self.run = run
        self.bytes_total = bytes_total
        self.bytes_read = 0
        self.rows_read = 0
        self.started = time.monotonic()
        self.last = 0.0

    async def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        pct = round(100.0 * self.bytes_read / self.bytes_total, 1) if self.bytes_total else None
        elapsed = max(now - self.started, 0.001)
        remaining = (self.bytes_total - self.bytes_read) / max(self.bytes_read / elapsed, 1.0)
        retry_after = max(1, min(30, math.ceil(remaining / 2)))
        estimate = (
            f" of ~{_n(int(self.rows_read * self.bytes_total / self.bytes_read))}"
            if self.bytes_read and self.bytes_total
            else ""
        )
        message = f"Loading: {_n(self.rows_read)}{estimate} rows"
        cancel = await runs.write_progress(
            self.deps.pool,
            self.run,
            {
                "rows_read": self.rows_read,
                "bytes_read": self.bytes_read,
                "bytes_total": self.bytes_total,
                "percent": pct,
            },
            message,
            retry_after,
        )
        if cancel is None:
            raise LeaseLost()
        if cancel:
            raise RunCancelled()


async def _spawn_worker(
    options: EffectiveOptions, settings: Settings
) -> asyncio.subprocess.Process:
    cfg = WorkerConfig(
        delimiter=options.delimiter,
        fast_path=settings.fast_path,
        max_inflated_bytes=settings.max_inflated_bytes,
        max_inflate_ratio=settings.max_inflate_ratio,
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer.parse_worker",
        msgspec.json.encode(cfg).decode(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1024 * 1024,
        # Its own session: a signal to the consumer's process group (Ctrl-C, systemd's
        # SIGTERM) must reach only the consumer, which drains its runs and then ends the
        # worker itself (stdin closed, or killed on abandon).
        start_new_session=True,
    )


async def _read_frame(stdout: asyncio.StreamReader) -> Frame | None:
    try:
        head_ = await stdout.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    size = int.from_bytes(head_, "big")
    frame: Frame = decoder.decode(await stdout.readexactly(size))
    return frame


# How a run ended, for the consumer: ``interrupted`` runs are released (re-queued) by it.
RunEnd = Literal["completed", "failed", "cancelled", "lease_lost", "interrupted"]


async def execute(deps: Deps, run: ClaimedRun) -> RunEnd:
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
        result, etag, size = await _load(deps, run, started)
    except JobFailure as exc:
        error = {"code": exc.code, "message": exc.message, "details": exc.details}
        ok = await runs.finish(deps.pool, run, "failed", message=exc.message, error=error)
        bound.warning(
            "run_failed",
            code=exc.code,
            error_message=exc.message,
            recorded=ok,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return "failed"
    except RunCancelled:
        error = {"code": "CANCELLED", "message": "Cancelled while running; nothing was written"}
        ok = await runs.finish(deps.pool, run, "cancelled", message="Cancelled", error=error)
        bound.info(
            "run_cancelled", recorded=ok, duration_ms=round((time.monotonic() - started) * 1000)
        )
        return "cancelled"
    except LeaseLost:
        bound.warning("run_lease_lost", duration_ms=round((time.monotonic() - started) * 1000))
        return "lease_lost"
    except asyncio.CancelledError:
        bound.warning("run_abandoned", duration_ms=round((time.monotonic() - started) * 1000))
        raise
    except INTERRUPTIONS as exc:
        bound.warning(
            "run_interrupted",
            error=f"{type(exc).__name__}: {exc}"[:500],
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return "interrupted"
    except Exception as exc:
        bound.exception("run_crashed")
        message = f"Internal error ({type(exc).__name__}); the load was rolled back"
        await runs.finish(
            deps.pool,
            run,
            "failed",
            message=message,
            error={"code": "INTERNAL_ERROR", "message": message, "details": {}},
        )
        return "failed"
    bound.info(
        "run_completed",
        rows_read=result.rows_read,
        rows_valid=result.rows_valid,
        rows_rejected=result.rows_rejected,
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        deleted=result.deleted,
        file_unchanged=result.file_unchanged,
        file_etag=etag,
        file_size=size,
        duration_ms=result.duration_ms,
        phases_ms=run.phases,
        fast_path_rows=run.fast_rows,
    )
    if deps.metrics is not None:
        deps.metrics.rows_loaded(result)
    return "completed"


def _summary(r: ValidationResult) -> str:
    if r.file_unchanged:
        return f"File unchanged since the last run: {_n(r.unchanged)} rows unchanged"
    verb = "Validated (dry run)" if r.dry_run else "Loaded"
    return (
        f"{verb} {_n(r.rows_read)} rows: {_n(r.inserted)} inserted, {_n(r.updated)} updated,"
        f" {_n(r.unchanged)} unchanged, {_n(r.deleted)} deleted, {_n(r.rows_rejected)}"
        " rejected"
    )


async def _load(deps: Deps, run: ClaimedRun, started: float) -> tuple[ValidationResult, str, int]:
    uri = await _readable_uri(deps, run)
    info = await head(deps.s3, uri) if uri else None
    if uri is None or info is None:
        raise JobFailure(
            "FILE_NOT_FOUND",
            f"The feed's file {run.feed['s3_uri']} does not exist",
            {"s3_uri": run.feed["s3_uri"]},
        )

    if not run.options.force:
        skipped = await _file_skip(deps, run, info.etag, info.size, started)
        if skipped is not None:
            return skipped, info.etag, info.size

    proc = await _spawn_worker(run.options, deps.settings)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    progress = Progress(deps, run, info.size)
    errors = ErrorSink(deps.pool, run)

    async def feed_worker() -> None:
        assert proc.stdin is not None
        try:
            async for chunk in read_stream(deps.s3, uri, if_match=info.etag):
                progress.bytes_read += len(chunk)
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the worker stopped reading (a fatal fault it reports itself)
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()

    feeder = asyncio.create_task(feed_worker(), name=f"s3-feed-{run.job_id}")
    table = stage.stage_name(run.job_id, run.attempt)
    phases = run.phases
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            # Two runs of one feed never merge at once; different feeds go in parallel.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", run.feed_id)
            first = await _read_frame(proc.stdout)
            end: End | None = None
            ignored: list[str] = []
            if isinstance(first, Fatal):
                raise JobFailure(first.code, first.message, first.details)
            if isinstance(first, Header):
                ignored = first.ignored
                if first.missing:
                    raise JobFailure(
                        "MISSING_COLUMNS",
                        f"The header lacks required column(s): {', '.join(first.missing)}",
                        {"missing": first.missing, "ignored_columns": first.ignored},
                    )
                state: dict[str, End] = {}
                await stage.create_stage(conn, table, first.columns)
                phases["setup_ms"] = _ms(started)
                await conn.copy_to_table(
                    table,
                    source=_payloads(proc.stdout, errors, progress, state),
                    columns=["line", *first.columns],
                    format="csv",
                    delimiter=run.options.delimiter,
                )
                end = state.get("end")
            elif isinstance(first, End):
                end = first  # an empty file: an empty stage, so every later step stays the same
                await stage.create_stage(conn, table, list(COLUMNS))
            if end is None:
                raise JobFailure(
                    "PARSE_FAILED",
                    "The parse worker stopped before the end",
                    {"stderr": await _stderr(proc)},
                )
            await feeder
            phases["copy_ms"] = _ms(started)
            rows_valid = end.rows_valid
            if rows_valid:
                for dup in await stage.duplicates(conn, table):
                    rows_valid -= 1
                    await errors.add(
                        dup["line"],
                        "sku",
                        "DUPLICATE_SKU",
                        f"sku {dup['sku']!r} already appears on line {dup['first_line']}",
                        _raw_of(dup, run.options.delimiter),
                    )
            await errors.flush()
            phases["dedupe_ms"] = _ms(started)
            rejected = errors.count
            limit = run.options.max_rejected_rows
            if limit is not None and rejected > limit:
                raise JobFailure(
                    "TOO_MANY_REJECTED_ROWS",
                    f"{_n(rejected)} rows were rejected, more than the limit of {_n(limit)};"
                    " nothing was written",
                    {
                        "rows_rejected": rejected,
                        "max_rejected_rows": limit,
                        "first_error": msgspec.to_builtins(errors.first),
                    },
                )
            snapshot = run.options.mode == "snapshot"
            if snapshot and rows_valid == 0:
                raise JobFailure(
                    "EMPTY_SNAPSHOT",
                    "The snapshot holds no valid rows; loading it would delete every product of"
                    " the feed, so it was refused",
                    {"rows_read": end.rows_read},
                )
            if run.options.dry_run:
                counts = await stage.dry_counts(conn, table, run.feed_id, snapshot=snapshot)
            elif rows_valid or snapshot:
                counts = await stage.merge(conn, table, run.feed_id, run.job_id, snapshot=snapshot)
            else:
                counts = stage.MergeCounts()
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            phases["merge_ms"] = _ms(started)
            run.fast_rows = end.fast_rows
            result = ValidationResult(
                rows_read=end.rows_read,
                rows_valid=rows_valid,
                rows_rejected=rejected,
                inserted=counts.inserted,
                updated=counts.updated,
                unchanged=rows_valid - counts.inserted - counts.updated,
                deleted=counts.deleted,
                bytes_read=progress.bytes_read,
                file_unchanged=False,
                ignored_columns=ignored,
                first_error=errors.first,
                duration_ms=round((time.monotonic() - started) * 1000),
                dry_run=run.options.dry_run,
                rejections_url=f"/jobs/{run.job_id}/errors" if rejected else None,
            )
            if not run.options.dry_run:
                await conn.execute(
                    "UPDATE feeds SET last_loaded_at = statement_timestamp() WHERE id = $1",
                    run.feed_id,
                )
            await _complete(conn, run, result, info.etag, info.size)
            return result, info.etag, info.size
    finally:
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


async def _readable_uri(deps: Deps, run: ClaimedRun) -> S3Uri | None:
    """The feed's object, if its tenant may still read it (an operator may have taken a
    prefix back since it was registered); None answers like a missing object."""
    feed = run.feed
    if not feed["s3_uri"]:
        return None
    try:
        uri = parse_s3_uri(feed["s3_uri"])
    except InvalidRequest:
        return None
    if feed["source"] == "upload":
        return uri  # written by the gateway itself
    allowed = await s3_prefixes.allowed(deps.pool, feed["tenant_id"])
    return uri if may_read(uri, feed["tenant_id"], deps.settings.s3_bucket, allowed) else None


async def _payloads(
    stdout: asyncio.StreamReader, errors: ErrorSink, progress: Progress, state: dict[str, End]
) -> AsyncIterator[bytes]:
    while True:
        frame = await _read_frame(stdout)
        if frame is None:
            return
        if isinstance(frame, Batch):
            for err in frame.errors:
                await errors.add(*err)
            progress.rows_read = frame.rows_read
            await progress.tick()
            if frame.payload:
                yield frame.payload
        elif isinstance(frame, End):
            state["end"] = frame
            return
        elif isinstance(frame, Fatal):
            raise JobFailure(frame.code, frame.message, frame.details)


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    try:
        data = await asyncio.wait_for(proc.stderr.read(4096), 2)
    except TimeoutError:
        return ""
    return data.decode(errors="replace")[-2000:]


def _raw_of(row: asyncpg.Record, delimiter: str) -> str:
    """A duplicate's row as cleaned (its raw text is not kept, to keep memory flat)."""
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(
        [row["sku"], row["name"], row["price"], row["currency"]]
    )
    return buf.getvalue()


async def _file_skip(
    deps: Deps, run: ClaimedRun, etag: str, size: int, started: float
) -> ValidationResult | None:
    prev = await runs.last_completed(deps.pool, run.job_id)
    if prev is None or prev["file_etag"] != etag or prev["file_size"] != size:
        return None
    if not _same_options(msgspec.json.decode(prev["options"], type=EffectiveOptions), run.options):
        return None
    last = msgspec.json.decode(prev["result"], type=ValidationResult)
    result = ValidationResult(
        rows_read=0,
        rows_valid=0,
        rows_rejected=0,
        inserted=0,
        updated=0,
        unchanged=last.rows_valid,
        deleted=0,
        bytes_read=0,
        file_unchanged=True,
        ignored_columns=last.ignored_columns,
        first_error=None,
        duration_ms=round((time.monotonic() - started) * 1000),
        dry_run=run.options.dry_run,
    )
    await _complete(deps.pool, run, result, etag, size)
    return result


async def _complete(
    db: asyncpg.Pool | asyncpg.Connection,
    run: ClaimedRun,
    result: ValidationResult,
    etag: str,
    size: int,
) -> None:
    """Mark the run completed, in the load's transaction; a cancel asked at any time before
    this commit wins: the load is rolled back and the run ends cancelled."""
    if await runs.finish(
        db,
        run,
        "completed",
        message=_summary(result),
        result=result,
        file_etag=etag,
        file_size=size,
        unless_cancelled=True,
    ):
        return
    if await runs.cancel_requested(db, run):
        raise RunCancelled()
    raise LeaseLost()
