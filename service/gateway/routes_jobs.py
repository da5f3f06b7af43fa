"""/jobs routes: read, long-poll, list, run, cancel, run history, rejected rows."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime

import asyncpg
from aiohttp import web

from service.core import ids
from service.core.contracts import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    ErrorList,
    JobList,
    RunAccepted,
    RunList,
    RunOptions,
    encode,
)
from service.core.errors import (
    FeedNotReady,
    IdempotencyKeyReused,
    InvalidRequest,
    JobAlreadyActive,
    JobNotCancellable,
    JobNotFound,
    JobNotRunnable,
    Unavailable,
    UnsupportedMediaType,
)
from service.core.logs import get_logger
from service.core.store import feeds as feeds_store
from service.core.store import idempotency, lifecycle, rejections
from service.core.store import jobs as jobs_store
from service.core.store.jobs import JobRecord
from service.core.store.keys import Principal
from service.gateway import apidoc as d
from service.gateway import appkeys, report
from service.gateway.access import tenant
from service.gateway.bodies import (
    decode_cursor,
    encode_cursor,
    json_response,
    list_query,
    page,
    query_int,
    query_tags,
    query_time,
    read_json,
    read_limited,
)
from service.gateway.jobs_view import etag_matches, etag_of, is_terminal, job_response, job_view
from service.gateway.middleware import REQUEST_ID, principal, read_pool

log = get_logger(__name__)
routes = web.RouteTableDef()
MAX_WAIT = 60


async def load_job(request: web.Request, job_id: str) -> JobRecord:
    """The job as its owner sees it: from the gateway's cache (service/core/jobcache.py) while
    the job has not changed since, else from the database."""
    if not ids.is_job_id(job_id):
        raise JobNotFound(job_id)
    tenant_id = principal(request).tenant_id
    cache = request.app[appkeys.WATCHER].cache
    row = cache.get(job_id, tenant_id)
    if row is None:
        seen = cache.changes
        reads = request.app[appkeys.READS]
        row = await reads.primary_first(lambda db: jobs_store.get_job(db, job_id, tenant_id))
        reads.changed()  # what the client sees now, a standby read must not be behind
        if row is None:
            raise JobNotFound(job_id)
        if row.version < cache.seen_version(job_id):
            # read from a standby (the primary is down) that has not replayed this far
            raise Unavailable(
                f"Job {job_id} is ahead of the standby answering while the database's"
                " primary is down; try again shortly",
                headers={"Retry-After": "2"},
            )
        cache.put(job_id, tenant_id, row, seen)
    return row


async def _wait_for_change(
    request: web.Request,
    row: JobRecord,
    known_etag: str,
    seconds: int,
    *,
    until_terminal: bool = False,
) -> JobRecord:
    """Hold until the job's ETag differs from ``known_etag`` (or it is terminal), or time's up."""
    watcher = request.app[appkeys.WATCHER]
    deadline = time.monotonic() + seconds
    while not is_terminal(row) and (until_terminal or etag_of(row) == known_etag):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or watcher.closing:
            break
        if not watcher.connected.is_set():
            # No notifications to wait for: fall back to a slow re-read.
            await asyncio.sleep(min(1.0, remaining))
        else:
            await watcher.wait(row.job_id, remaining)
        row = await load_job(request, row.job_id)
    return row


@routes.get("/jobs/{job_id}")
@tenant
@d.doc(
    {
        "operationId": "get_job",
        "summary": "Read a job; If-None-Match → 304; ?wait long-polls for a change",
        "parameters": [
            d.JOB,
            d.WAIT,
            {"name": "If-None-Match", "in": "header", "required": False, "schema": d.STR},
        ],
        "responses": {
            "200": d.JOB_200,
            "304": {"description": "Not modified", "headers": d.headers("ETag", *d.RATE)},
            **d.errors("400", "404", *d.PROTECTED),
        },
    }
)
async def get_job(request: web.Request) -> web.Response:
    row = await load_job(request, request.match_info["job_id"])
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    if wait and not is_terminal(row):
        inm = request.headers.get("If-None-Match")
        known = etag_of(row) if not inm or etag_matches(inm, etag_of(row)) else ""
        if known:
            row = await _wait_for_change(request, row, known, wait)
    return job_response(row, request)


@routes.get("/jobs")
@tenant
@d.doc(
    {
        "operationId": "list_jobs",
        "summary": "List jobs, newest first",
        "parameters": [
            d.query("status", d.STR, "Comma-separated statuses"),
            d.query("job_type", {"enum": ["submission", "validation"]}, "Job type"),
            d.query("feed_id", d.STR, "Only this feed's jobs"),
            d.query("created_after", {"type": "string", "format": "date-time"}, "After"),
            d.query("created_before", {"type": "string", "format": "date-time"}, "Before"),
            *d.TAG_QUERY,
            d.limit(100, 50),
            d.CURSOR,
            *d.LIST_QUERY,
        ],
        "responses": {
            "200": d.ok(d.ref("JobList"), "A page of jobs", *d.RATE),
            **d.errors("400", *d.PROTECTED),
        },
    }
)
async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    statuses = None
    if q.get("status"):
        statuses = [s.strip() for s in q["status"].split(",") if s.strip()]
        bad = [s for s in statuses if s not in JOB_STATUSES]
        if bad:
            raise InvalidRequest(
                f"Unknown status {bad[0]!r} in `status`;"
                f" expected some of {', '.join(JOB_STATUSES)}",
                details={"field": "status"},
            )
    job_type = q.get("job_type") or None
    if job_type not in (None, "submission", "validation"):
        raise InvalidRequest(
            "Query parameter `job_type` must be submission or validation",
            details={"field": "job_type"},
        )
    feed_id = q.get("feed_id") or None
    listing = list_query(request, tuple[datetime, int, str])
    limit = listing.limit
    tags, all_tags = query_tags(request)
    rows, total = await jobs_store.list_jobs(
        await read_pool(request),
        principal(request).tenant_id,
        statuses=statuses,
        job_type=job_type,
        feed_id=feed_id,
        created_after=query_time(request, "created_after"),
        created_before=query_time(request, "created_before"),
        cursor=listing.after,
        limit=limit + 1,
        newest_first=listing.newest_first,
        with_total=listing.with_total,
        tags=tags,
        all_tags=all_tags,
    )
    rows, cursor = page(rows, listing, lambda r: [r.created_ts.isoformat(), r.seq, r.job_id])
    return json_response(
        JobList(
            jobs=[job_view(r, with_result=False) for r in rows], next_cursor=cursor, total=total
        )
    )


def _request_hash(job_id: str, body: bytes) -> bytes:
    return hashlib.sha256(job_id.encode() + b"\0" + body).digest()


@routes.post("/jobs/{job_id}/run")
@tenant
@d.doc(
    {
        "operationId": "run_job",
        "summary": "Queue a run of a validation job (?wait: until it ends)",
        "parameters": [
            d.VALIDATION_JOB,
            d.WAIT,
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            },
        ],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": d.ref("RunOptions")}},
        },
        "responses": {
            "202": d.ok(d.ref("RunAccepted"), "Queued", "Location", "Retry-After", *d.RATE),
            "200": d.ok(d.ref("JobView"), "The job once it ended (?wait)", *d.RATE),
            **d.errors("400", "404", "409", "413", "415", "422", *d.PROTECTED),
        },
    }
)
async def run_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    p = principal(request)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    raw, options = await _run_body(request)
    if not ids.is_job_id(job_id):
        raise JobNotFound(job_id)
    idem_key = request.headers.get("Idempotency-Key")
    if idem_key is not None and not 1 <= len(idem_key) <= 255:
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 characters", details={"field": "Idempotency-Key"}
        )
    request_hash = _request_hash(job_id, raw.strip())
    async with request.app[appkeys.POOL].acquire() as conn, conn.transaction():
        if idem_key is not None:
            stored = await idempotency.lock_and_find(conn, p.tenant_id, idem_key)
            if stored is not None:
                if stored.request_hash != request_hash:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used within 24 hours for a different request",
                        details={"idempotency_key": idem_key},
                    )
                log.info("run_request_replayed", job_id=job_id)
                return _accepted(job_id, stored.body)
        attempt = await _queue(conn, job_id, p, options, request[REQUEST_ID])
        accepted = encode(RunAccepted(job_id=job_id, status="queued", attempt=attempt))
        if idem_key is not None:
            await idempotency.remember(conn, p.tenant_id, idem_key, request_hash, accepted)
    request.app[appkeys.WATCHER].cache.invalidate(job_id)  # read your writes, before any NOTIFY
    request.app[appkeys.READS].wrote()  # ... from the primary, which took this one
    log.info("run_requested", job_id=job_id, attempt=attempt, wait_s=wait)
    if wait:
        row = await load_job(request, job_id)
        row = await _wait_for_change(request, row, "", wait, until_terminal=True)
        return job_response(row, request)
    return _accepted(job_id, accepted)


async def _run_body(request: web.Request) -> tuple[bytes, RunOptions | None]:
    """The run request's body as sent (for the idempotency hash) and its options."""
    limit = request.app[appkeys.SETTINGS].max_json_body_bytes
    raw = b""
    if request.can_read_body:
        if request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"Expected Content-Type application/json, got {request.content_type}",
                details={"content_type": request.content_type},
            )
        raw = await read_limited(request, limit)
    options = await read_json(request, RunOptions, limit=limit, optional=True, raw=raw)
    return raw, options


