"""``make bench`` (fleet part): many feeds on schedules, served by several consumers for a
sustained window; the inputs of the capacity model in docs/scaling.md.

Each feed (sizes log-uniform between ``--min-rows`` and ``--max-rows``) is an S3 object that
its "merchant" (this script) rewrites after every run with the other of two versions that
differ in 1% of their rows, so every scheduled run changes 1% of the feed. Every feed runs
every ``--every`` seconds (first due times spread over that period); the gateway, the
consumers, PostgreSQL, the S3 server and RabbitMQ run as their own processes.

Measured over the window (after every feed's first load): completed runs a minute, the time
from a run's request (by the scheduler, within its tick of the due time) to its completion
(p50, p95), CPU seconds a run of each process (children included: parse workers, PostgreSQL
backends), database and WAL growth a run, and the runs still waiting at the end (a backlog
says the fleet asked for more than these consumers give).

    python bench/fleet.py                       # 2,000 feeds of 1k-10k rows, 10 minutes
    python bench/fleet.py --max-rows 100000     # 1k-100k rows: 43M rows, on a larger host

The default sizes fit this project's 24 GB machine: moto's S3 server keeps every object in
memory (each feed's two versions and its current copy: about 13 GB at 1k-100k rows).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import genfeed  # noqa: E402
from bench.report import Row, report  # noqa: E402
from bench.run import KEY, Stack, fresh_db, s3_endpoint  # noqa: E402
from service.cli import embedded_s3  # noqa: E402
from service.core.s3 import s3_client  # noqa: E402
from service.core.settings import load_settings  # noqa: E402

HEADERS = {"x-api-key": KEY}


def sizes(n: int, low: int, high: int, seed: int = 7) -> list[int]:
    """``n`` feed sizes, log-uniform between ``low`` and ``high`` rows."""
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(n)]


class Fleet:
    def __init__(self, stack: Stack, s3_url: str, rows: list[int], every: int) -> None:
        self.stack = stack
        self.settings = load_settings({**stack.env, "S3_ENDPOINT_URL": s3_url})
        self.bucket = self.settings.s3_bucket
        self.rows = rows
        self.every = every
        self.feeds: list[str] = []  # feed ids, by index
        self.jobs: dict[str, int] = {}  # validation job id -> index
        self.version: list[int] = [0] * len(rows)  # which version is the object now

    def key(self, i: int, which: str) -> str:
        return f"fleet/{i:05d}/{which}.csv"

    async def upload_versions(self) -> None:
        """Each feed's two versions, and the first as its object."""
        started = time.monotonic()
        async with s3_client(self.settings) as s3:
            with tempfile.TemporaryDirectory() as tmp:
                for i, n in enumerate(self.rows):
                    for which, options in (
                        ("a", {"seed": i + 1}),
                        ("b", {"seed": i + 100_001, "base_seed": i + 1, "change_pct": 1.0}),
                    ):
                        path = Path(tmp) / f"{which}.csv"
                        genfeed.generate(path, n, **options)
                        await s3.put_object(
                            Bucket=self.bucket, Key=self.key(i, which), Body=path.read_bytes()
                        )
                    await s3.copy_object(
                        Bucket=self.bucket,
                        Key=self.key(i, "current"),
                        CopySource={"Bucket": self.bucket, "Key": self.key(i, "a")},
                    )
        print(f"  {len(self.rows)} feeds' files in {time.monotonic() - started:.0f} s", flush=True)

    async def register(self, http: aiohttp.ClientSession) -> None:
        for i in range(len(self.rows)):
            body = {"s3_uri": f"s3://{self.bucket}/{self.key(i, 'current')}", "name": f"f{i}"}
            async with http.post(f"{self.stack.url}/feeds", json=body, headers=HEADERS) as r:
                assert r.status == 201, await r.text()
                ids = await r.json()
            self.feeds.append(ids["feed_id"])
            self.jobs[ids["validation_job_id"]] = i

    async def first_loads(self, http: aiohttp.ClientSession, db: asyncpg.Pool) -> float:
        started = time.monotonic()
        for job in self.jobs:
            async with http.post(f"{self.stack.url}/jobs/{job}/run", headers=HEADERS) as r:
                assert r.status == 202, await r.text()
        while await db.fetchval(
            "SELECT count(*) FROM jobs WHERE job_type = 'validation' AND status <> 'completed'"
        ):
            await asyncio.sleep(1)
        return time.monotonic() - started

    async def schedule(self, http: aiohttp.ClientSession, db: asyncpg.Pool) -> None:
        for feed in self.feeds:
            body = {"every_seconds": self.every}
            url = f"{self.stack.url}/feeds/{feed}/schedule"
            async with http.put(url, json=body, headers=HEADERS) as r:
                assert r.status in (200, 201), await r.text()
        # first due times spread over one period, as a real fleet's are
        await db.execute(
            "UPDATE feed_schedules SET next_run_at = now() + random() * make_interval(secs => $1)",
            float(self.every),
        )

    async def merchants(self, db: asyncpg.Pool, stop: asyncio.Event) -> None:
        """After each completed run, the feed's object becomes its other version."""
        seen = await db.fetchval("SELECT coalesce(max(finished_at), now()) FROM job_runs")
        async with s3_client(self.settings) as s3:
            while not stop.is_set():
                done = await db.fetch(
                    "SELECT job_id, finished_at FROM job_runs WHERE finished_at > $1"
                    " ORDER BY finished_at",
                    seen,
                )
                for row in done:
                    i = self.jobs.get(row["job_id"])
                    seen = row["finished_at"]
                    if i is None:
                        continue
                    self.version[i] ^= 1
                    source = self.key(i, "ab"[self.version[i]])
                    await s3.copy_object(
                        Bucket=self.bucket,
                        Key=self.key(i, "current"),
                        CopySource={"Bucket": self.bucket, "Key": source},
                    )
                await asyncio.sleep(0.5)


