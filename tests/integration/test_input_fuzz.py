"""Every input of every route of the OpenAPI document, as a hostile client sends it: a NUL
in each text (PostgreSQL's text cannot hold one; before, a NUL in a feed name was a 500,
``CharacterNotInRepertoireError``), each query parameter empty and each given twice (before,
``?wait=`` meant the default and a repeated one a silent pick): a 400 naming the field."""

from __future__ import annotations

import urllib.parse
from typing import Any

from service.gateway import openapi
from service.gateway.inputs import REPEATABLE
from tests.integration.conftest import upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"
NUL = "a\x00b"
# A body each JSON route accepts, so that the one field changed is the one at fault.
BASE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/feeds"): {"s3_uri": "s3://feeds/x.csv", "name": "ok"},
    ("put", "/feeds/{feed_id}/schedule"): {"cron": "0 * * * *", "timezone": "UTC"},
    ("post", "/jobs/{job_id}/run"): {"mode": "upsert"},
    ("post", "/webhooks"): {"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
    ("patch", "/feeds/{feed_id}"): {"name": "ok"},
}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    doc = openapi.build()
    ops = []
    for path, methods in doc["paths"].items():
        if not path.startswith(("/jobs", "/feeds", "/webhooks")):
            continue
        for method, op in methods.items():
            if isinstance(op, dict) and "responses" in op:
                ops.append((method, path, op))
    return ops


def _string_fields(schema_ref: str) -> list[str]:
    doc = openapi.build()
    schema = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    fields = []
    for name, prop in schema["properties"].items():
        kinds = [prop, *prop.get("anyOf", [])]
        if any(k.get("type") == "string" for k in kinds):
            fields.append(name)
    return fields


def _encode(value: str) -> str:
    return urllib.parse.quote(value)


async def _expect_400(resp, field: str, what: str) -> None:
    assert resp.status == 400, (what, resp.status, await resp.text())
    body = await resp.json()
    assert body["details"].get("field") == field, (what, body)


async def test_every_text_input_refuses_nul(client, acme):
    ids = await upload_feed(client, acme, FEED)
    hook = await client.post("/webhooks", headers=acme, json=BASE_BODIES[("post", "/webhooks")])
    webhook_id = (await hook.json())["webhook_id"]
    test = await client.post(f"/webhooks/{webhook_id}/test", headers=acme)
    real = {
        "feed_id": ids["feed_id"],
        "job_id": ids["validation_job_id"],
        "sku": "A-1",
        "webhook_id": webhook_id,
        "delivery_id": (await test.json())["delivery_id"],
    }
    checked = 0
    for method, path, op in _operations():
        url = path.format(**real)
        for p in op.get("parameters", []):
            name, where = p.get("name"), p.get("in")
            if where == "query":
                target = f"{url}?{name}={_encode(NUL)}"
            elif where == "path":
                target = path.format(**{**real, name: _encode(NUL)})
            else:
                continue  # headers: aiohttp refuses control characters in them
            resp = await client.request(method, target, headers=acme, data=b"")
            await _expect_400(resp, name, f"{method} {path} {where} {name}")
            checked += 1
            if where == "query":
                shapes = [f"{name}="]
                if name not in REPEATABLE:  # ?tag=a&tag=b means either
                    shapes.append(f"{name}=1&{name}=2")
                for shape in shapes:
                    resp = await client.request(method, f"{url}?{shape}", headers=acme, data=b"")
                    await _expect_400(resp, name, f"{method} {path} ?{shape}")
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        for field in _string_fields(body["schema"]["$ref"]):
            sent = {**BASE_BODIES[(method, path)], field: NUL}
            resp = await client.request(method, url, headers=acme, json=sent)
            await _expect_400(resp, field, f"{method} {path} body.{field}")
            checked += 1
    assert checked >= 30, checked  # the document really was walked
    # A lone surrogate never reaches PostgreSQL either: malformed JSON to msgspec.
    resp = await client.post("/feeds", headers=acme, json={"s3_uri": "s3://feeds/\ud800.csv"})
    assert resp.status == 400
