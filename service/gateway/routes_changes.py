"""What runs changed, over HTTP: a run's change list (``GET /jobs/{id}/changes``, JSON
pages, or all of it as JSON Lines or CSV by ``Accept``) and a feed's change feed across its
runs (``GET /feeds/{id}/changes?since=``), long-pollable like a job. Recorded by the loads
(``service.core.store.changes``); tenant-scoped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from service.core.contracts import (
    ChangeCounts,
    FeedChange,
    FeedChangeList,
    RunChange,
    RunChangeList,
    encode,
)
from service.core.errors import ChangesExpired, ChangesNotRecorded, RunNotFound
from service.core.store import catalog, changes
from service.core.store import feeds as feeds_store
from service.core.store.changes import Position
from service.gateway import apidoc as d
from service.gateway import appkeys, report
from service.gateway.access import tenant
from service.gateway.bodies import decode_cursor, encode_cursor, json_response, query_int
from service.gateway.middleware import principal, read_pool
from service.gateway.routes_feeds import own_feed
from service.gateway.routes_jobs import MAX_WAIT, load_job

routes = web.RouteTableDef()
PAGE = 2000  # changes per query of a download
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines")
_NO_COUNTS = ChangeCounts(inserted=0, updated=0, revived=0, deleted=0)


def _wanted(request: web.Request) -> str:
    """json (pages), jsonl or csv (everything, streamed): by ``Accept``."""
    accept = request.headers.get("Accept", "")
    if "application/json" in accept.replace("application/jsonl", ""):
        return "json"
    if any(t in accept for t in JSONL_TYPES):
        return "jsonl"
    return "csv" if "text/csv" in accept else "json"


def _run_change(c: changes.Change) -> RunChange:
    return RunChange(sku=c.sku, change=c.change, columns=c.columns)  # type: ignore[arg-type]


@routes.get("/jobs/{job_id}/changes")
@tenant
@d.doc(
    {
        "operationId": "list_run_changes",
        "summary": "Every product a run inserted, updated, revived or deleted (all of"
        " them as JSON Lines or CSV by Accept)",
        "parameters": [
            d.JOB,
            d.query("run", {**d.INT32, "minimum": 1}, "The run (default: the latest)"),
            d.limit(1000, 100),
            d.CURSOR,
        ],
        "responses": {
            "200": {
                "description": "A page of changes, or (JSON Lines, CSV) all of them",
                "headers": d.headers(*d.RATE),
                "content": {
                    "application/json": {"schema": d.ref("RunChangeList")},
                    "application/jsonl": {"schema": d.ref("RunChange")},
                    "text/csv": {"schema": d.STR},
                },
            },
            **d.errors("400", "404", "409", "410", *d.PROTECTED),
        },
    }
)
async def job_changes(request: web.Request) -> web.StreamResponse:
    job = await load_job(request, request.match_info["job_id"])
    pool = await read_pool(request)
    attempt = query_int(request, "run", job.attempt, 1, 2**31 - 1) if job.attempt else 0
    run = await changes.run_of(pool, job.job_id, attempt)
    if run is None:
        raise RunNotFound(
            f"Job {job.job_id} has no run {attempt}" if attempt else f"Job {job.job_id} never ran",
            details={"job_id": job.job_id, "run": attempt},
        )
    made = await changes.change_set(pool, job.job_id, attempt)
    if made is None and run.changed:
        _gone(request, job.job_id, attempt, run.finished_at)
    counts = (
        _NO_COUNTS
        if made is None
        else ChangeCounts(
            inserted=made.inserted, updated=made.updated, revived=made.revived, deleted=made.deleted
        )
    )
    kind = _wanted(request)
    if kind != "json":
        return await _download(request, job.job_id, attempt, kind, made)
    limit = query_int(request, "limit", 100, 1, 1000)
    after = _cursor(request, "cursor") if request.query.get("cursor") else changes.START
    found = []
    if made is not None:
        found = await changes.run_changes(pool, made, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return json_response(
        RunChangeList(
            job_id=job.job_id,
            run=attempt,
            status=run.status,
            counts=counts,
            next_cursor=encode_cursor(found[-1].position) if more else None,
            changes=[_run_change(c) for c in found],
        )
    )


def _gone(request: web.Request, job_id: str, attempt: int, finished: datetime | None) -> None:
    """A run that changed products but whose change list is not there: why."""
    days = request.app[appkeys.SETTINGS].retention_days
    details = {"job_id": job_id, "run": attempt}
    if finished is not None and finished < datetime.now(UTC) - timedelta(days=days):
        raise ChangesExpired(
            f"Run {attempt} of {job_id} finished more than RETENTION_DAYS ({days}) ago:"
            " its changes were deleted; the feed's products (GET /feeds/{id}/products)"
            " are as they are now",
            details=details,
        )
    raise ChangesNotRecorded(
        f"Run {attempt} of {job_id} changed products but recorded no change list"
        " (RECORD_CHANGES was off, or it ran before change lists existed)",
        details=details,
    )


async def _download(
    request: web.Request, job_id: str, attempt: int, kind: str, made: changes.ChangeSet | None
) -> web.StreamResponse:
    """Every change of the run, as JSON Lines or CSV, in flat memory."""
    pool = await read_pool(request)

    async def pages() -> AsyncIterator[list[changes.Change]]:
        after = changes.START
        while made is not None:
            page = await changes.run_changes(pool, made, after, PAGE)
            if not page:
                return
            yield page
            after = page[-1].position

    name = f"{job_id}-{attempt}-changes"
    if kind == "jsonl":
        headers = {
            "Content-Type": "application/jsonl; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}.jsonl"',
        }
        return await report.stream(request, principal(request).tenant_id, headers, _lines(pages()))
    rows = _csv_rows(pages())
    chunks = report.csv_chunks(["sku", "change", "columns"], rows)
    return await report.stream(
        request, principal(request).tenant_id, report.csv_headers(f"{name}.csv"), chunks
    )


async def _lines(pages: AsyncIterator[list[changes.Change]]) -> AsyncIterator[bytes]:
    async for page in pages:
        yield b"".join(encode(_run_change(c)) + b"\n" for c in page)


async def _csv_rows(
    pages: AsyncIterator[list[changes.Change]],
) -> AsyncIterator[list[list[object]]]:
    async for page in pages:
        yield [
            [report.neutralise(c.sku), c.change, report.neutralise(";".join(c.columns or []))]
            for c in page
        ]


# A position as this API hands it out: a seq within bigint, a sku as a load admits it.
CursorValue = tuple[
    Annotated[int, Meta(ge=0, le=2**63 - 1)],
    Annotated[str, Meta(max_length=256, pattern="^[^\\x00]*$")],
]


def _cursor(request: web.Request, field: str) -> Position:
    return decode_cursor(request.query[field], CursorValue, field)  # type: ignore[arg-type]


@routes.get("/feeds/{feed_id}/changes")
@tenant
@d.doc(
    {
        "operationId": "follow_feed_changes",
        "summary": "The feed's product changes across runs, in commit order, from a"
        " cursor (long-pollable)",
        "parameters": [
            d.FEED,
            d.query(
                "since",
                d.STR,
                "0 (the start, default), latest (now), or a cursor this feed returned",
            ),
            d.limit(1000, 100),
            d.WAIT,
        ],
        "responses": {
            "200": d.ok(d.ref("FeedChangeList"), "Changes after `since`", *d.RATE),
            **d.errors("400", "404", "410", *d.PROTECTED),
        },
    }
)
async def feed_changes(request: web.Request) -> web.Response:
    feed_id = await own_feed(request)
    pool = await read_pool(request)
    limit = query_int(request, "limit", 100, 1, 1000)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    since = request.query.get("since") or "0"
    if since == "latest":
        after = await changes.head(pool, feed_id)
    elif since == "0":
        after = changes.START
    else:
        after = _cursor(request, "since")
    horizon = await changes.horizon(pool, feed_id)
    if after[0] < horizon:
        raise ChangesExpired(
            "Changes after this cursor were deleted by retention (RETENTION_DAYS): read the"
            " feed's products (GET /feeds/{id}/products) and follow the changes from"
            " ?since=latest, taken before that read",
            details={"feed_id": feed_id, "since": since, "oldest": encode_cursor([horizon, ""])},
        )
    found = await changes.feed_changes(pool, feed_id, after, limit + 1)
    if not found and wait:
        found = await _wait(request, feed_id, after, limit + 1, wait)
        pool = await read_pool(request)  # one that has what woke us
    more = len(found) > limit
    found = found[:limit]
    products = await catalog.by_skus(pool, feed_id, sorted({c.sku for c in found}))
    page = [
        FeedChange(
            cursor=encode_cursor(c.position),
            job_id=c.job_id,
            run=c.attempt,
            sku=c.sku,
            change=c.change,  # type: ignore[arg-type]
            columns=c.columns,
            product=products[c.sku],
        )
        for c in found
    ]
    return json_response(
        FeedChangeList(
            feed_id=feed_id,
            since=since if since in ("0", "latest") else encode_cursor(after),
            next_cursor=page[-1].cursor if page else encode_cursor(after),
            more=more,
            changes=page,
        )
    )


async def _wait(
    request: web.Request, feed_id: str, after: Position, limit: int, seconds: int
) -> list[changes.Change]:
    """Hold until the feed has a change after ``after`` or time's up. A load commits its
    changes with its validation job's completion, whose NOTIFY wakes us."""
    watcher = request.app[appkeys.WATCHER]
    feed = await feeds_store.get_feed_row(await read_pool(request), feed_id)
    assert feed is not None  # owned: checked
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or watcher.closing:
            return []
        if watcher.connected.is_set():
            await watcher.wait(feed.validation_job_id, remaining)
        else:  # no notifications to wait for: a slow re-read
            await asyncio.sleep(min(1.0, remaining))
        found = await changes.feed_changes(await read_pool(request), feed_id, after, limit)
        if found:
            return found
