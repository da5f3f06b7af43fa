"""The OpenAPI document: valid, complete, and true of the live app (schemathesis)."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import ACME_KEY, run_and_wait, upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nbad sku,B,1,USD\n"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def test_the_document_is_valid_and_declares_every_route(client):
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    declared = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert served == declared
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if op.get("security") != []:  # every protected route says 401, 429 and 503
                assert {"401", "429", "503"} <= set(op["responses"]), (method, path)
    job = doc["components"]["schemas"]["JobView"]["properties"]
    assert set(job["status"]["enum"]) == {
        "created",
        "queued",
        "running",
        "completed",
        "failed",
        "cancelled",
    }
    assert job["created_at"]["format"] == "date-time"
    assert {"$ref": "#/components/schemas/ValidationResult"} in job["result"]["anyOf"]


async def test_the_live_app_keeps_its_document(client, acme, consumer):
    """Bounded schemathesis run against a real gateway (and consumer): no 5xx, no status,
    content type or body the document does not declare."""
    ids = await upload_feed(client, acme, FEED)
    await run_and_wait(client, acme, ids["validation_job_id"])  # real jobs to read too
    doc = await (await client.get("/openapi.json")).json()
    base = str(client.make_url(""))
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []

    def exercise() -> int:
        count = 0
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=12,
                deadline=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def one(case) -> None:  # type: ignore[no-untyped-def]
                if case.query and isinstance(case.query.get("wait"), int):
                    case.query["wait"] = min(case.query["wait"], 1)  # bounded time
                response = case.call(base_url=base, headers={"x-api-key": ACME_KEY}, timeout=30)
                try:
                    case.validate_response(response, checks=CHECKS)
                except Exception as exc:  # collect, then report them all
                    failures.append(f"{case.operation.label}: {str(exc)[:600]}")

            one()
            count += 1
        return count

    operations = await asyncio.to_thread(exercise)
    assert operations == len([m for ops in doc["paths"].values() for m in ops])
    assert failures == []
