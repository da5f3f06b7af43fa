"""The job representation: body, ETag and polling headers, shared by every job route."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from aiohttp import web

from service.core.contracts import TERMINAL_STATUSES, JobView, encode
from service.core.store.jobs import JobRecord
from service.core.store.rows import raw

# JobView's fields a job record holds as they are; the JSON ones go out as raw JSON.
_AS_THEY_ARE = tuple(
    f for f in JobView.__struct_fields__ if f not in ("progress", "result", "error")
)


def job_view(row: JobRecord, *, with_result: bool = True) -> JobView:
    return JobView(
        **{name: getattr(row, name) for name in _AS_THEY_ARE},
        progress=raw(row.progress),
        result=raw(row.result) if with_result else None,
        error=raw(row.error),
    )


def etag_of(row: JobRecord) -> str:
    return f'"{row.job_id}.{row.version}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header == etag:  # what a polling client sends back, checked first
        return True
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def is_terminal(row: JobRecord) -> bool:
    return row.status in TERMINAL_STATUSES


class Rendered(NamedTuple):
    etag: str
    body: bytes
    headers: dict[str, str]  # ETag, Cache-Control, Retry-After (if any), Content-Type
    not_modified: dict[str, str]  # the same without Content-Type, for a 304


class Bodies:
    """Rendered job versions by ETag: a job's representation changes only with its
    version, so a poll of an unchanged job sends bytes and headers prepared once. Bounded,
    oldest out first. Only handed out after the job's owner was checked
    (routes_jobs.load_job)."""

    def __init__(self, size: int = 10_000) -> None:
        self._rendered: OrderedDict[str, Rendered] = OrderedDict()
        self._size = size

    def of(self, row: JobRecord) -> Rendered:
        etag = etag_of(row)
        hit = self._rendered.get(etag)
        if hit is None:
            headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
            if row.retry_after is not None:
                headers["Retry-After"] = str(row.retry_after)
            not_modified = dict(headers)
            headers["Content-Type"] = "application/json; charset=utf-8"
            hit = self._rendered[etag] = Rendered(
                etag, encode(job_view(row)), headers, not_modified
            )
            if len(self._rendered) > self._size:
                self._rendered.popitem(last=False)
        return hit


BODIES = web.AppKey("job_bodies", Bodies)


def job_response(row: JobRecord, request: web.Request, *, status: int = 200) -> web.Response:
    return respond(request.app[BODIES].of(row), request.headers.get("If-None-Match"), status)


def respond(
    rendered: Rendered,
    if_none_match: str | None,
    status: int = 200,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """A job version's answer: 304 when the client has it, else its body (``extra``:
    headers of this request, such as its id)."""
    if status == 200 and etag_matches(if_none_match, rendered.etag):
        headers = {**rendered.not_modified, **extra} if extra else rendered.not_modified
        return web.Response(status=304, headers=headers)
    headers = {**rendered.headers, **extra} if extra else rendered.headers
    return web.Response(status=status, body=rendered.body, headers=headers)
