"""Signed webhooks, verified by the ``standardwebhooks`` library (not our code) in a real
HTTP receiver: retries with one webhook-id, 410 disables, a hanging endpoint holds back no
other, a consumer stopped mid-delivery loses nothing, rotation signs with both secrets,
SSRF refused, the delivery log and retry, tenant scoping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import wait_for
from tests.integration.conftest import run_and_wait, running_consumer, upload_feed

FEED = b"sku,name,price,currency\nA-1,Cap,1.00,EUR\n"


class Receiver:
    """An HTTP endpoint on 127.0.0.1: ``answers`` decide each response in turn."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answers: list[int | str] = []  # a status, or "hang"
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append({"headers": dict(request.headers), "body": body})
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await asyncio.sleep(60)
        return web.Response(status=int(answer), text="x" * 10_000)

    def verified(self, secret: str) -> list[Any]:
        """Every call's payload, verified against ``secret``."""
        return [Webhook(secret).verify(c["body"], c["headers"]) for c in self.calls]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    r.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await r.runner.setup()
    site = web.TCPSite(r.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    r.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield r
    finally:
        await r.runner.cleanup()


async def register(client, headers, url: str, events=("job.completed",), **extra) -> dict:
    resp = await client.post(
        "/webhooks", json={"url": url, "events": list(events), **extra}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def deliveries(client, headers, webhook_id: str) -> list[dict]:
    resp = await client.get(f"/webhooks/{webhook_id}/deliveries", headers=headers)
    assert resp.status == 200
    return (await resp.json())["deliveries"]


def until(predicate: Callable[[], bool]) -> Callable[[], Any]:
    async def check() -> bool:
        return predicate()

    return check


async def test_retried_until_delivered_with_one_id_and_verified(client, acme, consumer):
    async with receiver() as r:
        ids = await upload_feed(client, acme, FEED)  # its submission completes: before
        hook = await register(client, acme, r.url)
        assert hook["secret"].startswith("whsec_") and hook["webhook_id"].startswith("WH")
        listed = await (await client.get(f"/webhooks/{hook['webhook_id']}", headers=acme)).json()
        assert "secret" not in listed  # shown once
        r.answers = [500, 500, 200]
        job = await run_and_wait(client, acme, ids["validation_job_id"])
        await wait_for(until(lambda: len(r.calls) == 3))
        payloads = r.verified(hook["secret"])
        assert {c["headers"]["webhook-id"] for c in r.calls} == {
            r.calls[0]["headers"]["webhook-id"]
        }
        assert all(p["type"] == "job.completed" for p in payloads)
        data = payloads[0]["data"]
        assert data["job_id"] == job["job_id"] and data["status"] == "completed"
        assert data["result"]["inserted"] == 1
        assert data["links"]["products"] == f"/feeds/{ids['feed_id']}/products"
        log = await wait_for(
            lambda: _delivered(client, acme, hook["webhook_id"]),
        )
        assert log["attempts"] == 3 and log["last_status"] == 200
        assert log["delivery_id"] == r.calls[0]["headers"]["webhook-id"]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(r.calls[0]["body"], r.calls[0]["headers"])


async def _delivered(client, headers, webhook_id: str) -> dict | None:
    found = await deliveries(client, headers, webhook_id)
    return found[0] if found and found[0]["status"] == "delivered" else None


async def test_410_disables_the_endpoint(client, acme, consumer):
    async with receiver() as r:
        ids = await upload_feed(client, acme, FEED)
        # One event: no second delivery in flight beside the one answered 410.
        hook = await register(client, acme, r.url, events=["job.completed"])
        r.answers = [410]
        await run_and_wait(client, acme, ids["validation_job_id"])

        async def disabled() -> dict | None:
            view = await (await client.get(f"/webhooks/{hook['webhook_id']}", headers=acme)).json()
            return view if view["disabled_at"] else None

        view = await wait_for(disabled)
        assert "410" in view["disabled_reason"]
        await asyncio.sleep(0.5)
        assert len(r.calls) == 1  # nothing more is sent to it
        states = {d["status"] for d in await deliveries(client, acme, hook["webhook_id"])}
        assert states == {"failed"}


async def test_a_whole_failed_schedule_disables_the_endpoint(client, acme, consumer):
    async with receiver() as r:
        hook = await register(client, acme, r.url)
        r.answers = [503] * 10
        await client.post(f"/webhooks/{hook['webhook_id']}/test", headers=acme)
        await wait_for(until(lambda: len(r.calls) == 4))  # the first and three retries
        view = await wait_for(
            lambda: _view_if(client, acme, hook["webhook_id"], lambda v: v["disabled_at"])
        )
        assert "retry schedule" in view["disabled_reason"] and "HTTP 503" in view["disabled_reason"]
        [log] = await deliveries(client, acme, hook["webhook_id"])
        assert log["status"] == "failed" and log["attempts"] == 4
        # Its owner retries the delivery by hand: the endpoint is enabled again, and the
        # delivery goes out once more under the same id.
        r.answers = [200]
        resp = await client.post(
            f"/webhooks/{hook['webhook_id']}/deliveries/{log['delivery_id']}/retry", headers=acme
        )
        assert resp.status == 202
        await wait_for(lambda: _delivered(client, acme, hook["webhook_id"]))
        assert r.calls[-1]["headers"]["webhook-id"] == log["delivery_id"]
        view = await (await client.get(f"/webhooks/{hook['webhook_id']}", headers=acme)).json()
        assert view["disabled_at"] is None


async def _view_if(client, headers, webhook_id, predicate) -> dict | None:
    view = await (await client.get(f"/webhooks/{webhook_id}", headers=headers)).json()
    return view if predicate(view) else None


async def test_a_hanging_endpoint_holds_back_no_other(client, acme, globex, settings):
    patient = msgspec.structs.replace(settings, webhook_timeout_seconds=30.0)
    async with receiver() as slow, receiver() as fast, running_consumer(patient):
        slow.answers = ["hang"] * 20
        stuck = await register(client, acme, slow.url)
        for _ in range(8):  # more than its in-flight share
            await client.post(f"/webhooks/{stuck['webhook_id']}/test", headers=acme)
        await wait_for(until(lambda: len(slow.calls) >= 4))
        hook = await register(client, globex, fast.url)
        started = asyncio.get_running_loop().time()
        await client.post(f"/webhooks/{hook['webhook_id']}/test", headers=globex)
        await wait_for(until(lambda: len(fast.calls) == 1), timeout=5)
        assert asyncio.get_running_loop().time() - started < 1.5
        assert fast.verified(hook["secret"])[0]["type"] == "webhook.test"
        assert len(slow.calls) <= 4  # WEBHOOK_IN_FLIGHT_PER_ENDPOINT at once


async def test_a_consumer_stopped_mid_delivery_loses_nothing(client, acme, settings, db):
    quick = msgspec.structs.replace(settings, webhook_timeout_seconds=30.0)
    async with receiver() as r:
        hook = await register(client, acme, r.url)
        r.answers = ["hang"]
        async with running_consumer(quick):
            await client.post(f"/webhooks/{hook['webhook_id']}/test", headers=acme)
            await wait_for(until(lambda: len(r.calls) == 1))
        # Stopped mid-attempt: the delivery is still leased; its lease ends, it goes again.
        # (the lease is the attempt's timeout plus 5 s: fast-forwarded here)
        await db.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'pending'"
        )
        async with running_consumer(settings):
            await wait_for(until(lambda: len(r.calls) == 2))
            ids = {c["headers"]["webhook-id"] for c in r.calls}
            assert len(ids) == 1
            await wait_for(lambda: _delivered(client, acme, hook["webhook_id"]))


async def test_rotation_signs_with_both_secrets_during_the_grace(client, acme, consumer):
    async with receiver() as r:
        hook = await register(client, acme, r.url)
        resp = await client.post(f"/webhooks/{hook['webhook_id']}/rotate-secret", headers=acme)
        assert resp.status == 200
        rotated = await resp.json()
        assert rotated["secret"] != hook["secret"] and rotated["previous_secret_valid_until"]
        await client.post(f"/webhooks/{hook['webhook_id']}/test", headers=acme)
        await wait_for(until(lambda: len(r.calls) == 1))
        assert len(r.calls[0]["headers"]["webhook-signature"].split(" ")) == 2
        assert r.verified(hook["secret"]) == r.verified(rotated["secret"])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "https://[::1]/hook",
        "ftp://example.com/hook",
        "http://user:pw@127.0.0.1/hook",
        "not a url",
    ],
)
async def test_urls_that_are_not_public_are_refused(client, acme, url):
    resp = await client.post("/webhooks", json={"url": url, "events": ["job.failed"]}, headers=acme)
    body = await resp.json()
    assert resp.status == 400 and body["details"]["field"] == "url", body


