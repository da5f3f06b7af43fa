"""The job representation: body, ETag and polling headers, shared by every job route."""

from __future__ import annotations

from collections import OrderedDict

import asyncpg
import msgspec
from aiohttp import web

from service.contracts import TERMINAL_STATUSES, JobView, encode


def job_view(row: asyncpg.Record, *, with_result: bool = True) -> JobView:
    def raw(value: str | None) -> msgspec.Raw | None:
        return None if value is None else msgspec.Raw(value.encode())

    return JobView(
        job_id=row["job_id"],
        feed_id=row["feed_id"],
        job_type=row["job_type"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempt=row["attempt"],
        message=row["message"],
        progress=raw(row["progress"]),
        retry_after=row["retry_after"],
        result=raw(row["result"]) if with_result else None,
        error=raw(row["error"]),
    )


def etag_of(row: asyncpg.Record) -> str:
    return f'"{row["job_id"]}.{row["version"]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def is_terminal(row: asyncpg.Record) -> bool:
    return row["status"] in TERMINAL_STATUSES


class Bodies:
    """Encoded job bodies by ETag: a job's representation changes only with its version,
    so a poll of an unchanged job sends bytes encoded once. Bounded, oldest out first. Only
    handed out after the job's owner was checked (routes_jobs._load)."""

    def __init__(self, size: int = 10_000) -> None:
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._size = size

    def of(self, row: asyncpg.Record, etag: str) -> bytes:
        body = self._bodies.get(etag)
        if body is None:
            body = self._bodies[etag] = encode(job_view(row))
            if len(self._bodies) > self._size:
                self._bodies.popitem(last=False)
        return body


BODIES = web.AppKey("job_bodies", Bodies)


def job_response(row: asyncpg.Record, request: web.Request, *, status: int = 200) -> web.Response:
    etag = etag_of(row)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if row["retry_after"] is not None:
        headers["Retry-After"] = str(row["retry_after"])
    if status == 200 and etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(
        status=status,
        body=request.app[BODIES].of(row, etag),
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
