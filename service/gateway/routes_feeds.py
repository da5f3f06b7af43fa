"""/feeds routes: upload (streamed to S3) or register a feed, new file versions, read a feed."""

from __future__ import annotations

import asyncio
import posixpath
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from service.core import ids, s3, s3_events, schedules
from service.core.contracts import (
    DEFAULT_MAX_DELETED_RATIO,
    ENCODINGS,
    FEED_STATUSES,
    MAX_DESCRIPTION,
    MAX_TAGS,
    UNKNOWN_POLICIES,
    ColumnMap,
    FeedCreated,
    FeedList,
    JobError,
    Ratio,
    RegisterFeed,
    ScheduleBody,
    SubmissionResult,
    Tags,
    UpdateFeed,
    encode,
    job_error_code,
)
from service.core.errors import (
    FeedNotFound,
    InvalidRequest,
    ScheduleNotFound,
    ServiceError,
)
from service.core.logs import get_logger
from service.core.product import NAMES
from service.core.retry import TRANSIENT
from service.core.s3 import S3Uri, head, parse_s3_uri, upload_stream
from service.core.s3_access import may_read, may_watch, upload_uri
from service.core.store import feeds as feeds_store
from service.core.store import lifecycle, s3_prefixes
from service.core.store import schedules as schedules_store
from service.gateway import apidoc as d
from service.gateway import appkeys
from service.gateway.access import tenant
from service.gateway.bodies import json_response, list_query, page, query_int, query_tags, read_json
from service.gateway.middleware import principal, read_pool
from service.gateway.uploads import UploadBody, check_upload_type

log = get_logger(__name__)
routes = web.RouteTableDef()

DELIMITERS = {",": ",", ";": ";", "|": "|", "\t": "\t", "tab": "\t", "\\t": "\t"}


def _upload_options(request: web.Request) -> dict[str, Any]:
    q = request.query
    mode = q.get("mode") or "upsert"
    if mode not in ("upsert", "snapshot"):
        raise InvalidRequest(
            "Query parameter `mode` must be upsert or snapshot", details={"field": "mode"}
        )
    delimiter = DELIMITERS.get(q.get("delimiter") or ",")
    if delimiter is None:
        raise InvalidRequest(
            "Query parameter `delimiter` must be one of , ; | or tab",
            details={"field": "delimiter"},
        )
    encoding = q.get("encoding") or "utf-8"
    if encoding not in ENCODINGS:
        raise InvalidRequest(
            f"Query parameter `encoding` must be one of {', '.join(ENCODINGS)}",
            details={"field": "encoding"},
        )
    name = q.get("name") or None
    if name is not None and len(name) > 200:
        raise InvalidRequest(
            "Query parameter `name` is limited to 200 characters", details={"field": "name"}
        )
    max_rejected = (
        query_int(request, "max_rejected_rows", -1, 0, 2**31 - 1)
        if q.get("max_rejected_rows")
        else None
    )
    ratio = q.get("max_deleted_ratio")
    max_deleted = DEFAULT_MAX_DELETED_RATIO
    if ratio is not None:
        try:  # the rule of the JSON bodies' field: contracts.Ratio
            max_deleted = msgspec.convert(ratio, Ratio, strict=False)
        except msgspec.ValidationError:
            raise InvalidRequest(
                "Query parameter `max_deleted_ratio` must be a number from 0 to 1",
                details={"field": "max_deleted_ratio"},
            ) from None
    columns: dict[str, str] = {}
    if q.get("columns"):
        try:  # the JSON bodies' rule: contracts.ColumnMap
            columns = msgspec.json.decode(q["columns"], type=ColumnMap)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                "Query parameter `columns` must be a JSON object of header names to product"
                f" columns ({', '.join(NAMES)}): {exc}",
                details={"field": "columns"},
            ) from None
    tags = [t for t in (q.get("tags") or "").split(",") if t]
    description = q.get("description") or None
    try:  # the JSON bodies' rules: contracts.Tags
        msgspec.convert(tags, Tags)
    except msgspec.ValidationError:
        raise InvalidRequest(
            f"Query parameter `tags` must be at most {MAX_TAGS} comma-separated tags, each"
            " 1 to 64 of A-Z a-z 0-9 . _ : / - (a letter or digit first)",
            details={"field": "tags"},
        ) from None
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"Query parameter `description` is limited to {MAX_DESCRIPTION} characters",
            details={"field": "description"},
        )
    unknown = q.get("unknown_columns") or "keep"
    if unknown not in UNKNOWN_POLICIES:
        raise InvalidRequest(
            "Query parameter `unknown_columns` must be keep, ignore or reject",
            details={"field": "unknown_columns"},
        )
    return {
        "mode": mode,
        "delimiter": delimiter,
        "name": name,
        "max_rejected_rows": max_rejected,
        "max_deleted_ratio": max_deleted,
        "encoding": encoding,
        "columns": columns,
        "unknown_columns": unknown,
        "tags": tags,
        "description": description,
    }


