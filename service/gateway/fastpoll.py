"""Polls of an unchanged job, answered before aiohttp's router and middlewares.

Most requests a job service gets are clients polling ``GET /jobs/{id}`` for a job that has
not changed. When everything that answer needs is already in memory (the API key's tenant,
in the key cache; the job, in the job cache kept current by the database's change
notices; its rendered body and headers, per version) the answer takes no I/O at all, and
routing it through the URL dispatcher and two middleware coroutines cost about a third of
the gateway's time per poll (docs/benchmarks.md). ``answer`` does the same work inline:
the same checks, the same headers, the same metrics sample and access line.

Anything else (another route, a query string such as ``?wait``, a key or job not cached,
an empty rate-limit bucket, any fault) returns ``None`` and takes the full path, which
answers it exactly as before. So does every request when this is not installed: the
fast path is an optimisation only, never a second implementation of a rule.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.core.logs import get_logger
from service.gateway import appkeys
from service.gateway.jobs_view import BODIES, respond
from service.gateway.metrics import METRICS
from service.gateway.middleware import new_request_id, record

log = get_logger("service.http")

ROUTE = "/jobs/{job_id}"  # the metrics label of the route it answers
_PREFIX = "/jobs/"

Handle = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(app: web.Application, request: web.Request) -> web.Response | None:
    """The answer to a cached poll, or None: take the full path."""
    if request.method != "GET" or request.query_string:
        return None
    path = request.path
    if not path.startswith(_PREFIX):
        return None
    job_id = path[len(_PREFIX) :]
    if "/" in job_id:
        return None
    started = time.perf_counter()
    headers = request.headers
    principal = app[appkeys.KEYS].cached(headers.get("x-api-key"))
    if principal is None:
        return None
    # Only well-formed ids of this tenant's jobs are ever cached (routes_jobs.load_job).
    row = app[appkeys.WATCHER].cache.get(job_id, principal.tenant_id)
    if row is None:
        return None
    limiter = app[appkeys.LIMITER]
    allowed, remaining, _ = limiter.take(principal.key_id)
    if not allowed:
        return None  # the full path answers 429 (an empty bucket loses nothing more)
    request_id = new_request_id(headers.get("x-request-id", ""))
    extra = {  # what the middlewares add to the full path's answer
        "RateLimit-Limit": limiter.limit_text,
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": "0",
        "x-request-id": request_id,
    }
    response = respond(app[BODIES].of(row), headers.get("If-None-Match"), extra=extra)
    metrics = app[METRICS]
    metrics.early_polls.count += 1
    record(
        metrics,
        "GET",
        path,
        ROUTE,
        response.status,
        principal.tenant,
        time.perf_counter() - started,
        request_id,
        {"job_id": job_id},
        bound=False,
    )
    return response


def install(app: web.Application) -> None:
    """Put ``answer`` in front of the application's own request handling.

    aiohttp builds its server from ``Application._handle`` (whatever runs the app:
    ``run_app``, a test server); this wraps that bound method on this one instance. It is
    private API, so aiohttp is pinned, and ``test_fast_poll`` fails if polls stop being
    answered here after an upgrade.
    """
    full: Handle = app._handle

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            early = answer(app, request)
        except Exception:  # never a fault of its own: the full path answers instead
            log.exception("fast_poll_failed", path=request.path)
            early = None
        return early if early is not None else await full(request)

    app._handle = handle  # type: ignore[method-assign]
