"""AMQP: run requests published directly, dead letters, status events, the outbox relay."""

from __future__ import annotations

import asyncio
import json
import signal

import aio_pika
import pytest

from service.core.bus import Names
from service.core.outbox import OutboxRelay
from tests.conftest import wait_for
from tests.integration.conftest import consumer_process, run_and_wait, upload_feed
from tests.integration.feeds import generate

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


async def publish(channel, settings, body: bytes) -> None:
    ex = await channel.get_exchange(Names(settings.amqp_prefix).jobs)
    await ex.publish(
        aio_pika.Message(body=body, content_type="application/json", message_id="m1"),
        routing_key="run",
    )


async def job(client, headers, job_id):
    return await (await client.get(f"/jobs/{job_id}", headers=headers)).json()


@pytest.mark.parametrize("form", ["job_id", "feed_id"])
async def test_upstream_run_request_runs_the_job(client, acme, consumer, channel, settings, form):
    ids = await upload_feed(client, acme, FEED)
    key = "validation_job_id" if form == "job_id" else "feed_id"
    await publish(
        channel,
        settings,
        json.dumps({form: ids[key], "options": {"dry_run": True}, "request_id": "up-1"}).encode(),
    )
    jv = ids["validation_job_id"]

    async def done():
        j = await job(client, acme, jv)
        return j if j["status"] == "completed" else None

    j = await wait_for(done)
    assert j["result"]["dry_run"] is True and j["result"]["inserted"] == 2
    runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
    assert runs["runs"][0]["requested_by"] == "amqp"
    assert runs["runs"][0]["options"]["dry_run"] is True


@pytest.mark.parametrize(
    "body,code",
    [
        (b"{not json", "INVALID_JSON"),
        (b'{"job_id": 5}', "INVALID_MESSAGE"),
        (b'{"options": {}}', "INVALID_MESSAGE"),
        (b'{"job_id": "JV99999"}', "UNKNOWN_JOB"),
        (b'{"feed_id": "FD99999"}', "UNKNOWN_FEED"),
    ],
)
async def test_poison_messages_are_dead_lettered_with_reason(
    consumer, channel, settings, body, code
):
    await publish(channel, settings, body)
    dead = await channel.declare_queue(Names(settings.amqp_prefix).dead_queue, passive=True)

    async def got():
        return await dead.get(no_ack=True, fail=False)

    message = await wait_for(got, timeout=10)
    assert message.body == body
    assert message.headers["x-error-code"] == code
    assert message.headers["x-error-message"]


async def test_submission_job_request_is_dead_lettered(client, acme, consumer, channel, settings):
    ids = await upload_feed(client, acme, FEED)
    await publish(channel, settings, json.dumps({"job_id": ids["submission_job_id"]}).encode())
    dead = await channel.declare_queue(Names(settings.amqp_prefix).dead_queue, passive=True)
    message = await wait_for(lambda: dead.get(no_ack=True, fail=False), timeout=10)
    assert message.headers["x-error-code"] == "JOB_NOT_RUNNABLE"


async def test_duplicate_request_for_running_or_finished_run_is_a_noop(
    client, acme, consumer, channel, settings
):
    ids = await upload_feed(client, acme, FEED)
    jv = ids["validation_job_id"]
    await run_and_wait(client, acme, jv)
    # a redelivered copy of the gateway's own message (attempt 1) must not start attempt 2
    await publish(channel, settings, json.dumps({"job_id": jv, "attempt": 1}).encode())
    await asyncio.sleep(1.0)
    j = await job(client, acme, jv)
    assert j["attempt"] == 1 and j["status"] == "completed"


async def test_status_events_are_published(client, acme, consumer, channel, settings):
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(Names(settings.amqp_prefix).events, routing_key="job.#")
    ids = await upload_feed(client, acme, FEED)
    jv = ids["validation_job_id"]
    await run_and_wait(client, acme, jv)
    seen = []

    async def collect():
        while (m := await queue.get(no_ack=True, fail=False)) is not None:
            seen.append((m.routing_key, json.loads(m.body)))
        return any(k == "job.completed" and b["job_id"] == jv for k, b in seen)

    await wait_for(collect, timeout=10)
    mine = [(k, b) for k, b in seen if b["job_id"] == jv]
    assert [k for k, _ in mine] == ["job.created", "job.queued", "job.running", "job.completed"]
    completed = mine[-1][1]
    assert completed["feed_id"] == ids["feed_id"] and completed["attempt"] == 1
    assert completed["result"]["inserted"] == 2 and completed["error"] is None
    assert completed["occurred_at"].endswith("Z")


