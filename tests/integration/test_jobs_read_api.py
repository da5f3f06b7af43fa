"""GET /jobs/{id} and GET /jobs: the seed's contract verbatim, auth, ETags, pagination."""

from __future__ import annotations

import asyncio

import pytest
import structlog
import structlog.testing

from tests.conftest import wait_for
from tests.integration.test_feeds_api import upload


async def make_feeds(client, headers, count):
    out = []
    for _ in range(count):
        resp = await upload(client, headers)
        assert resp.status == 201
        out.append(await resp.json())
    return out


async def test_seed_get_job_fields(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    resp = await client.get(
        f"/jobs/{ids['validation_job_id']}", headers={**acme, "accept": "application/json"}
    )
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    # The seed's four fields with their meaning, plus the extensions of api.md.
    assert body["job_id"] == ids["validation_job_id"]
    assert body["feed_id"] == ids["feed_id"]
    assert body["job_type"] == "validation"
    assert body["status"] == "created"
    for field in (
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "attempt",
        "message",
        "progress",
        "retry_after",
        "result",
        "error",
    ):
        assert field in body
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
async def test_seed_401_body(client, headers):
    for path in ("/jobs/JV00012", "/jobs", "/feeds/FD00001"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["detail"] == "Invalid or missing API key"
        assert body["error_code"] == "UNAUTHORIZED"
    resp = await client.post("/jobs/JV00001/run", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["detail"] == "Invalid or missing API key"


async def test_seed_404_body(client, acme):
    resp = await client.get("/jobs/JV00000", headers=acme)
    assert resp.status == 404
    assert await resp.json() == {
        "error_code": "JOB_NOT_FOUND",
        "message": "Job JV00000 not found",
        "detail": "Job not found",
        "details": {"job_id": "JV00000"},
    }


@pytest.mark.parametrize(
    "job_id", ["jv00001", "JV1", "JX00001", "JV00001x", "FD00001", "JV0000001"]
)
async def test_malformed_ids_are_404(client, acme, job_id):
    resp = await client.get(f"/jobs/{job_id}", headers=acme)
    assert resp.status == 404
    assert (await resp.json())["detail"] == "Job not found"


async def test_other_tenants_jobs_are_404(client, acme, globex):
    [ids] = await make_feeds(client, acme, 1)
    for job in (ids["validation_job_id"], ids["submission_job_id"]):
        resp = await client.get(f"/jobs/{job}", headers=globex)
        assert resp.status == 404
        assert (await resp.json())["message"] == f"Job {job} not found"
    listing = await (await client.get("/jobs", headers=globex)).json()
    assert listing == {"jobs": [], "next_cursor": None}


async def test_etag_and_304(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['validation_job_id']}"
    first = await client.get(url, headers=acme)
    etag = first.headers["ETag"]
    again = await client.get(url, headers={**acme, "If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    other = await client.get(url, headers={**acme, "If-None-Match": '"stale"'})
    assert other.status == 200


async def test_every_response_has_a_request_id(client, acme):
    resp = await client.get("/jobs", headers={**acme, "x-request-id": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = await client.get("/jobs", headers={**acme, "x-request-id": "bad id with spaces"})
    assert resp.headers["x-request-id"] != "bad id with spaces"
    assert len(resp.headers["x-request-id"]) == 32
    resp = await client.get("/nowhere")
    assert resp.status == 404 and "x-request-id" in resp.headers


async def test_generated_request_ids_are_distinct(client, acme):
    seen = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(50)}
    assert len(seen) == 50


async def test_access_log_line_names_the_job_and_the_request(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    job_id = ids["validation_job_id"]
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        await client.get(f"/jobs/{job_id}", headers={**acme, "x-request-id": "poll-7"})
    [line] = [e for e in logs if e["event"] == "http_request"]
    assert line["job_id"] == job_id and line["request_id"] == "poll-7"
    assert line["status"] == 200 and line["tenant"] == "acme" and "duration_ms" in line


async def test_list_paginates_without_gaps_or_duplicates(client, acme, globex):
    created = await make_feeds(client, acme, 7)
    await make_feeds(client, globex, 2)
    expected = []
    for ids in reversed(created):
        expected += [ids["validation_job_id"], ids["submission_job_id"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=acme)).json()
        pages += 1
        seen += [j["job_id"] for j in page["jobs"]]
        assert len(page["jobs"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen)) == 14
    # newest first
    assert seen[0] in (created[-1]["validation_job_id"], created[-1]["submission_job_id"])


async def test_list_filters(client, acme):
    a, b = await make_feeds(client, acme, 2)
    page = await (await client.get("/jobs?job_type=validation", headers=acme)).json()
    assert {j["job_id"] for j in page["jobs"]} == {a["validation_job_id"], b["validation_job_id"]}
    page = await (await client.get(f"/jobs?feed_id={a['feed_id']}", headers=acme)).json()
    assert {j["job_id"] for j in page["jobs"]} == {a["validation_job_id"], a["submission_job_id"]}
    page = await (await client.get("/jobs?status=completed", headers=acme)).json()
    assert {j["job_id"] for j in page["jobs"]} == {a["submission_job_id"], b["submission_job_id"]}
    page = await (await client.get("/jobs?status=created,completed&limit=100", headers=acme)).json()
    assert len(page["jobs"]) == 4
    page = await (await client.get("/jobs?created_after=2100-01-01T00:00:00Z", headers=acme)).json()
    assert page["jobs"] == []
    page = await (
        await client.get("/jobs?created_before=2100-01-01T00:00:00Z", headers=acme)
    ).json()
    assert len(page["jobs"]) == 4


@pytest.mark.parametrize(
    "query,field",
    [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("job_type=other", "job_type"),
        ("created_after=yesterday", "created_after"),
        ("cursor=!!!", "cursor"),
    ],
)
async def test_list_rejects_bad_filters(client, acme, query, field):
    resp = await client.get(f"/jobs?{query}", headers=acme)
    assert resp.status == 400
    body = await resp.json()
    assert body["error_code"] == "INVALID_REQUEST" and body["details"]["field"] == field


async def test_rate_limit_answers_429_with_headers(client, acme):
    from service.gateway import appkeys
    from service.gateway.ratelimit import RateLimiter

    client.app[appkeys.LIMITER] = RateLimiter(rate=0.5, burst=2)
    statuses = [(await client.get("/jobs", headers=acme)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    resp = await client.get("/jobs", headers=acme)
    body = await resp.json()
    assert body["detail"] == "Too many requests" and body["error_code"] == "RATE_LIMITED"
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["RateLimit-Limit"] == "2" and resp.headers["RateLimit-Remaining"] == "0"


async def test_ops_endpoints_need_no_key(client):
    assert (await client.get("/healthz")).status == 200
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0" and "/jobs/{job_id}" in spec["paths"]
    assert "JobView" in spec["components"]["schemas"]
    metrics = await (await client.get("/metrics")).text()
    assert "feedjobs_http_request_duration_seconds" in metrics
    # readiness: postgres and the listener come up; the relay needs the broker
    for _ in range(100):
        resp = await client.get("/readyz")
        if resp.status == 200:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["checks"] == {"postgres": "ok", "rabbitmq": "ok", "listener": "ok"}


async def test_unexpected_errors_are_500_without_traceback(client, acme, db):
    await db.execute("ALTER TABLE feeds RENAME TO feeds_gone")
    resp = await client.get("/feeds/FD00001", headers={**acme, "x-request-id": "req-500"})
    assert resp.status == 500
    body = await resp.json()
    assert body["detail"] == "Internal error" and body["details"]["request_id"] == "req-500"
    assert "Traceback" not in await resp.text()


async def test_cached_job_follows_changes_made_by_other_processes(client, acme, db):
    """The gateway keeps job rows between polls; a change committed elsewhere (the consumer)
    reaches the next GET through NOTIFY, not after some expiry."""
    [ids] = await make_feeds(client, acme, 1)
    job_id = ids["validation_job_id"]
    url = f"/jobs/{job_id}"
    first = await client.get(url, headers=acme)
    assert (await client.get(url, headers=acme)).headers["ETag"] == first.headers["ETag"]
    await db.execute("UPDATE jobs SET message = 'changed elsewhere' WHERE id = $1", job_id)

    async def seen():
        body = await (await client.get(url, headers=acme)).json()
        return body["message"] == "changed elsewhere"

    await wait_for(seen, timeout=5)


async def test_own_writes_are_read_at_once_and_other_tenants_still_get_404(client, acme, globex):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['validation_job_id']}"
    assert (await (await client.get(url, headers=acme)).json())["status"] == "created"
    assert (await client.post(f"{url}/run", headers=acme)).status == 202
    assert (await (await client.get(url, headers=acme)).json())["status"] == "queued"
    assert (await client.get(url, headers=globex)).status == 404
