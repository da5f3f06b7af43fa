"""Downloads: the rejections of a run as CSV (``GET /jobs/{id}/errors``, ``Accept:
text/csv``), a run's changes as CSV or JSON Lines. Streamed in keyset pages, each read in
its own short query, so a client that reads slowly holds no pooled connection; at most
MAX_STREAMS_PER_TENANT downloads of one tenant at once (per gateway process), and a client
that takes no bytes for STREAM_SEND_TIMEOUT_SECONDS is dropped. Cells a spreadsheet would
run as a formula are neutralised as OWASP recommends (docs/api.md, "Rejections as CSV")."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from service.core.logs import get_logger
from service.core.store import rejections
from service.gateway import appkeys
from service.gateway.middleware import STREAMING, read_pool

log = get_logger(__name__)
PAGE_ROWS = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would evaluate (it starts with = + - @, a tab or a CR) gets a
    leading single quote, which makes it text: OWASP's advice for CSV injection."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


async def _pages(
    pool: asyncpg.Pool, job_id: str, attempt: int
) -> AsyncIterator[list[list[object]]]:
    after = (0, 0)
    while True:
        rows = await rejections.list_errors(pool, job_id, attempt, after, PAGE_ROWS)
        if not rows:
            return
        yield [
            [r.line, neutralise(r.column or ""), r.code, neutralise(r.message), neutralise(r.raw)]
            for _, r in rows
        ]
        ordinal, last = rows[-1]
        after = (last.line, ordinal)


async def csv_report(request: web.Request, job_id: str, tenant_id: int) -> web.StreamResponse:
    """Every rejection of the latest run as CSV (flat memory, no connection held)."""
    pool = await read_pool(request)
    attempt = await rejections.latest_errors_attempt(pool, job_id)
    return await stream(
        request,
        tenant_id,
        csv_headers(f"{job_id}-{attempt}-rejections.csv"),
        csv_chunks(["line", "column", "code", "message", "raw"], _pages(pool, job_id, attempt)),
    )


def csv_headers(filename: str) -> dict[str, str]:
    return {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }


async def csv_chunks(
    header: list[str], pages: AsyncIterator[list[list[object]]]
) -> AsyncIterator[bytes]:
    """A header line, then each page's rows, as CSV bytes (one chunk a page)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(header)
    async for rows in pages:
        out.writerows(rows)
        yield _taken(buf)
    yield _taken(buf)


def _taken(buf: io.StringIO) -> bytes:
    data = buf.getvalue().encode()
    buf.seek(0)
    buf.truncate()
    return data


async def stream(
    request: web.Request,
    tenant_id: int,
    headers: dict[str, str],
    chunks: AsyncIterator[bytes],
) -> web.StreamResponse:
    """A download of ``chunks``: one of the tenant's MAX_STREAMS_PER_TENANT; a client that
    takes none of a chunk for STREAM_SEND_TIMEOUT_SECONDS is dropped."""
    app = request.app
    timeout = app[appkeys.SETTINGS].stream_send_timeout_seconds
    with app[appkeys.STREAMS].take(tenant_id):
        resp = web.StreamResponse(headers=headers)
        request[STREAMING] = True
        await resp.prepare(request)
        async for data in chunks:
            if data and not await _send(request, resp, data, timeout):
                return resp
        await resp.write_eof()
        return resp


async def _send(
    request: web.Request, resp: web.StreamResponse, data: bytes, timeout: float
) -> bool:
    """Write ``data``; a client that takes none of it for ``timeout`` seconds is dropped
    (False)."""
    try:
        async with asyncio.timeout(timeout):
            await resp.write(data)
    except TimeoutError:
        log.warning("stream_send_timeout", path=request.path, timeout_s=timeout)
        if request.transport is not None:
            request.transport.abort()
        return False
    return True