async def _receive(
    request: web.Request, body: UploadBody, feed_id: str, js_id: str, uri: S3Uri
) -> None:
    """Stream the body to S3 and record the outcome in the JS job and the feed: the feed's
    file becomes this version on success; a first upload that fails leaves the feed
    ``upload_failed`` (not runnable), a later one leaves the previous version in place."""
    app = request.app
    pool = app[appkeys.POOL]
    lease = app[appkeys.SETTINGS].upload_lease_seconds
    heartbeat = asyncio.create_task(_keep_leased(pool, js_id, lease), name=f"lease-{js_id}")
    try:
        stored = await upload_stream(app[appkeys.S3], uri, body.chunks(), limit=body.limit)
    except BaseException as exc:
        heartbeat.cancel()
        if isinstance(exc, ServiceError):
            # A documented job error code (contracts.JOB_ERROR_CODES), else the general one.
            code = job_error_code(exc.error_code, "UPLOAD_FAILED")
            message = exc.message
            exc.details.update({"feed_id": feed_id, "submission_job_id": js_id})
        else:
            code, message = "UPLOAD_FAILED", f"The upload broke off: {type(exc).__name__}"
        async with pool.acquire() as conn, conn.transaction():
            await lifecycle.end_submission(
                conn, js_id, result=None, message=message, error=JobError(code, message)
            )
            await feeds_store.upload_failed(conn, feed_id)
        app[appkeys.WATCHER].cache.invalidate(js_id)
        log.warning("upload_failed", feed_id=feed_id, job_id=js_id, code=code)
        raise
    heartbeat.cancel()
    result = SubmissionResult(bytes=stored.bytes, sha256=stored.sha256, s3_uri=str(uri))
    async with pool.acquire() as conn, conn.transaction():
        await feeds_store.set_file(conn, feed_id, str(uri), js_id)
        await lifecycle.end_submission(
            conn,
            js_id,
            result=encode(result).decode(),
            error=None,
            message=f"Stored {stored.bytes} bytes",
        )
    app[appkeys.WATCHER].cache.invalidate(js_id)
    log.info("upload_stored", feed_id=feed_id, job_id=js_id, bytes=stored.bytes)


async def _lease(request: web.Request, conn: asyncpg.Connection, js_id: str) -> None:
    """A receiving submission's first lease, in the transaction that creates it: one whose
    gateway cannot write a lease (the database cut just then) must not be left receiving,
    leaseless, until UPLOAD_DEADLINE_SECONDS (make soak found JS00186 so)."""
    await lifecycle.renew_upload(conn, js_id, request.app[appkeys.SETTINGS].upload_lease_seconds)


