"""A feed's products over HTTP: the cleaned columns by name, the attributes, and when each
last changed or was deleted; tenant-scoped (the feed must be the caller's)."""

from __future__ import annotations

from aiohttp import web

from service.core.contracts import ProductList
from service.core.errors import InvalidRequest, ProductNotFound
from service.core.store import catalog
from service.gateway import apidoc as d
from service.gateway.access import tenant
from service.gateway.bodies import (
    decode_cursor,
    encode_cursor,
    json_response,
    query_int,
    query_time,
)
from service.gateway.middleware import read_pool
from service.gateway.routes_feeds import own_feed

routes = web.RouteTableDef()


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name) or "false"
    if value not in ("true", "false"):
        raise InvalidRequest(
            f"Query parameter `{name}` must be true or false", details={"field": name}
        )
    return value == "true"


@routes.get("/feeds/{feed_id}/products")
@tenant
@d.doc(
    {
        "operationId": "list_products",
        "summary": "The feed's products in sku order, cleaned, with their attributes",
        "parameters": [
            d.FEED,
            d.query("sku", d.STR, "Only this sku"),
            d.query(
                "changed_since",
                {"type": "string", "format": "date-time"},
                "Only products whose last change (or deletion) is at or after it",
            ),
            d.query(
                "include_deleted",
                {"enum": ["true", "false"], "default": "false"},
                "Deleted products too (deleted_at set)",
            ),
            d.limit(1000, 100),
            d.CURSOR,
        ],
        "responses": {
            "200": d.ok(d.ref("ProductList"), "A page of products", *d.RATE),
            **d.errors("400", "404", *d.PROTECTED),
        },
    }
)
async def list_products(request: web.Request) -> web.Response:
    feed_id = await own_feed(request)
    limit = query_int(request, "limit", 100, 1, 1000)
    q = request.query
    after = decode_cursor(q["cursor"], str) if q.get("cursor") else None
    rows = await catalog.page(
        await read_pool(request),
        feed_id,
        after=after,
        limit=limit + 1,
        sku=q.get("sku") or None,
        changed_since=query_time(request, "changed_since"),
        include_deleted=_flag(request, "include_deleted"),
    )
    cursor = encode_cursor(rows[limit - 1].sku) if len(rows) > limit else None
    return json_response(ProductList(products=rows[:limit], next_cursor=cursor))


@routes.get("/feeds/{feed_id}/products/{sku:.+}")  # a sku may hold "/"
@tenant
@d.doc(
    {
        "operationId": "get_product",
        "summary": "One product of the feed, deleted or not",
        "parameters": [d.FEED, d.path("sku", "SKU-1", r"^[A-Za-z0-9._/-]{1,64}$")],
        "responses": {
            "200": d.ok(d.ref("Product"), "The product", *d.RATE),
            **d.errors("404", *d.PROTECTED),
        },
    }
)
async def get_product(request: web.Request) -> web.Response:
    feed_id = await own_feed(request)
    sku = request.match_info["sku"]
    product = await catalog.one(await read_pool(request), feed_id, sku)
    if product is None:
        raise ProductNotFound(
            f"Feed {feed_id} has no product {sku[:80]!r}",
            details={"feed_id": feed_id, "sku": sku[:80]},
        )
    return json_response(product)
