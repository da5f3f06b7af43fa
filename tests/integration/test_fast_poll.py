"""Cached polls answered before routing (service/gateway/fastpoll.py): the same answer as
the full path, byte for byte and header for header, and only when nothing is missing."""

from __future__ import annotations

import structlog
import structlog.testing

from service.gateway import appkeys
from service.gateway.metrics import METRICS
from service.gateway.ratelimit import RateLimiter
from tests.conftest import wait_for
from tests.integration.test_jobs_read_api import make_feeds

# Headers that differ between any two answers, whichever path gave them.
_PER_REQUEST = {"date", "x-request-id", "ratelimit-remaining"}


def early(client) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "feedjobs_http_polls_answered_early_total"
    )
    return value or 0.0


async def warm(client, url: str, headers: dict[str, str]):
    """Poll until a poll is answered early: the key, the job and its version are then in
    memory (a job's creation notice may arrive after the first read and drop it again).
    The last answer."""
    last = None

    async def answered_early() -> bool:
        nonlocal last
        before = early(client)
        last = await client.get(url, headers=headers)
        return early(client) == before + 1

    await wait_for(answered_early, timeout=10)
    return last


def comparable(resp) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower() not in _PER_REQUEST}


async def test_a_cached_poll_is_answered_early_exactly_as_the_full_path_would(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['submission_job_id']}"
    first = await warm(client, url, acme)
    before = early(client)
    fast = await client.get(url, headers=acme)
    assert early(client) == before + 1
    full = await client.get(f"{url}?wait=0", headers=acme)  # a query string: the full path
    assert early(client) == before + 1
    assert fast.status == full.status == first.status == 200
    assert await fast.read() == await full.read() == await first.read()
    assert comparable(fast) == comparable(full)
    assert all(h in fast.headers for h in ("ETag", "Cache-Control", "RateLimit-Limit"))
    assert len(fast.headers["x-request-id"]) == 32
    assert fast.headers["x-request-id"] != full.headers["x-request-id"]
    assert 0 <= int(fast.headers["RateLimit-Remaining"]) < int(fast.headers["RateLimit-Limit"])


async def test_an_unchanged_job_gets_its_304_early(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['validation_job_id']}"
    etag = (await warm(client, url, acme)).headers["ETag"]
    before = early(client)
    fast = await client.get(url, headers={**acme, "If-None-Match": etag})
    full = await client.get(f"{url}?wait=0", headers={**acme, "If-None-Match": etag})
    assert early(client) == before + 1
    assert fast.status == full.status == 304
    assert await fast.read() == b""
    assert comparable(fast) == comparable(full)
    assert "Content-Type" not in fast.headers
    stale = await client.get(url, headers={**acme, "If-None-Match": '"stale"'})
    assert stale.status == 200 and early(client) == before + 2


async def test_the_early_answer_writes_the_same_access_line(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    job_id = ids["validation_job_id"]
    await warm(client, f"/jobs/{job_id}", acme)
    before = early(client)
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        await client.get(f"/jobs/{job_id}", headers={**acme, "x-request-id": "poll-8"})
    assert early(client) == before + 1
    [line] = [e for e in logs if e["event"] == "http_request"]
    assert line["job_id"] == job_id and line["request_id"] == "poll-8"
    assert line["status"] == 200 and line["tenant"] == "acme" and line["method"] == "GET"
    assert line["path"] == f"/jobs/{job_id}" and "duration_ms" in line
    metrics = await (await client.get("/metrics")).text()
    assert (
        'feedjobs_http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}",status="200"}'
        in metrics
    )


async def test_anything_not_in_memory_takes_the_full_path(client, acme, globex):
    [ids] = await make_feeds(client, acme, 1)
    job_id = ids["validation_job_id"]
    await warm(client, f"/jobs/{job_id}", acme)
    before = early(client)
    # another tenant's key: the cached job is not theirs, and the full path says 404
    assert (await client.get(f"/jobs/{job_id}", headers=globex)).status == 404
    assert (await client.get(f"/jobs/{job_id}", headers=globex)).status == 404
    # no key, an unknown key, a HEAD, a sub-resource, a malformed id
    assert (await client.get(f"/jobs/{job_id}")).status == 401
    assert (await client.get(f"/jobs/{job_id}", headers={"x-api-key": "nope"})).status == 401
    assert (await client.head(f"/jobs/{job_id}", headers=acme)).status in (200, 405)
    assert (await client.get(f"/jobs/{job_id}/errors", headers=acme)).status == 200
    assert (await client.get("/jobs/not-an-id", headers=acme)).status == 404
    assert early(client) == before


async def test_an_empty_bucket_is_answered_429_by_the_full_path(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['validation_job_id']}"
    await warm(client, url, acme)
    client.app[appkeys.LIMITER] = RateLimiter(rate=0.5, burst=2)
    before = early(client)
    statuses = [(await client.get(url, headers=acme)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert early(client) == before + 2
    resp = await client.get(url, headers=acme)
    assert resp.status == 429 and (await resp.json())["error_code"] == "RATE_LIMITED"


async def test_a_changed_job_is_never_answered_from_its_old_version(client, acme):
    [ids] = await make_feeds(client, acme, 1)
    url = f"/jobs/{ids['validation_job_id']}"
    old = (await warm(client, url, acme)).headers["ETag"]
    assert (await client.post(f"{url}/run", headers=acme)).status == 202

    async def changed() -> bool:
        resp = await client.get(url, headers=acme)
        return resp.headers["ETag"] != old and (await resp.json())["status"] == "queued"

    assert await wait_for(changed, timeout=10)
