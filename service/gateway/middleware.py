"""Request id, access log, error bodies, authentication and rate limiting."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable

import asyncpg
import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

from service.core.contracts import ErrorBody, encode
from service.core.errors import (
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceError,
    Unavailable,
)
from service.core.ids import is_correlation_id
from service.core.logs import ACCESS, get_logger
from service.core.replica import GONE
from service.core.store.keys import Principal
from service.gateway import appkeys, inputs
from service.gateway.access import PUBLIC, declared
from service.gateway.metrics import METRICS, Metrics
from service.gateway.ratelimit import RateLimiter

log = get_logger("service.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Generated request ids: a random prefix per process and a counter (unique across replicas
# without a uuid4, i.e. an os.urandom call, per request).
_ID_PREFIX = secrets.token_hex(12)
_ID_COUNTER = itertools.count(1)
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
# A download has sent its headers: the request can no longer be answered again.
STREAMING = web.RequestKey("streaming", bool)
PROTECTED = ("/jobs", "/feeds", "/webhooks")  # where an unmatched path still needs a key


def error_response(exc: ServiceError, request_id: str) -> web.Response:
    details = dict(exc.details)
    if exc.status >= 500:
        details.setdefault("request_id", request_id)
    body = ErrorBody(
        error_code=exc.error_code, message=exc.message, detail=exc.detail, details=details
    )
    resp = web.Response(
        status=exc.status, body=encode(body), content_type="application/json", charset="utf-8"
    )
    for name, value in exc.headers.items():
        resp.headers[name] = value
    if exc.status in (408, 413):
        resp.force_close()  # the rest of the body was not read: this connection is done
    return resp


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _translate_http(exc: web.HTTPException) -> ServiceError:
    if exc.status == 404:
        return RouteNotFound("No such route")
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()))
        return MethodNotAllowed(
            f"Method not allowed on this route; it takes {', '.join(allowed)}",
            details={"allowed": allowed},
            headers={"Allow": ", ".join(allowed)},
        )
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large")
    err = ServiceError(exc.reason or "HTTP error")
    err.status = exc.status  # type: ignore[misc]
    err.error_code = "HTTP_ERROR"  # type: ignore[misc]
    return err


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, one access log line, and every error mapped to the error body."""
    started = time.perf_counter()
    request_id = new_request_id(request.headers.get("x-request-id", ""))
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    # Every line the request causes names the job or feed it is about (ops filter by them).
    ids = {k: v for k in ("job_id", "feed_id") if (v := request.match_info.get(k))}
    structlog.contextvars.bind_contextvars(request_id=request_id, **ids)
    try:
        response = await _answer(request, handler, request_id)
    except web.HTTPException as exc:  # redirects and the like
        exc.headers["x-request-id"] = request_id
        raise
    response.headers["x-request-id"] = request_id
    _record(request, response, time.perf_counter() - started, ids)
    return response


async def _answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    """The handler's response, or the error body of what it raised (3xx are re-raised)."""
    try:
        response = await handler(request)
        if request.method not in ("GET", "HEAD") and 200 <= response.status < 300:
            request.app[appkeys.READS].wrote()  # the primary took a write: it is up
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_translate_http(exc), request_id)
    except ServiceError as exc:
        return error_response(exc, request_id)
    except GONE as exc:  # PostgreSQL (or S3) not reachable: 503, not 500
        reads = request.app[appkeys.READS]
        again = request.method in ("GET", "HEAD") and not request.get(STREAMING, False)
        if again and reads.standby_failed(exc):
            # read from a standby that went away: the same request again, on the primary
            return await _answer(request, handler, request_id)
        log.warning("database_unavailable", error=str(exc))
        reads.poke()  # the next read goes to a server that answers
        database = isinstance(exc, asyncpg.PostgresConnectionError)
        what = "The database" if database else "A backing service"
        return error_response(Unavailable.not_reachable(what), request_id)
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(ServiceError("Internal error"), request_id)


