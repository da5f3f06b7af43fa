"""``GET /asyncapi.json`` is a valid AsyncAPI 3.0 document (checked with the AsyncAPI
Initiative's own schema, tests/schemas), and the messages feedjobs really writes (run
requests, status and feed.changed events, webhook bodies) fit the schemas it declares."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec

from service.core.contracts import JobHook, JobHookData, WebhookTest
from tests.integration.conftest import run_and_wait, upload_feed

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "asyncapi-3.0.0.json.gz"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_the_document_is_valid_asyncapi_3(client):
    resp = await client.get("/asyncapi.json")  # public, like /openapi.json
    assert resp.status == 200
    doc = await resp.json()
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    jsonschema.Draft7Validator(schema).validate(doc)
    assert doc["asyncapi"] == "3.0.0"
    for ref in _refs(doc):  # every reference lands on something
        assert ref.startswith("#/") and _resolve(doc, ref) is not None, ref
    assert set(doc["channels"]["events"]["messages"]) == {"StatusEvent", "FeedChanged"}
    codes = doc["components"]["messages"]["DeadLetter"]["headers"]["properties"]["x-error-code"]
    assert "INVALID_MESSAGE" in codes["enum"] and "INVALID_EVENT" in codes["enum"]


class StrictData(JobHookData, forbid_unknown_fields=True, kw_only=True):
    # (msgspec.Raw is for encoding: read the documents as JSON objects)
    result: dict[str, Any] | None  # type: ignore[assignment]
    error: dict[str, Any] | None  # type: ignore[assignment]


class StrictJobHook(JobHook, forbid_unknown_fields=True):
    data: StrictData


async def test_the_messages_written_fit_the_declared_schemas(client, acme, consumer, db):
    doc = await (await client.get("/asyncapi.json")).json()
    messages = doc["components"]["messages"]

    def check(message: str, body: bytes | str) -> None:
        payload = messages[message]["payload"]
        schema = {**payload, "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(json.loads(body))

    hook = await client.post(
        "/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["job.completed", "feed.changed"]},
        headers=acme,
    )
    assert hook.status == 201
    await client.post(f"/webhooks/{(await hook.json())['webhook_id']}/test", headers=acme)
    ids = await upload_feed(client, acme, b"sku,name,price,currency\nA-1,Cap,1.00,EUR\n")
    await run_and_wait(client, acme, ids["validation_job_id"])
    sent = await db.fetch("SELECT routing_key, body FROM outbox ORDER BY id")
    kinds = {"run": "RunRequest", "feed.changed": "FeedChanged"}
    seen = set()
    for row in sent:
        kind = kinds.get(row["routing_key"], "StatusEvent")
        check(kind, bytes(row["body"]))
        seen.add(kind)
    assert seen == {"RunRequest", "StatusEvent", "FeedChanged"}
    hooks = await db.fetch("SELECT event_type, body FROM webhook_deliveries ORDER BY seq")
    by_type = {"webhook.test": "WebhookTest", "feed.changed": "FeedChangedHook"}
    for row in hooks:
        check(by_type.get(row["event_type"], "JobHook"), row["body"])
        if row["event_type"] == "job.completed":
            data = msgspec.json.decode(row["body"], type=StrictJobHook).data
            assert data.links.changes == f"/jobs/{data.job_id}/changes?run=1"
        elif row["event_type"] == "webhook.test":
            msgspec.json.decode(row["body"], type=WebhookTest)
    assert {r["event_type"] for r in hooks} == {"webhook.test", "job.completed", "feed.changed"}
