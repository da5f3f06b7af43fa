"""The OpenAPI document: valid, complete, and true of the live app (schemathesis)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import json
import sys

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


async def test_a_generated_client_drives_a_whole_run(client, acme, consumer, tmp_path):
    """openapi-python-client, from /openapi.json as served: upload, run, poll, rejections,
    and typed errors, with nothing written by hand."""
    doc = await (await client.get("/openapi.json")).json()
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openapi_python_client", "generate",
        "--path", str(tmp_path / "openapi.json"), "--meta", "none",
        "--output-path", str(tmp_path / "fjclient"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        gen = importlib.import_module("fjclient")
        api = argparse.Namespace(
            **{
                op: importlib.import_module(f"fjclient.api.default.{op}")
                for op in ("create_feed", "run_job", "get_job", "list_rejections", "list_feeds")
            }
        )
        models = importlib.import_module("fjclient.models")
        types = importlib.import_module("fjclient.types")
    finally:
        sys.path.remove(str(tmp_path))
    base = str(client.make_url("")).rstrip("/")

    def drive() -> None:  # the generated sync API, in a thread: the app serves in this loop
        fj = gen.AuthenticatedClient(
            base_url=base, token=ACME_KEY, prefix="", auth_header_name="x-api-key"
        )
        with fj:
            upload = types.File(payload=io.BytesIO(FEED), mime_type="application/octet-stream")
            created = api.create_feed.sync(client=fj, body=upload, name="generated")
            assert isinstance(created, models.FeedCreated), created
            jv = created.validation_job_id
            job = api.run_job.sync(jv, client=fj, body=models.RunOptions(dry_run=False), wait=30)
            assert isinstance(job, models.JobView) and job.status.value == "completed", job
            assert isinstance(job.result, models.ValidationResult)
            assert (job.result.inserted, job.result.rows_rejected) == (1, 1)
            polled = api.get_job.sync(jv, client=fj)
            assert isinstance(polled, models.JobView) and polled.attempt == 1
            rejections = api.list_rejections.sync(jv, client=fj, limit=10)
            assert isinstance(rejections, models.ErrorList)
            assert [(e.line, e.code.value) for e in rejections.errors] == [(3, "INVALID_SKU")]
            feeds = api.list_feeds.sync(client=fj)
            assert [f.feed_id for f in feeds.feeds] == [created.feed_id]
            missing = api.get_job.sync_detailed("JV99999", client=fj)
            assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)
            assert missing.parsed.error_code == "JOB_NOT_FOUND"
            wrong = api.run_job.sync_detailed(created.submission_job_id, client=fj)
            assert wrong.status_code == 400
            assert wrong.parsed.detail == "Only validation jobs can be run"
        with gen.Client(base_url=base) as anonymous:
            denied = api.get_job.sync_detailed(jv, client=anonymous)
            assert denied.status_code == 401 and isinstance(denied.parsed, models.ErrorBody)

    await asyncio.to_thread(drive)