async def _queue(
    conn: asyncpg.Connection,
    job_id: str,
    p: Principal,
    options: RunOptions | None,
    request_id: str,
) -> int:
    """Queue a run of the tenant's job, if it may run now; the new attempt."""
    job = await jobs_store.lock_job(conn, job_id, p.tenant_id)
    if job is None:
        raise JobNotFound(job_id)
    feed = await feeds_store.get_feed_row(conn, job.feed_id)
    assert feed is not None
    queued = await lifecycle.request_run(
        conn,
        job,
        feed.status,
        jobs_store.effective_options(options, feed),
        requested_by=f"api:{p.key_id}",
        request_id=request_id,
    )
    if queued is lifecycle.Refusal.NOT_RUNNABLE:
        raise JobNotRunnable(details={"job_id": job_id})
    if queued is lifecycle.Refusal.ALREADY_ACTIVE:
        raise JobAlreadyActive(
            f"Job {job_id} is already {job.status}",
            details={"job_id": job_id, "status": job.status, "attempt": job.attempt},
        )
    if queued is lifecycle.Refusal.FEED_NOT_READY:
        raise FeedNotReady(
            f"Feed {feed.id} has no stored file (its upload"
            f" {'failed' if feed.status == 'upload_failed' else 'is under way'});"
            " upload one with PUT /feeds/{feed_id}/file",
            details={"feed_id": feed.id, "feed_status": feed.status},
        )
    assert isinstance(queued, int)
    return queued