def _record(
    request: web.Request, response: web.StreamResponse, elapsed: float, ids: dict[str, str]
) -> None:
    """The request's metrics sample and its one access line."""
    route = request.match_info.route.resource
    p = request.get(PRINCIPAL)
    record(
        request.app[METRICS],
        request.method,
        request.path,
        route.canonical if route is not None else "unmatched",
        response.status,
        p.tenant if p else None,
        elapsed,
        request[REQUEST_ID],
        ids,
        bound=True,
    )


def record(
    metrics: Metrics,
    method: str,
    path: str,
    route: str,
    status: int,
    tenant: str | None,
    elapsed: float,
    request_id: str,
    ids: dict[str, str],
    *,
    bound: bool,
) -> None:
    """A request's metrics sample and its one access line. ``bound``: the request id and
    the job or feed ids are bound to the log context already (structlog adds them)."""
    metrics.observe(route, method, status, elapsed)
    line = {
        "event": "http_request",
        "method": method,
        "path": path,
        "status": status,
        "tenant": tenant,
        "duration_ms": round(elapsed * 1000, 2),
        "request_id": request_id,
        **ids,
    }
    if not ACCESS.write(line):
        del line["event"]
        if bound:
            del line["request_id"]
            for key in ids:
                del line[key]
        log.info("http_request", **line)


def new_request_id(incoming: str) -> str:
    """The client's ``x-request-id`` when it is a usable correlation id, else a new one."""
    return incoming if is_correlation_id(incoming) else f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _needs_key(request):
        return await handler(request)
    inputs.check_request(request)
    app = request.app
    key = request.headers.get("x-api-key")
    keys = app[appkeys.KEYS]
    p = keys.cached(key)
    if p is None:
        if not keys.seen_valid(key):
            # Throttled per client address before the look-up: a throttled guesser has no
            # guess checked at all (a right one gets 429 too). Keys that worked within the
            # hour skip this, so their owners behind the same address keep working.
            _take(app[appkeys.BAD_KEY_LIMITER], request.remote or "?", "unrecognised API keys")
        p = await keys.authenticate(app[appkeys.READS], key)
    request[PRINCIPAL] = p
    structlog.contextvars.bind_contextvars(tenant=p.tenant)
    limiter = app[appkeys.LIMITER]
    remaining = _take(limiter, p.key_id, "requests")
    try:
        response = await handler(request)
    except ServiceError as exc:
        exc.headers.update(limiter.headers(remaining, 0.0))
        raise
    # Set one by one: this runs on every poll, and a dict per request shows in the bench.
    headers = response.headers
    headers["RateLimit-Limit"] = limiter.limit_text
    headers["RateLimit-Remaining"] = str(remaining)
    headers["RateLimit-Reset"] = "0"
    return response


async def read_pool(request: web.Request) -> asyncpg.Pool:
    """Where a list, a page or a download reads from: the standby when it is current enough
    (DATABASE_READ_URL, service/core/replica.py), else the primary."""
    return await request.app[appkeys.READS].pool()


def _needs_key(request: web.Request) -> bool:
    """A matched route: unless it is declared public (service/gateway/access.py). No route
    matched: under the tenants' prefixes (a 401 there before a 404), else not."""
    match = request.match_info
    if isinstance(match, MatchInfoError):
        return _protected(request.path)
    return declared(match.handler) != PUBLIC


def _protected(path: str) -> bool:
    """``/jobs``, ``/feeds``, ``/webhooks`` and everything under them."""
    for prefix in PROTECTED:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return True
    return False


def _take(limiter: RateLimiter, key: Hashable, what: str) -> int:
    """One token from ``key``'s bucket (the tokens left), or 429 when it is empty."""
    allowed, remaining, wait = limiter.take(key)
    if not allowed:
        headers = limiter.headers(remaining, wait)
        headers["Retry-After"] = headers["RateLimit-Reset"] if wait >= 1 else "1"
        raise RateLimited(
            f"Rate limit of {limiter.rate:g} {what} per second (burst {limiter.burst}) exceeded",
            detail="Too many requests",
            headers=headers,
        )
    return remaining
