"""Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.core.store import health as health_store
from service.gateway import apidoc as d
from service.gateway import appkeys, asyncapi, openapi
from service.gateway.access import public
from service.gateway.bodies import json_response
from service.gateway.metrics import METRICS

routes = web.RouteTableDef()


@routes.get("/healthz")
@public
@d.doc(
    {
        "operationId": "healthz",
        "summary": "Alive",
        "security": [],
        "responses": {"200": d.ok(d.ref("Health"), "Alive")},
    }
)
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@routes.get("/readyz")
@public
@d.doc(
    {
        "operationId": "readyz",
        "summary": "Ready: PostgreSQL, RabbitMQ and LISTEN are up (read-only: the primary"
        " is down and the standby answers reads)",
        "security": [],
        "responses": {
            "200": d.ok(d.ref("Readiness"), "Ready"),
            "503": d.ok(d.ref("Readiness"), "Not ready: `checks` says what is down"),
        },
    }
)
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await health_store.ping(request.app[appkeys.POOL])
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready", and says why
        checks["postgres"] = f"down: {type(exc).__name__}"
    health = request.app[appkeys.HEALTH]
    checks["rabbitmq"] = "ok" if health.get("relay") and health["relay"].connected else "down"
    checks["listener"] = "ok" if request.app[appkeys.WATCHER].connected.is_set() else "down"
    ready = all(v == "ok" for v in checks.values())
    reads = request.app[appkeys.READS]
    replica = reads.status()  # {} without DATABASE_READ_URL; never what makes us not ready
    status = "ready" if ready else "unavailable"
    if not ready and replica.get("reads") == "standby" and not reads.primary_up:
        # The primary is down, the standby answers: polls and lists are served, writes 503.
        status, ready = "read-only", True
    return json_response(
        {"status": status, "checks": {**checks, **replica}},
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


@routes.get("/metrics")
@public
@d.doc(
    {
        "operationId": "metrics",
        "summary": "Prometheus metrics",
        "security": [],
        "responses": {
            "200": {"description": "Metrics", "content": {"text/plain": {"schema": d.STR}}}
        },
    }
)
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    await m.refresh(request.app[appkeys.POOL], request.app[appkeys.WATCHER].waiting)
    m.replica_lag.set(request.app[appkeys.READS].lag_seconds)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/openapi.json")
@public
@d.doc(
    {
        "operationId": "openapi",
        "summary": "This document",
        "security": [],
        "responses": {"200": d.ok({"type": "object"}, "OpenAPI 3.1")},
    }
)
async def openapi_json(_request: web.Request) -> web.Response:
    return json_response(openapi.build())


@routes.get("/asyncapi.json")
@public
@d.doc(
    {
        "operationId": "asyncapi",
        "summary": "The AMQP contract and the webhook deliveries, as AsyncAPI 3.0",
        "security": [],
        "responses": {"200": d.ok({"type": "object"}, "AsyncAPI 3.0")},
    }
)
async def asyncapi_json(_request: web.Request) -> web.Response:
    return json_response(asyncapi.build())
