"""Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.core.store import health as health_store
from service.gateway import appkeys, openapi
from service.gateway.access import public
from service.gateway.bodies import json_response
from service.gateway.metrics import METRICS

routes = web.RouteTableDef()


@routes.get("/healthz")
@public
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@routes.get("/readyz")
@public
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
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    await m.refresh(request.app[appkeys.POOL], request.app[appkeys.WATCHER].waiting)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/openapi.json")
@public
async def openapi_json(_request: web.Request) -> web.Response:
    return json_response(openapi.build())