async def test_bodies_are_validated_and_endpoints_tenant_scoped(client, acme, globex, consumer):
    for bad in (
        {"url": "http://127.0.0.1:9/x", "events": []},
        {"url": "http://127.0.0.1:9/x", "events": ["job.exploded"]},
        {"url": "http://127.0.0.1:9/x", "events": ["job.failed"], "feed_ids": ["FD99999"]},
    ):
        assert (await client.post("/webhooks", json=bad, headers=acme)).status == 400, bad
    hook = await register(client, acme, "http://127.0.0.1:9/x")
    for method, path in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("POST", "/test"),
        ("GET", "/deliveries"),
    ]:
        resp = await client.request(method, f"/webhooks/{hook['webhook_id']}{path}", headers=globex)
        assert resp.status == 404, (method, path)
    assert [
        w["webhook_id"]
        for w in (await (await client.get("/webhooks", headers=globex)).json())["webhooks"]
    ] == []
    missing = await client.post(
        f"/webhooks/{hook['webhook_id']}/deliveries/msg_nope/retry", headers=acme
    )
    assert missing.status == 404
    assert (await client.delete(f"/webhooks/{hook['webhook_id']}", headers=acme)).status == 204
    assert (await client.get(f"/webhooks/{hook['webhook_id']}", headers=acme)).status == 404
    # At most 20 endpoints a tenant: each is a delivery per matching status change.
    for _ in range(20):
        await register(client, acme, "http://127.0.0.1:9/x")
    over = await client.post(
        "/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["job.failed"]}, headers=acme
    )
    assert over.status == 400 and (await over.json())["details"]["limit"] == 20
