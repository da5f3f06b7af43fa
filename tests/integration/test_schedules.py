"""Feeds that run themselves: schedules through the API and the one active scheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from consumer import scheduler
from consumer.scheduler import Scheduler
from tests.conftest import wait_for
from tests.integration.conftest import running_consumer, upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"


async def _schedule(client, acme, feed_id, body):
    resp = await client.put(f"/feeds/{feed_id}/schedule", json=body, headers=acme)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_schedule_is_set_shown_and_removed(client, acme, globex):
    ids = await upload_feed(client, acme, FEED)
    fid = ids["feed_id"]
    view = await _schedule(
        client, acme, fid, {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "dry_run": True}
    )
    assert view["cron"] == "0 3 * * *" and view["options"]["dry_run"] is True
    due = datetime.fromisoformat(view["next_run_at"])
    assert due.astimezone(datetime.now().astimezone().tzinfo) > datetime.now(UTC)
    feed = await (await client.get(f"/feeds/{fid}", headers=acme)).json()
    assert feed["schedule"]["timezone"] == "Europe/Berlin"
    assert feed["next_run_at"] == view["next_run_at"]
    bad = await client.put(f"/feeds/{fid}/schedule", json={"cron": "nope"}, headers=acme)
    assert bad.status == 400 and (await bad.json())["details"] == {"field": "cron"}
    other = await client.put(f"/feeds/{fid}/schedule", json={"every_seconds": 5}, headers=globex)
    assert other.status == 404
    assert (await client.delete(f"/feeds/{fid}/schedule", headers=acme)).status == 204
    assert (await client.delete(f"/feeds/{fid}/schedule", headers=acme)).status == 404
    feed = await (await client.get(f"/feeds/{fid}", headers=acme)).json()
    assert feed["schedule"] is None and feed["next_run_at"] is None


async def test_a_short_interval_runs_the_feed_again_and_again(client, acme, settings):
    ids = await upload_feed(client, acme, FEED)
    jv = ids["validation_job_id"]
    quick = msgspec.structs.replace(settings, scheduler_tick_seconds=0.2)
    async with running_consumer(quick) as consumer:
        await _schedule(client, acme, ids["feed_id"], {"every_seconds": 1, "force": True})

        async def ran_twice():
            runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
            done = [r for r in runs["runs"] if r["status"] == "completed"]
            return runs if len(done) >= 2 else None

        runs = await wait_for(ran_twice, timeout=20)
        assert consumer.scheduler.leading.is_set()
    assert {r["requested_by"] for r in runs["runs"]} == {"schedule"}
    assert all(r["options"]["force"] is True for r in runs["runs"])


async def test_a_due_run_of_a_busy_job_is_skipped_and_a_missed_one_happens_once(client, acme, db):
    ids = await upload_feed(client, acme, FEED)
    fid, jv = ids["feed_id"], ids["validation_job_id"]
    await _schedule(client, acme, fid, {"cron": "0 * * * *"})
    now = datetime.now(UTC)
    # Everything was down for three days: the hourly schedule is 72 runs behind.
    await db.execute(
        "UPDATE feed_schedules SET next_run_at = $2 WHERE feed_id = $1",
        fid,
        now - timedelta(days=3),
    )
    async with db.acquire() as conn:
        assert await scheduler.tick(conn, now) == 1
        assert await scheduler.tick(conn, now) == 0  # once, not 72 times
    job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
    assert job["status"] == "queued" and job["attempt"] == 1
    nxt = await db.fetchval("SELECT next_run_at FROM feed_schedules WHERE feed_id = $1", fid)
    assert now < nxt <= now + timedelta(hours=1)
    # Due again while that run is still queued (no consumer): skipped, not piled up.
    async with db.acquire() as conn:
        assert await scheduler.tick(conn, nxt) == 1
    job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
    assert job["attempt"] == 1
    runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
    assert len(runs["runs"]) == 1


async def test_one_scheduler_leads_and_another_takes_over(settings, client, acme):
    first = Scheduler(settings.database_url, 0.1)
    second = Scheduler(settings.database_url, 0.1)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        await wait_for(lambda: _any_leading(first, second), timeout=10)
        await asyncio.sleep(0.5)
        assert first.leading.is_set() != second.leading.is_set()  # never both
        leader, standby = (0, 1) if first.leading.is_set() else (1, 0)
        tasks[leader].cancel()  # the leader's process goes away: its session ends
        await asyncio.gather(tasks[leader], return_exceptions=True)
        follower = (first, second)[standby]
        await wait_for(lambda: _flag(follower.leading), timeout=5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_schedulers_never_fire_one_schedule_twice(client, acme, db, settings):
    ids = await upload_feed(client, acme, FEED)
    await _schedule(client, acme, ids["feed_id"], {"every_seconds": 3600})
    await db.execute("UPDATE feed_schedules SET next_run_at = now() - interval '1 minute'")
    now = datetime.now(UTC)
    a = await asyncpg.connect(settings.database_url)
    b = await asyncpg.connect(settings.database_url)
    try:
        fired = await asyncio.gather(scheduler.tick(a, now), scheduler.tick(b, now))
    finally:
        await a.close()
        await b.close()
    assert sorted(fired) == [0, 1]
    runs = await (await client.get(f"/jobs/{ids['validation_job_id']}/runs", headers=acme)).json()
    assert len(runs["runs"]) == 1


async def _any_leading(*schedulers: Scheduler) -> bool:
    return any(s.leading.is_set() for s in schedulers)


async def _flag(event: asyncio.Event) -> bool:
    return event.is_set()
