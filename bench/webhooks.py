#!/usr/bin/env python3
"""Webhook delivery throughput: N signed deliveries through the consumer's deliverer
(claim, sign, POST, record in PostgreSQL) to a local receiver, against the reference of a
bare aiohttp client POSTing the same N bodies to the same receiver at the same concurrency,
in the same run.

    python bench/webhooks.py [--deliveries 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from bench.run import fresh_db  # noqa: E402
from consumer.metrics import ConsumerMetrics  # noqa: E402
from consumer.webhooks import Deliverer  # noqa: E402
from service.core import webhooks  # noqa: E402
from service.core.migrate import migrate  # noqa: E402
from service.core.settings import load_settings  # noqa: E402
from service.core.store import keys as keys_store  # noqa: E402
from service.core.store import webhooks as store  # noqa: E402

BODY = b'{"type":"job.completed","timestamp":"2026-12-02T00:00:00Z","data":{"job_id":"JV00001"}}'


async def receiver() -> tuple[web.AppRunner, str, list[int]]:
    got: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        got.append(1)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook", got


async def reference(url: str, n: int, concurrency: int) -> float:
    """The same POSTs from a bare client (new connection each, as the deliverer does)."""
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with slots, session.post(url, data=BODY) as resp:
                await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - started


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--deliveries", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, default=8)
    args = ap.parse_args()
    n, endpoints = args.deliveries, args.endpoints
    db_url = await fresh_db("feedjobs_bench_webhooks")
    settings = load_settings(
        {}, database_url=db_url, webhook_allowed_hosts="127.0.0.1", webhook_poll_seconds=0.05
    )
    runner, url, got = await receiver()
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=8)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await keys_store.add_key(conn, "bench", "bench-key")
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
        hooks = [
            await store.create(pool, tenant_id, url, ["job.completed"], None, webhooks.new_secret())
            for _ in range(endpoints)
        ]
        # (the concurrency the deliverer can use: every endpoint's share, within the cap)
        concurrency = min(
            settings.webhook_concurrency, endpoints * settings.webhook_in_flight_per_endpoint
        )
        ref = sorted([await reference(url, n, concurrency) for _ in range(3)])[1]
        got.clear()
        await pool.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_type, body)"
            " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), ($1::text[])[1 + i % $2],"
            " 'job.completed', $3 FROM generate_series(0, $4::int - 1) AS i",
            [h.webhook_id for h in hooks],
            endpoints,
            BODY.decode(),
            n,
        )
        deliverer = Deliverer(pool, settings, ConsumerMetrics())
        started = time.perf_counter()
        task = asyncio.create_task(deliverer.run())
        while await store.backlog(pool) or deliverer.tasks:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        task.cancel()
        await deliverer.close()
        delivered = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
        )
    finally:
        await pool.close()
        await runner.cleanup()
    rate, ref_rate = n / elapsed, n / ref
    report(
        "webhooks",
        f"feedjobs webhook deliveries, {n:,} to {endpoints} endpoints on one local receiver",
        [
            (
                "deliveries per second",
                rate,
                f"{rate / ref_rate:.2f}x",
                "of a bare client's",
                delivered == n,
            ),
            ("bare aiohttp client, POSTs per second", ref_rate, "1.00x", "reference", True),
        ],
        concurrency=concurrency,
        reference_s=round(ref, 3),
        deliverer_s=round(elapsed, 3),
    )


if __name__ == "__main__":
    asyncio.run(main())