async def test_run_is_accepted_while_broker_is_down_and_sent_later(client, acme, db, settings):
    # The app's own relay is the one a broker outage would stop: stop it, and use one that
    # points at a closed port.
    from service.gateway.app import BACKGROUND

    for task in client.app[BACKGROUND]:
        if task.get_name() == "outbox_relay":
            task.cancel()
    ids = await upload_feed(client, acme, FEED)
    jv = ids["validation_job_id"]
    resp = await client.post(f"/jobs/{jv}/run", headers=acme)
    assert resp.status == 202
    names = Names(settings.amqp_prefix)
    dead_relay = OutboxRelay(db, "amqp://guest:guest@127.0.0.1:1/", names, poll_seconds=0.2)
    task = asyncio.create_task(dead_relay.run())
    await asyncio.sleep(1.5)
    unsent = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE exchange = 'jobs' AND sent_at IS NULL"
    )
    assert unsent == 1 and not dead_relay.connected
    task.cancel()
    # The broker is back: the message goes out, and lands in the run queue.
    live = OutboxRelay(db, settings.amqp_url, names, poll_seconds=0.2)
    live_task = asyncio.create_task(live.run())
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"), timeout=10
        )
        conn = await aio_pika.connect(settings.amqp_url)
        ch = await conn.channel()
        q = await ch.declare_queue(names.run_queue, passive=True)
        m = await q.get(no_ack=True)
        assert json.loads(m.body) == {
            "job_id": jv,
            "feed_id": None,
            "options": None,
            "request_id": resp.headers["x-request-id"],
            "attempt": 1,
        }
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT and m.message_id
        await conn.close()
    finally:
        live_task.cancel()


async def test_consumer_killed_mid_load_leaves_products_and_run_recovers(
    client, acme, db, settings, tmp_path
):
    small, _ = generate(tmp_path, 500, "--seed", "1")
    ids = await upload_feed(client, acme, small)
    jv = ids["validation_job_id"]
    quick = {"LEASE_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "1"}
    proc = consumer_process(settings, **quick)
    try:
        first = await run_and_wait(client, acme, jv)
        assert first["result"]["inserted"] == 500
    finally:
        proc.kill()
        proc.wait()
    before = await db.fetch("SELECT sku, row_hash FROM products ORDER BY sku")
    big, _ = generate(tmp_path, 150_000, "--seed", "2")
    await client.put(
        f"/feeds/{ids['feed_id']}/file", data=big, headers={**acme, "Content-Type": "text/csv"}
    )
    victim = consumer_process(settings, **quick)
    try:
        await client.post(f"/jobs/{jv}/run", headers=acme)

        async def loading():
            j = await job(client, acme, jv)
            return j["status"] == "running" and (j["progress"] or {}).get("rows_read", 0) > 0

        await wait_for(loading, timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    assert await db.fetch("SELECT sku, row_hash FROM products ORDER BY sku") == before
    assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stage_%'") == 0
    rescuer = consumer_process(settings, **quick)
    try:

        async def completed():
            j = await job(client, acme, jv)
            return j if j["status"] == "completed" else None

        j = await wait_for(completed, timeout=90)
    finally:
        rescuer.terminate()
        rescuer.wait()
    assert j["attempt"] == 3 and j["result"]["rows_valid"] == 150_000
    runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
    assert [(r["attempt"], r["status"]) for r in runs["runs"]][:2] == [
        (3, "completed"),
        (2, "failed"),
    ]
    assert runs["runs"][1]["error"]["code"] == "WORKER_LOST"
    assert runs["runs"][0]["requested_by"] == "sweeper"


async def test_cancel_while_running_rolls_back(client, acme, consumer, db, tmp_path):
    big, _ = generate(tmp_path, 150_000, "--seed", "5")
    ids = await upload_feed(client, acme, big)
    jv = ids["validation_job_id"]
    await client.post(f"/jobs/{jv}/run", headers=acme)

    async def loading():
        j = await job(client, acme, jv)
        return j["status"] == "running" and (j["progress"] or {}).get("rows_read", 0) > 0

    await wait_for(loading, timeout=30)
    resp = await client.post(f"/jobs/{jv}/cancel", headers=acme)
    assert resp.status == 202

    async def cancelled():
        j = await job(client, acme, jv)
        return j if j["status"] == "cancelled" else None

    j = await wait_for(cancelled, timeout=30)
    assert j["error"]["code"] == "CANCELLED"
    assert await db.fetchval("SELECT count(*) FROM products") == 0
    assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stage_%'") == 0


async def test_sigterm_releases_the_run_for_another_consumer(client, acme, db, settings, tmp_path):
    big, _ = generate(tmp_path, 150_000, "--seed", "6")
    ids = await upload_feed(client, acme, big)
    jv = ids["validation_job_id"]
    first = consumer_process(settings, SHUTDOWN_GRACE_SECONDS="0")
    try:
        await client.post(f"/jobs/{jv}/run", headers=acme)

        async def loading():
            j = await job(client, acme, jv)
            return j["status"] == "running" and (j["progress"] or {}).get("rows_read", 0) > 0

        await wait_for(loading, timeout=30)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    j = await job(client, acme, jv)
    assert j["status"] == "queued" and j["attempt"] == 2  # released at once, not left to a lease
    assert await db.fetchval("SELECT count(*) FROM products") == 0
    second = consumer_process(settings)
    try:

        async def completed():
            got = await job(client, acme, jv)
            return got if got["status"] == "completed" else None

        done = await wait_for(completed, timeout=90)
    finally:
        second.terminate()
        second.wait()
    assert done["attempt"] == 2 and done["result"]["inserted"] == 150_000
    runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
    assert runs["runs"][1]["error"]["code"] == "ABANDONED"
    assert runs["runs"][0]["requested_by"] == "shutdown"