async def _keep_leased(pool: asyncpg.Pool, js_id: str, lease: float) -> None:
    """Renew a receiving upload's lease every third of it (a database blip is retried at
    the next beat; the lease has room for two misses)."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            await lifecycle.renew_upload(pool, js_id, lease)
        except TRANSIENT as exc:
            log.warning("upload_lease_not_renewed", job_id=js_id, error=str(exc))


@routes.post("/feeds")
@tenant
@d.doc(
    {
        "operationId": "create_feed",
        "summary": "Upload a CSV (streamed to S3), or register an S3 object (JSON)",
        "parameters": d.UPLOAD_QUERY,
        "requestBody": {
            **d.upload_body("The CSV (Content-Encoding: gzip allowed), or RegisterFeed"),
            "content": {
                **d.upload_body("")["content"],
                "application/json": {"schema": d.ref("RegisterFeed")},
            },
        },
        "responses": {
            "201": d.CREATED,
            **d.errors("400", "408", "413", "415", *d.PROTECTED),
        },
    }
)
async def create_feed(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        return await _register(request)
    check_upload_type(request)
    opts = _upload_options(request)
    body = UploadBody(request, request.app[appkeys.SETTINGS])
    await body.open()  # an empty or too large body is refused before the feed exists
    p = principal(request)
    pool = request.app[appkeys.POOL]
    bucket = request.app[appkeys.SETTINGS].s3_bucket
    async with pool.acquire() as conn, conn.transaction():
        feed_id, js_id, jv_id, _ = await feeds_store.create_feed(
            conn,
            tenant_id=p.tenant_id,
            name=opts["name"],
            s3_uri=None,
            source="upload",
            mode=opts["mode"],
            delimiter=opts["delimiter"],
            max_rejected_rows=opts["max_rejected_rows"],
            max_deleted_ratio=opts["max_deleted_ratio"],
            encoding=opts["encoding"],
            columns=opts["columns"],
            unknown_columns=opts["unknown_columns"],
            description=opts["description"],
            tags=opts["tags"],
            submission_status="running",
        )
        await _lease(request, conn, js_id)
    uri = upload_uri(bucket, p.tenant_id, feed_id, js_id)
    log.info("feed_created", feed_id=feed_id, source="upload")
    await _receive(request, body, feed_id, js_id, uri)
    return json_response(
        FeedCreated(feed_id, js_id, jv_id), status=201, headers={"Location": f"/feeds/{feed_id}"}
    )


async def _register(request: web.Request) -> web.Response:
    settings = request.app[appkeys.SETTINGS]
    body = await read_json(request, RegisterFeed, limit=settings.max_json_body_bytes)
    assert body is not None
    p = principal(request)
    pool = request.app[appkeys.POOL]
    if body.parts:
        return await _register_parts(request, body)
    if body.watch and s3_events.is_pattern(body.s3_uri):
        return await _register_watch(request, body)
    if s3_events.is_pattern(body.s3_uri):
        raise InvalidRequest(
            f"{body.s3_uri[:200]} is a prefix or a pattern: set parts: true to load the part"
            " files it names as one file, or watch: true to load each new file there",
            details={"field": "s3_uri", "s3_uri": body.s3_uri[:200]},
        )
    uri = parse_s3_uri(body.s3_uri)
    allowed = may_read(
        uri, p.tenant_id, settings.s3_bucket, await s3_prefixes.allowed(pool, p.tenant_id)
    )
    # Not allowed answers exactly as not found: existence is not leaked.
    info = await head(request.app[appkeys.S3], uri) if allowed else None
    if info is None:
        raise InvalidRequest(
            f"Object {uri} does not exist or is not readable",
            details={"field": "s3_uri", "s3_uri": str(uri)},
        )
    result = SubmissionResult(bytes=info.size, sha256=None, s3_uri=str(uri), etag=info.etag)
    return await _create_registered(
        request, body, str(uri), posixpath.basename(uri.key), result, watch=str(uri)
    )


async def _create_registered(
    request: web.Request,
    body: RegisterFeed,
    s3_uri: str | None,
    name: str,
    result: SubmissionResult | None,
    *,
    watch: str,
) -> web.Response:
    """The feed of a registration: its file (``result``: stored; None: none yet), and what
    it watches when ``body.watch``."""
    p = principal(request)
    async with request.app[appkeys.POOL].acquire() as conn, conn.transaction():
        feed_id, js_id, jv_id, _ = await feeds_store.create_feed(
            conn,
            tenant_id=p.tenant_id,
            name=body.name or name,
            s3_uri=s3_uri,
            source="register",
            mode=body.mode,
            delimiter=body.delimiter,
            max_rejected_rows=body.max_rejected_rows,
            max_deleted_ratio=body.max_deleted_ratio,
            encoding=body.encoding,
            columns=body.columns,
            unknown_columns=body.unknown_columns,
            description=body.description,
            tags=body.tags,
            submission_status="created" if result is None else "completed",
            submission_result=None if result is None else encode(result).decode(),
        )
        if body.watch:
            await feeds_store.set_watch(conn, feed_id, watch)
    log.info("feed_created", feed_id=feed_id, source="register", watch=body.watch)
    return json_response(
        FeedCreated(feed_id, js_id, jv_id), status=201, headers={"Location": f"/feeds/{feed_id}"}
    )


async def _readable_folder(request: web.Request, body: RegisterFeed) -> str:
    """The folder of a pattern (``s3://b/in/`` of ``s3://b/in/*.csv``), if the tenant may read
    every object in it (else the 400 of a folder that does not exist)."""
    settings = request.app[appkeys.SETTINGS]
    folder = s3_events.fixed_part(body.s3_uri)
    parse_s3_uri(folder + "x")  # the usual 400 for a malformed s3 URI
    p = principal(request)
    allowed = await s3_prefixes.allowed(request.app[appkeys.POOL], p.tenant_id)
    if not may_watch(folder, p.tenant_id, settings.s3_bucket, allowed):
        raise InvalidRequest(
            f"Prefix {folder} does not exist or is not readable",
            details={"field": "s3_uri", "s3_uri": body.s3_uri},
        )
    return folder


async def _register_watch(request: web.Request, body: RegisterFeed) -> web.Response:
    """A feed that follows a prefix: no file yet; the first object event brings one."""
    watch = body.s3_uri
    await _readable_folder(request, body)
    return await _create_registered(request, body, None, watch, None, watch=watch)


async def _register_parts(request: web.Request, body: RegisterFeed) -> web.Response:
    """A feed whose file is the part files a pattern names, loaded as one at each run (and,
    watched, run by its folder's _SUCCESS or _manifest object)."""
    pattern = body.s3_uri
    if not s3_events.is_pattern(pattern):
        raise InvalidRequest(
            "With parts, s3_uri names the part files: a prefix ending in '/'"
            " (s3://bucket/export/) or a glob in its last segment (s3://bucket/export/part-*.csv)",
            details={"field": "s3_uri", "s3_uri": pattern[:200]},
        )
    folder = await _readable_folder(request, body)
    parts = await s3.list_parts(request.app[appkeys.S3], pattern)
    if len(parts) > s3.MAX_PARTS:
        raise InvalidRequest(
            f"{pattern[:200]} matches more than {s3.MAX_PARTS} part files",
            details={"field": "s3_uri", "limit": s3.MAX_PARTS},
        )
    if not parts and not body.watch:
        raise InvalidRequest(
            f"No part file matches {pattern[:200]} (markers such as _SUCCESS are not parts)",
            details={"field": "s3_uri", "s3_uri": pattern[:200]},
        )
    result = None
    if parts:
        ident = s3.parts_identity(parts)
        result = SubmissionResult(bytes=ident.size, sha256=None, s3_uri=pattern, etag=ident.etag)
    return await _create_registered(request, body, pattern, pattern, result, watch=folder)


@routes.put("/feeds/{feed_id}/file")
@tenant
@d.doc(
    {
        "operationId": "replace_file",
        "summary": "A new version of an uploaded feed's file",
        "parameters": [d.FEED],
        "requestBody": d.upload_body("The CSV (Content-Encoding: gzip allowed)"),
        "responses": {
            "201": d.CREATED,
            **d.errors("400", "404", "408", "413", "415", *d.PROTECTED),
        },
    }
)
async def replace_file(request: web.Request) -> web.Response:
    feed_id = request.match_info["feed_id"]
    p = principal(request)
    if not ids.is_feed_id(feed_id):
        raise FeedNotFound(feed_id)
    check_upload_type(request)
    body = UploadBody(request, request.app[appkeys.SETTINGS])
    await body.open()
    pool = request.app[appkeys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        feed = await feeds_store.lock_feed_row(conn, feed_id, p.tenant_id)
        if feed is None:
            raise FeedNotFound(feed_id)
        if feed.source != "upload":
            raise InvalidRequest(
                f"Feed {feed_id} reads {feed.s3_uri}, which its owner updates in S3;"
                " only uploaded feeds take a new file here",
                details={"feed_id": feed_id},
            )
        js_id, _ = await feeds_store.new_submission(conn, p.tenant_id, feed_id)
        await _lease(request, conn, js_id)
    uri = upload_uri(request.app[appkeys.SETTINGS].s3_bucket, p.tenant_id, feed_id, js_id)
    await _receive(request, body, feed_id, js_id, uri)
    return json_response(
        FeedCreated(feed_id, js_id, feed.validation_job_id),
        status=201,
        headers={"Location": f"/feeds/{feed_id}"},
    )


@routes.get("/feeds")
@tenant
@d.doc(
    {
        "operationId": "list_feeds",
        "summary": "The tenant's feeds, newest first",
        "parameters": [
            d.query("status", {"enum": list(FEED_STATUSES)}, "Only feeds in it"),
            *d.TAG_QUERY,
            d.limit(100, 50),
            d.CURSOR,
            *d.LIST_QUERY,
        ],
        "responses": {
            "200": d.ok(d.ref("FeedList"), "A page of feeds", *d.RATE),
            **d.errors("400", *d.PROTECTED),
        },
    }
)
async def list_feeds(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status not in (None, *FEED_STATUSES):
        raise InvalidRequest(
            f"Query parameter `status` must be one of {', '.join(FEED_STATUSES)}",
            details={"field": "status"},
        )
    listing = list_query(request, tuple[datetime, str])
    limit = listing.limit
    tags, all_tags = query_tags(request)
    rows, total = await feeds_store.list_feeds(
        await read_pool(request),
        principal(request).tenant_id,
        status=status,
        cursor=listing.after,
        limit=limit + 1,
        newest_first=listing.newest_first,
        with_total=listing.with_total,
        tags=tags,
        all_tags=all_tags,
    )
    rows, cursor = page(rows, listing, lambda r: [r[1].isoformat(), r[0].feed_id])
    return json_response(
        FeedList(feeds=[feed for feed, _ in rows], next_cursor=cursor, total=total)
    )


@routes.patch("/feeds/{feed_id}")
@tenant
@d.doc(
    {
        "operationId": "update_feed",
        "summary": "Set a feed's name, description or tags (the fields given)",
        "parameters": [d.FEED],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": d.ref("UpdateFeed")}},
        },
        "responses": {
            "200": d.ok(d.ref("FeedView"), "The feed", *d.RATE),
            **d.errors("400", "404", "413", "415", *d.PROTECTED),
        },
    }
)
async def update_feed(request: web.Request) -> web.StreamResponse:
    """Set a feed's name, description or tags (the fields given)."""
    feed_id = request.match_info["feed_id"]
    if not ids.is_feed_id(feed_id):
        raise FeedNotFound(feed_id)
    settings = request.app[appkeys.SETTINGS]
    body = await read_json(request, UpdateFeed, limit=settings.max_json_body_bytes)
    assert body is not None
    fields = {
        name: getattr(body, name)
        for name in UpdateFeed.__struct_fields__
        if getattr(body, name) is not msgspec.UNSET
    }
    if "tags" in fields:
        fields["tags"] = sorted(set(fields["tags"]))
    pool = request.app[appkeys.POOL]
    tenant_id = principal(request).tenant_id
    async with pool.acquire() as conn:
        if not await feeds_store.update_feed(conn, feed_id, tenant_id, fields):
            raise FeedNotFound(feed_id)
    log.info("feed_updated", feed_id=feed_id, fields=sorted(fields))
    return await get_feed(request)


async def own_feed(request: web.Request) -> str:
    feed_id = request.match_info["feed_id"]
    p = principal(request)
    if not ids.is_feed_id(feed_id) or not await request.app[appkeys.READS].primary_first(
        lambda db: feeds_store.owned(db, feed_id, p.tenant_id)
    ):
        raise FeedNotFound(feed_id)
    return feed_id


@routes.put("/feeds/{feed_id}/schedule")
@tenant
@d.doc(
    {
        "operationId": "put_schedule",
        "summary": "Run the feed on a cron expression (in a time zone) or every N seconds",
        "parameters": [d.FEED],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": d.ref("ScheduleBody")}},
        },
        "responses": {
            "200": d.ok(d.ref("ScheduleView"), "The schedule, with next_run_at", *d.RATE),
            **d.errors("400", "404", "413", "415", *d.PROTECTED),
        },
    }
)
async def put_schedule(request: web.Request) -> web.Response:
    """Run the feed on a cron expression (in a time zone) or every N seconds."""
    feed_id = await own_feed(request)
    settings = request.app[appkeys.SETTINGS]
    body = await read_json(request, ScheduleBody, limit=settings.max_json_body_bytes)
    assert body is not None
    schedules.check(body)
    first = schedules.next_run(body.cron, body.every_seconds, body.timezone, datetime.now(UTC))
    pool = request.app[appkeys.POOL]
    async with pool.acquire() as conn:
        await schedules_store.put(conn, feed_id, body, first)
        view = await schedules_store.get(conn, feed_id)
    log.info("schedule_set", feed_id=feed_id, cron=body.cron, every_seconds=body.every_seconds)
    return json_response(view)


@routes.delete("/feeds/{feed_id}/schedule")
@tenant
@d.doc(
    {
        "operationId": "delete_schedule",
        "summary": "Stop running the feed on a schedule",
        "parameters": [d.FEED],
        "responses": {
            "204": {"description": "Removed", "headers": d.headers(*d.RATE)},
            **d.errors("404", *d.PROTECTED),
        },
    }
)
async def delete_schedule(request: web.Request) -> web.Response:
    feed_id = await own_feed(request)
    if not await schedules_store.delete(request.app[appkeys.POOL], feed_id):
        raise ScheduleNotFound(f"Feed {feed_id} has no schedule", details={"feed_id": feed_id})
    log.info("schedule_removed", feed_id=feed_id)
    return web.Response(status=204)


@routes.get("/feeds/{feed_id}")
@tenant
@d.doc(
    {
        "operationId": "get_feed",
        "summary": "Read a feed",
        "parameters": [d.FEED],
        "responses": {
            "200": d.ok(d.ref("FeedView"), "The feed", *d.RATE),
            **d.errors("404", *d.PROTECTED),
        },
    }
)
async def get_feed(request: web.Request) -> web.Response:
    feed_id = request.match_info["feed_id"]
    if not ids.is_feed_id(feed_id):
        raise FeedNotFound(feed_id)
    pool = request.app[appkeys.POOL]
    view = await feeds_store.get_feed(pool, feed_id, principal(request).tenant_id)
    if view is None:
        raise FeedNotFound(feed_id)
    view.schedule = await schedules_store.get(pool, feed_id)
    if view.schedule is not None:
        view.next_run_at = view.schedule.next_run_at
    return json_response(view)