def more_consumers(stack: Stack, n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` more consumers beside the stack's, and the tenant's grant of the fleet's prefix."""
    bucket = load_settings(stack.env).s3_bucket
    subprocess.run(
        [sys.executable, "-m", "service", "allow-s3-prefix", "--tenant", "bench",
         f"s3://{bucket}/fleet/"],
        env=stack.env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return [
        subprocess.Popen(
            [sys.executable, "-m", "consumer"], env=stack.env, stdout=subprocess.DEVNULL
        )
        for _ in range(n)
    ]


def cpu_seconds(proc: psutil.Process) -> float:
    """A process's CPU seconds with its children's: those it has reaped, and those alive."""
    t = proc.cpu_times()
    total = float(t.user + t.system + t.children_user + t.children_system)
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


class Meters:
    """CPU seconds of each process role, read at the window's start and end."""

    def __init__(self, roles: dict[str, list[psutil.Process]]) -> None:
        self.roles = roles
        self.start = self.read()

    def read(self) -> dict[str, float]:
        out = {}
        for role, procs in self.roles.items():
            total = 0.0
            for p in procs:
                try:
                    total += cpu_seconds(p)
                except psutil.NoSuchProcess:
                    pass
            out[role] = total
        return out

    def spent(self) -> dict[str, float]:
        end = self.read()
        return {role: end[role] - self.start[role] for role in self.roles}


async def postmaster(db: asyncpg.Pool) -> psutil.Process:
    """PostgreSQL's postmaster: its children's CPU includes every backend that has ended."""
    backend = psutil.Process(await db.fetchval("SELECT pg_backend_pid()"))
    return psutil.Process(backend.ppid())


def brokers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--min-rows", type=int, default=1000)
    ap.add_argument("--max-rows", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--every", type=int, default=600, help="seconds between a feed's runs")
    args = ap.parse_args()
    rows = sizes(args.feeds, args.min_rows, args.max_rows)
    print(
        f"fleet: {args.feeds} feeds, {sum(rows):,} rows ({min(rows):,}-{max(rows):,}),"
        f" every {args.every} s, {args.consumers} consumers, {args.minutes:g} min",
        flush=True,
    )
    s3_url, s3_proc = s3_endpoint()
    db_url = await fresh_db("feedjobs_fleet_bench")
    env = {**os.environ, "LOG_LEVEL": "WARNING", "CONSUMER_METRICS_PORT": "0"}
    stack = Stack(env, db_url, s3_url)
    extra: list[subprocess.Popen[bytes]] = []
    db = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert db is not None
    try:
        stack.start()
        extra = more_consumers(stack, args.consumers - 1)
        fleet = Fleet(stack, s3_url, rows, args.every)
        await fleet.upload_versions()
        async with aiohttp.ClientSession() as http:
            await fleet.register(http)
            first = await fleet.first_loads(http, db)
            print(f"  first loads of every feed: {first:.0f} s", flush=True)
            await fleet.schedule(http, db)
        consumers = [psutil.Process(p.pid) for p in (stack.procs[1], *extra)]
        meters = Meters(
            {
                "gateway": [psutil.Process(stack.procs[0].pid)],
                "consumers": consumers,
                "postgres": [await postmaster(db)],
                "s3": [psutil.Process(s3_proc.pid)] if s3_proc else [],
                "rabbitmq": brokers(),
            }
        )
        size0 = await db.fetchval("SELECT pg_database_size(current_database())")
        wal0 = await db.fetchval("SELECT pg_current_wal_lsn()")
        t0 = await db.fetchval("SELECT now()")
        stop = asyncio.Event()
        merchant = asyncio.create_task(fleet.merchants(db, stop))
        await asyncio.sleep(args.minutes * 60)
        stop.set()
        await merchant
        t1 = await db.fetchval("SELECT now()")
        spent = meters.spent()
        size1 = await db.fetchval("SELECT pg_database_size(current_database())")
        wal = await db.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", wal0)
        runs = await db.fetch(
            "SELECT status, extract(epoch FROM finished_at - requested_at) AS s,"
            " (result->>'rows_read')::bigint AS rows, (result->>'updated')::bigint AS updated"
            " FROM job_runs WHERE requested_by = 'schedule' AND finished_at BETWEEN $1 AND $2",
            t0,
            t1,
        )
        waiting = await db.fetchval(
            "SELECT count(*) FROM job_runs WHERE requested_by = 'schedule' AND finished_at IS NULL"
        )
        products = await db.fetchval("SELECT count(*) FROM products")
        table = await db.fetchval("SELECT pg_total_relation_size('products')")
    finally:
        await db.close()
        for p in extra:
            p.terminate()
        stack.stop()
        if s3_proc:
            embedded_s3.stop(s3_proc)
    done = [r for r in runs if r["status"] == "completed"]
    n = max(len(done), 1)
    latency = sorted(float(r["s"]) for r in done) or [0.0]
    p95 = latency[min(len(latency) - 1, int(0.95 * len(latency)))]
    minutes = args.minutes
    result: list[Row] = [
        ("runs completed a minute", len(done) / minutes, "", "(measured)", True),
        ("runs failed", float(len(runs) - len(done)), "", "0", len(runs) == len(done)),
        ("request to completed, p50 (s)", statistics.median(latency), "", "(measured)", True),
        ("request to completed, p95 (s)", p95, "", "(measured)", True),
        ("runs waiting at the end", float(waiting), "", "(a backlog if large)", True),
        ("rows read a run (mean)", sum(r["rows"] or 0 for r in done) / n, "", "", True),
        ("rows updated a run (mean)", sum(r["updated"] or 0 for r in done) / n, "", "", True),
        *(
            (f"CPU s a run: {role}", secs / n, "", "(measured)", True)
            for role, secs in spent.items()
        ),
        ("database growth a run (kB)", (size1 - size0) / n / 1024, "", "(measured)", True),
        ("WAL a run (kB)", float(wal) / n / 1024, "", "(measured)", True),
        ("products table, bytes a product", table / max(products, 1), "", "(measured)", True),
    ]
    report(
        "fleet",
        f"feedjobs fleet benchmark, {args.feeds} feeds, {args.minutes:g} min",
        result,
        feeds=args.feeds,
        rows_total=sum(rows),
        rows_min=min(rows),
        rows_max=max(rows),
        every_seconds=args.every,
        consumers=args.consumers,
        minutes=minutes,
        first_loads_s=round(first, 1),
        products=products,
        cpu_seconds_window=spent,
    )


if __name__ == "__main__":
    asyncio.run(main())
