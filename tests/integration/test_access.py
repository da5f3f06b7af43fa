"""Default-deny: every route declares who may call it where it is defined
(service/gateway/access.py), and one that declares nothing still needs an API key."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.core.store import keys as keys_store
from service.gateway.access import PUBLIC, TENANT, declared
from service.gateway.app import create_app
from service.gateway.middleware import principal
from tests.integration.conftest import ACME_KEY


async def test_every_route_declares_its_access(settings):
    app = create_app(settings)
    undeclared = [
        f"{r.method} {r.resource.canonical}"
        for r in app.router.routes()
        if r.resource is not None and declared(r.handler) not in (PUBLIC, TENANT)
    ]
    assert undeclared == []
    public = sorted(
        {r.resource.canonical for r in app.router.routes() if declared(r.handler) == PUBLIC}
    )
    assert public == ["/asyncapi.json", "/healthz", "/metrics", "/openapi.json", "/readyz"]


async def test_an_undeclared_route_needs_a_key(settings, db, acme):
    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"tenant": principal(request).tenant})

    async with db.acquire() as conn:
        await keys_store.add_key(conn, "acme", ACME_KEY)
    app = create_app(settings)
    app.router.add_get("/brand-new", secret)  # outside the tenants' prefixes, no declaration
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/brand-new")).status == 401
        resp = await client.get("/brand-new", headers=acme)
        assert resp.status == 200 and (await resp.json()) == {"tenant": "acme"}
        # unmatched paths: 401 under the tenants' prefixes, 404 elsewhere
        assert (await client.get("/webhooks/nope")).status == 401
        assert (await client.get("/nope")).status == 404
        assert (await client.get("/healthz")).status == 200