def _accepted(job_id: str, body: bytes) -> web.Response:
    return web.Response(
        status=202,
        body=body,
        content_type="application/json",
        charset="utf-8",
        headers={"Location": f"/jobs/{job_id}", "Retry-After": "2"},
    )


@routes.post("/jobs/{job_id}/cancel")
@tenant
@d.doc(
    {
        "operationId": "cancel_job",
        "summary": "Cancel a queued or running job",
        "parameters": [d.JOB],
        "responses": {
            "202": d.ok(d.ref("JobView"), "Cancelled or cancelling", "ETag", *d.RATE),
            **d.errors("404", "409", *d.PROTECTED),
        },
    }
)
async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    if not ids.is_job_id(job_id):
        raise JobNotFound(job_id)
    p = principal(request)
    pool = request.app[appkeys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, job_id, p.tenant_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status not in ACTIVE_STATUSES:
            raise JobNotCancellable(
                f"Job {job_id} is {job.status}; only queued or running jobs can be cancelled",
                details={"job_id": job_id, "status": job.status},
            )
        await lifecycle.cancel(conn, job)
    request.app[appkeys.WATCHER].cache.invalidate(job_id)
    log.info("cancel_requested", job_id=job_id, status=job.status)
    row = await load_job(request, job_id)
    return job_response(row, request, status=202)


@routes.get("/jobs/{job_id}/runs")
@tenant
@d.doc(
    {
        "operationId": "list_runs",
        "summary": "Every run of a job, newest first",
        "parameters": [d.JOB],
        "responses": {
            "200": d.ok(d.ref("RunList"), "Runs", *d.RATE),
            **d.errors("404", *d.PROTECTED),
        },
    }
)
async def job_runs(request: web.Request) -> web.Response:
    row = await load_job(request, request.match_info["job_id"])

    runs = await jobs_store.list_runs(await read_pool(request), row.job_id)
    return json_response(RunList(job_id=row.job_id, runs=runs))


def _wants_csv(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/csv" in accept and "application/json" not in accept


@routes.get("/jobs/{job_id}/errors")
@tenant
@d.doc(
    {
        "operationId": "list_rejections",
        "summary": "Rows rejected by the latest run, in file order (all of them as CSV"
        " with Accept: text/csv)",
        "parameters": [d.JOB, d.limit(1000, 100), d.CURSOR],
        "responses": {
            "200": {
                "description": "A page of rejections, or (text/csv) all of them",
                "headers": d.headers(*d.RATE),
                "content": {
                    "application/json": {"schema": d.ref("ErrorList")},
                    "text/csv": {"schema": d.STR},
                },
            },
            **d.errors("400", "404", *d.PROTECTED),
        },
    }
)
async def job_errors(request: web.Request) -> web.StreamResponse:
    row = await load_job(request, request.match_info["job_id"])
    if _wants_csv(request):
        return await report.csv_report(request, row.job_id, principal(request).tenant_id)
    limit = query_int(request, "limit", 100, 1, 1000)
    pool = await read_pool(request)
    if request.query.get("cursor"):
        attempt, line, ordinal = decode_cursor(request.query["cursor"], tuple[int, int, int])
        after = (line, ordinal)
    else:
        attempt, after = await rejections.latest_errors_attempt(pool, row.job_id), (0, 0)
    rows = await rejections.list_errors(pool, row.job_id, attempt, after, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        ordinal, last = rows[-1]
        next_cursor = encode_cursor([attempt, last.line, ordinal])
    errors = [e for _, e in rows]
    return json_response(
        ErrorList(job_id=row.job_id, attempt=attempt, next_cursor=next_cursor, errors=errors)
    )
