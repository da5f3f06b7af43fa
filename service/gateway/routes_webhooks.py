"""A tenant's webhook endpoints: register (the secret shown once), list, read, delete,
rotate the secret, send a test, read the delivery log, retry a delivery."""

from __future__ import annotations

import re

from aiohttp import web

from service.core import webhooks
from service.core.contracts import (
    CreateWebhook,
    DeliveryList,
    DeliveryQueued,
    SecretRotated,
    WebhookCreated,
    WebhookList,
)
from service.core.errors import DeliveryNotFound, InvalidRequest, WebhookNotFound
from service.core.logs import get_logger
from service.core.store import feeds as feeds_store
from service.core.store import webhooks as store
from service.gateway import apidoc as d
from service.gateway import appkeys
from service.gateway.access import tenant
from service.gateway.bodies import decode_cursor, encode_cursor, json_response, query_int, read_json
from service.gateway.middleware import principal

log = get_logger(__name__)
routes = web.RouteTableDef()
_WEBHOOK_ID = re.compile(r"WH[0-9]{5,18}")
MAX_WEBHOOKS = 20  # per tenant: each is a delivery row per matching status change


async def _own(request: web.Request) -> str:
    webhook_id = request.match_info["webhook_id"]
    if (
        not _WEBHOOK_ID.fullmatch(webhook_id)
        or await store.get(request.app[appkeys.POOL], webhook_id, principal(request).tenant_id)
        is None
    ):
        raise WebhookNotFound(
            f"Webhook {webhook_id[:40]} not found", details={"webhook_id": webhook_id[:40]}
        )
    return webhook_id


@routes.post("/webhooks")
@tenant
@d.doc(
    {
        "operationId": "create_webhook",
        "summary": "Register an endpoint; its signing secret is shown once",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": d.ref("CreateWebhook")}},
        },
        "responses": {
            "201": d.ok(d.ref("WebhookCreated"), "Registered", "Location", *d.RATE),
            **d.errors("400", "413", "415", *d.PROTECTED),
        },
    }
)
async def create_webhook(request: web.Request) -> web.Response:
    settings = request.app[appkeys.SETTINGS]
    body = await read_json(request, CreateWebhook, limit=settings.max_json_body_bytes)
    assert body is not None
    await webhooks.check_destination(body.url, webhooks.Allowed(settings.webhook_allowed_hosts))
    p = principal(request)
    pool = request.app[appkeys.POOL]
    if await store.count_for(pool, p.tenant_id) >= MAX_WEBHOOKS:
        raise InvalidRequest(
            f"The tenant has {MAX_WEBHOOKS} webhook endpoints, the most it may have; delete one"
            " first",
            details={"field": "url", "limit": MAX_WEBHOOKS},
        )
    for feed_id in body.feed_ids or []:
        if not await feeds_store.owned(pool, feed_id, p.tenant_id):
            raise InvalidRequest(
                f"feed_ids names {feed_id}, which is not one of the tenant's feeds",
                details={"field": "feed_ids"},
            )
    secret = webhooks.new_secret()
    view = await store.create(
        pool, p.tenant_id, body.url, sorted(set(body.events)), body.feed_ids, secret
    )
    log.info("webhook_created", webhook_id=view.webhook_id, events=view.events)
    created = WebhookCreated(**{f: getattr(view, f) for f in view.__struct_fields__}, secret=secret)
    return json_response(created, status=201, headers={"Location": f"/webhooks/{view.webhook_id}"})


@routes.get("/webhooks")
@tenant
@d.doc(
    {
        "operationId": "list_webhooks",
        "summary": "The tenant's webhook endpoints",
        "responses": {
            "200": d.ok(d.ref("WebhookList"), "Endpoints", *d.RATE),
            **d.errors(*d.PROTECTED),
        },
    }
)
async def list_webhooks(request: web.Request) -> web.Response:
    found = await store.list_for(request.app[appkeys.POOL], principal(request).tenant_id)
    return json_response(WebhookList(webhooks=found))


