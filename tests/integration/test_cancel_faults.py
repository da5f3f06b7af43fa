"""A cancel answered 202 always wins, under faults too: during a PostgreSQL cut of the
consumer (its run is interrupted and given back, and ends cancelled instead of re-queued),
during a broker cut (the heartbeat needs no broker), and racing the run's own commit."""

from __future__ import annotations

import asyncio

import msgspec

from tests.faultproxy import FaultProxy
from tests.integration.conftest import running_consumer, upload_feed, wait_terminal
from tests.integration.feeds import generate
from tests.integration.test_faults import wait_loading


async def _loading(client, acme, tmp_path, seed: str) -> str:
    big, _ = generate(tmp_path, 150_000, "--seed", seed)
    jv = (await upload_feed(client, acme, big))["validation_job_id"]
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202
    await wait_loading(client, jv)
    return str(jv)


async def _ends_cancelled(client, acme, db, jv: str) -> None:
    done = await wait_terminal(client, acme, jv, timeout=90)
    assert done["status"] == "cancelled", done
    assert await db.fetchval("SELECT count(*) FROM products") == 0
    # No later attempt ran: the cancel was not overtaken by a re-queue.
    statuses = await db.fetch("SELECT attempt, status FROM job_runs WHERE job_id = $1", jv)
    assert "completed" not in {r["status"] for r in statuses}, statuses


async def test_cancel_during_a_postgres_cut_of_the_consumer(client, acme, settings, db, tmp_path):
    async with FaultProxy.for_url(settings.database_url) as proxy:
        via = msgspec.structs.replace(
            settings, database_url=proxy.url(settings.database_url), lease_seconds=120
        )
        async with running_consumer(via):
            jv = await _loading(client, acme, tmp_path, "41")
            await proxy.cut()
            # The gateway still reaches PostgreSQL: the cancel is answered and recorded.
            assert (await client.post(f"/jobs/{jv}/cancel", headers=acme)).status == 202
            await asyncio.sleep(1.0)
            await proxy.restore()
            await _ends_cancelled(client, acme, db, jv)


async def test_cancel_during_a_broker_cut(client, acme, settings, db, tmp_path):
    async with FaultProxy.for_url(settings.amqp_url) as proxy:
        via = msgspec.structs.replace(settings, amqp_url=proxy.url(settings.amqp_url))
        async with running_consumer(via):
            jv = await _loading(client, acme, tmp_path, "42")
            await proxy.cut()
            assert (await client.post(f"/jobs/{jv}/cancel", headers=acme)).status == 202
            await _ends_cancelled(client, acme, db, jv)
            await proxy.restore()


async def test_cancel_racing_completion_never_loses(client, acme, consumer, db):
    """Cancel a small run at once, again and again: whichever wins, a 202 means cancelled
    and a completed run means the cancel was refused (409), never both."""
    feed = b"sku,name,price,currency\n" + b"".join(b"S%d,Thing,1.00,USD\n" % i for i in range(2000))
    jv = (await upload_feed(client, acme, feed))["validation_job_id"]
    outcomes = set()
    for i in range(12):
        assert (
            await client.post(f"/jobs/{jv}/run", json={"force": True}, headers=acme)
        ).status == 202
        await asyncio.sleep(0.02 * (i % 6))  # cancel at different moments of the run
        cancel = await client.post(f"/jobs/{jv}/cancel", headers=acme)
        done = await wait_terminal(client, acme, jv, timeout=30)
        if cancel.status == 202:
            assert done["status"] == "cancelled", (i, done)
        else:
            assert cancel.status == 409 and done["status"] == "completed", (i, done)
        outcomes.add(done["status"])
    assert "cancelled" in outcomes  # the race was really run
