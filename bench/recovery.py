"""``make bench`` (last part): how long the real gateway and consumer processes take to
notice and recover from a broker or database outage, and to stop.

The processes reach RabbitMQ and PostgreSQL through TCP proxies that this script cuts
(dropping open connections, refusing new ones) and restores; the services themselves are
never touched. Every figure is a duration in seconds measured in this run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from bench.run import KEY, Stack, feed, fresh_db, s3_endpoint, upload  # noqa: E402
from service.cli import embedded_s3  # noqa: E402
from service.core.settings import load_settings  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

OUTAGE_S = 5.0
HEADERS = {"x-api-key": KEY}


async def until(check, timeout: float = 120.0, every: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``await check()`` is truthy."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(every)
    return time.monotonic() - started


async def main() -> None:
    base = load_settings(os.environ)
    pg = FaultProxy.for_url(base.database_url)
    mq = FaultProxy.for_url(base.amqp_url)
    await pg.start()
    await mq.start()
    s3, s3_proc = s3_endpoint()
    db_url = await fresh_db("feedjobs_recovery")
    env = {**os.environ, "AMQP_URL": mq.url(base.amqp_url), "LOG_LEVEL": "WARNING"}
    stack = Stack(env, pg.url(db_url), s3)
    small = feed(1_000, "--seed", "31")
    big = feed(300_000, "--seed", "32")
    rows = []
    try:
        await asyncio.to_thread(stack.start)  # blocking; the proxies live in this loop
        async with aiohttp.ClientSession() as http:

            async def status(path: str) -> int:
                try:
                    async with http.get(f"{stack.url}{path}", headers=HEADERS) as resp:
                        return resp.status
                except aiohttp.ClientError:
                    return 0

            async def job_is(job_id: str, state: str, attempt: int | None = None) -> bool:
                async with http.get(f"{stack.url}/jobs/{job_id}", headers=HEADERS) as resp:
                    if resp.status != 200:
                        return False
                    job = await resp.json()
                return bool(job["status"] == state and attempt in (None, job["attempt"]))

            await until(lambda: _eq(status("/readyz"), 200), timeout=60)

            # 1. The broker goes away for OUTAGE_S; a run is asked for meanwhile.
            ids = await upload(http, stack, small)
            jv = ids["validation_job_id"]
            await mq.cut()
            noticed = await until(lambda: _eq(status("/readyz"), 503))
            rows.append(("broker cut: /readyz says so", noticed, "", "< 1 s", noticed < 1))
            async with http.post(f"{stack.url}/jobs/{jv}/run", headers=HEADERS) as resp:
                accepted = resp.status == 202
            await asyncio.sleep(OUTAGE_S)
            await mq.restore()
            t_ready = await until(lambda: _eq(status("/readyz"), 200))
            t_run = t_ready + await until(lambda: job_is(jv, "completed"))
            rows.append(("broker back: /readyz ok", t_ready, "", "", True))
            rows.append(("broker back: queued run completed", t_run, "", "", accepted))

            # 2. PostgreSQL goes away for OUTAGE_S in the middle of a load.
            ids = await upload(http, stack, big)
            jv = ids["validation_job_id"]
            async with http.post(f"{stack.url}/jobs/{jv}/run", headers=HEADERS):
                pass
            await until(lambda: job_is(jv, "running"))
            await asyncio.sleep(0.5)
            await pg.cut()
            t_503 = await until(lambda: _eq(status(f"/jobs/{jv}"), 503))
            rows.append(("database cut: API answers 503", t_503, "", "", True))
            await asyncio.sleep(OUTAGE_S)
            await pg.restore()
            t_rerun = await until(lambda: job_is(jv, "running", 2))
            t_done = await until(lambda: job_is(jv, "completed", 2))
            rows.append(("database back: run re-queued, running", t_rerun, "", "< lease", True))
            rows.append(("  ... and completed", t_rerun + t_done, "", "", True))

        # 3. SIGTERM with nothing to do.
        for name, proc in (("gateway", stack.procs[0]), ("consumer", stack.procs[1])):
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 60)
            took = time.monotonic() - started
            rows.append((f"SIGTERM, idle {name}: exited", took, "", "< 2 s", took < 2))
    finally:
        await asyncio.to_thread(stack.stop)
        await pg.close()
        await mq.close()
        if s3_proc:
            embedded_s3.stop(s3_proc)
    report(
        "recovery",
        f"feedjobs fault recovery, {OUTAGE_S:g} s outages through a TCP proxy",
        rows,
        outage_s=OUTAGE_S,
    )


async def _eq(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return bool(await value == expected)


if __name__ == "__main__":
    asyncio.run(main())