@routes.get("/webhooks/{webhook_id}")
@tenant
@d.doc(
    {
        "operationId": "get_webhook",
        "summary": "An endpoint (disabled_reason says why it was disabled)",
        "parameters": [d.WEBHOOK],
        "responses": {
            "200": d.ok(d.ref("WebhookView"), "The endpoint", *d.RATE),
            **d.NOT_FOUND,
        },
    }
)
async def get_webhook(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    view = await store.get(request.app[appkeys.POOL], webhook_id, principal(request).tenant_id)
    return json_response(view)


@routes.delete("/webhooks/{webhook_id}")
@tenant
@d.doc(
    {
        "operationId": "delete_webhook",
        "summary": "Remove an endpoint and its deliveries",
        "parameters": [d.WEBHOOK],
        "responses": {
            "204": {"description": "Removed", "headers": d.headers(*d.RATE)},
            **d.NOT_FOUND,
        },
    }
)
async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    await store.delete(request.app[appkeys.POOL], webhook_id, principal(request).tenant_id)
    log.info("webhook_deleted", webhook_id=webhook_id)
    return web.Response(status=204)


@routes.post("/webhooks/{webhook_id}/rotate-secret")
@tenant
@d.doc(
    {
        "operationId": "rotate_webhook_secret",
        "summary": "A new secret; the old one still signs for WEBHOOK_SECRET_GRACE_SECONDS",
        "parameters": [d.WEBHOOK],
        "responses": {"200": d.ok(d.ref("SecretRotated"), "Rotated", *d.RATE), **d.NOT_FOUND},
    }
)
async def rotate_secret(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    secret = webhooks.new_secret()
    grace = request.app[appkeys.SETTINGS].webhook_secret_grace_seconds
    until = await store.rotate(
        request.app[appkeys.POOL], webhook_id, principal(request).tenant_id, secret, grace
    )
    assert until is not None
    log.info("webhook_secret_rotated", webhook_id=webhook_id, grace_seconds=grace)
    return json_response(SecretRotated(webhook_id, secret, until))


@routes.post("/webhooks/{webhook_id}/test")
@tenant
@d.doc(
    {
        "operationId": "test_webhook",
        "summary": "Send a webhook.test delivery",
        "parameters": [d.WEBHOOK],
        "responses": {"202": d.ok(d.ref("DeliveryQueued"), "Queued", *d.RATE), **d.NOT_FOUND},
    }
)
async def send_test(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    delivery_id = await store.add_test(
        request.app[appkeys.POOL], webhook_id, principal(request).tenant_id
    )
    assert delivery_id is not None
    return json_response(DeliveryQueued(delivery_id, "pending"), status=202)


@routes.get("/webhooks/{webhook_id}/deliveries")
@tenant
@d.doc(
    {
        "operationId": "list_deliveries",
        "summary": "The endpoint's deliveries, newest first",
        "parameters": [d.WEBHOOK, d.limit(100, 50), d.CURSOR],
        "responses": {
            "200": d.ok(d.ref("DeliveryList"), "A page of deliveries", *d.RATE),
            **d.errors("400", "404", *d.PROTECTED),
        },
    }
)
async def list_deliveries(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    limit = query_int(request, "limit", 50, 1, 100)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor, int) if cursor else None
    rows = await store.deliveries(request.app[appkeys.POOL], webhook_id, after, limit + 1)
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return json_response(
        DeliveryList(deliveries=[d for _, d in rows[:limit]], next_cursor=next_cursor)
    )


@routes.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
@tenant
@d.doc(
    {
        "operationId": "retry_delivery",
        "summary": "Send a delivery again now (enables a disabled endpoint)",
        "parameters": [d.WEBHOOK, d.DELIVERY],
        "responses": {"202": d.ok(d.ref("DeliveryQueued"), "Queued", *d.RATE), **d.NOT_FOUND},
    }
)
async def retry_delivery(request: web.Request) -> web.Response:
    webhook_id = await _own(request)
    delivery_id = request.match_info["delivery_id"]
    before = await store.retry(request.app[appkeys.POOL], webhook_id, delivery_id)
    if before is None:
        raise DeliveryNotFound(
            f"Webhook {webhook_id} has no delivery {delivery_id[:40]}",
            details={"delivery_id": delivery_id[:40]},
        )
    log.info("webhook_delivery_retried", webhook_id=webhook_id, delivery_id=delivery_id)
    return json_response(DeliveryQueued(delivery_id, "pending"), status=202)
