"""``make bench``: the ETL benchmarks of docs/benchmarks.md, as ratios against a reference
measured in the same run, on the same data, on the same machine.

Runs the real gateway and consumer processes against the embedded S3 server (or
S3_ENDPOINT_URL) and a scratch database, and prints one table (also written as JSON under
bench/results/). ``--rows N`` changes the feed size; ``--no-memory`` skips the 4×-size
memory comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "bench" / "genfeed.py"
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from service import embedded_s3  # noqa: E402
from service.db import admin_url  # noqa: E402
from service.settings import load_settings  # noqa: E402

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_endpoint() -> tuple[str, subprocess.Popen[bytes] | None]:
    """S3_ENDPOINT_URL, else moto's server started here (stop it with embedded_s3.stop)."""
    if os.environ.get("S3_ENDPOINT_URL"):
        return os.environ["S3_ENDPOINT_URL"], None
    port = free_port()
    return f"http://127.0.0.1:{port}", embedded_s3.start(port)


def feed(rows: int, *args: str) -> Path:
    """The generated feed (cached in bench/data/, with its summary beside it)."""
    DATA.mkdir(parents=True, exist_ok=True)
    name = f"products-{rows}-{'-'.join(a.strip('-') for a in args) or 'base'}.csv"
    path = DATA / name
    if not path.exists():
        print(f"generating {name} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, str(GEN), "--rows", str(rows), "--out", str(path), *args],
            check=True,
            stderr=(DATA / f"{name}.summary").open("w"),
        )
    return path


def summary(path: Path) -> dict[str, Any]:
    """What the generator wrote into ``path`` (rows, changed, dropped, ...)."""
    last = (DATA / f"{path.name}.summary").read_text().strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return result


class Stack:
    """Scratch database, gateway and consumer processes."""

    def __init__(
        self, base_env: dict[str, str], db_url: str, s3: str, consumer: bool = True
    ) -> None:
        self.with_consumer = consumer
        self.port = free_port()
        self.env = {
            **base_env,
            "DATABASE_URL": db_url,
            "S3_ENDPOINT_URL": s3,
            "HTTP_PORT": str(self.port),
            "AMQP_PREFIX": f"bench{os.getpid()}.",
            "LOG_LEVEL": base_env.get("LOG_LEVEL", "INFO"),
            "RATE_LIMIT_PER_SECOND": "100000",
            "RATE_LIMIT_BURST": "100000",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = f"http://127.0.0.1:{self.port}"
        self.consumer_log = RESULTS / f"consumer-{os.getpid()}.log"

    def start(self) -> None:
        py = sys.executable
        subprocess.run(
            [py, "-m", "service", "create-api-key", "--tenant", "bench", "--key", KEY],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.procs.append(
            subprocess.Popen(
                [py, "-m", "service", "gateway"], env=self.env, stdout=subprocess.DEVNULL
            )
        )
        if self.with_consumer:
            with self.consumer_log.open("wb") as log:
                self.procs.append(
                    subprocess.Popen([py, "-m", "consumer"], env=self.env, stdout=log)
                )
        for _ in range(200):
            if embedded_s3.port_open("127.0.0.1", self.port):
                return
            time.sleep(0.1)
        raise RuntimeError("gateway did not start")

    def last_phases(self) -> str:
        """The phases of the consumer's last run_completed line (milliseconds since start)."""
        for line in reversed(self.consumer_log.read_text().splitlines()):
            if '"run_completed"' in line:
                event = json.loads(line)
                phases = " ".join(f"{k[:-3]}={v}" for k, v in event.get("phases_ms", {}).items())
                return f"{phases} fast_rows={event.get('fast_path_rows')}"
        return ""

    @property
    def consumer(self) -> psutil.Process:
        return psutil.Process(self.procs[1].pid)

    def stop(self) -> None:
        self.consumer_log.unlink(missing_ok=True)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def upload(
    session: aiohttp.ClientSession, stack: Stack, path: Path, feed_id: str | None = None
) -> dict[str, str]:
    headers = {"x-api-key": KEY, "Content-Type": "text/csv"}
    with path.open("rb") as f:
        if feed_id:
            resp = await session.put(f"{stack.url}/feeds/{feed_id}/file", data=f, headers=headers)
        else:
            resp = await session.post(f"{stack.url}/feeds", data=f, headers=headers)
    assert resp.status == 201, await resp.text()
    ids: dict[str, str] = await resp.json()
    return ids


async def timed_run(
    session: aiohttp.ClientSession,
    stack: Stack,
    job_id: str,
    options: dict[str, object],
    rss: list[int] | None = None,
) -> tuple[float, dict]:
    headers = {"x-api-key": KEY}
    started = time.perf_counter()
    resp = await session.post(f"{stack.url}/jobs/{job_id}/run", json=options, headers=headers)
    assert resp.status == 202, await resp.text()
    sampler = asyncio.create_task(sample_rss(stack.consumer, rss)) if rss is not None else None
    while True:
        resp = await session.get(f"{stack.url}/jobs/{job_id}?wait=30", headers=headers)
        job = await resp.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            break
    elapsed = time.perf_counter() - started
    if sampler:
        sampler.cancel()
    assert job["status"] == "completed", job
    await asyncio.sleep(0.2)  # the consumer's log line follows the commit
    print(f"  {job_id} {options or ''}: {elapsed:.2f} s, {stack.last_phases()}", flush=True)
    return elapsed, job["result"]


async def sample_rss(proc: psutil.Process, out: list[int]) -> None:
    """Peak resident memory of the consumer and its parse worker, summed."""
    while True:
        try:
            total = proc.memory_info().rss + sum(
                c.memory_info().rss for c in proc.children(recursive=True)
            )
            out.append(total)
        except psutil.Error:
            pass
        await asyncio.sleep(0.1)


def psql_copy(db_url: str, path: Path) -> float:
    ddl = (
        "DROP TABLE IF EXISTS ref_products; CREATE TABLE ref_products (sku text PRIMARY KEY,"
        " name text, description text, price numeric(12,2), currency char(3), quantity int,"
        " category text, brand text, gtin text, updated_at timestamptz, active boolean)"
    )
    subprocess.run(["psql", db_url, "-q", "-c", ddl], check=True)
    started = time.perf_counter()
    subprocess.run(
        [
            "psql",
            db_url,
            "-q",
            "-c",
            f"\\copy ref_products FROM '{path}' WITH (FORMAT csv, HEADER)",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    subprocess.run(["psql", db_url, "-q", "-c", "DROP TABLE ref_products"], check=True)
    return elapsed


async def n_tup_upd(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        value: int = await conn.fetchval(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'products'"
        )
        return value
    finally:
        await conn.close()


async def fresh_db(name: str) -> str:
    base = load_settings(os.environ)
    admin = await asyncpg.connect(admin_url(base.database_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_url(base.database_url).rsplit("/", 1)[0] + "/" + name


async def load_once(stack: Stack, path: Path) -> int:
    """Cold-load ``path`` and return the consumer's peak RSS."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        ids = await upload(session, stack, path)
        rss: list[int] = []
        await timed_run(session, stack, ids["validation_job_id"], {}, rss)
        return max(rss) if rss else 0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    base = feed(args.rows, "--seed", "1")
    changed = feed(args.rows, "--seed", "2", "--base-seed", "1", "--change-pct", "1")
    s3, s3_proc = s3_endpoint()
    db_url = await fresh_db("feedjobs_bench")
    stack = Stack({**os.environ, "LOG_LEVEL": "INFO"}, db_url, s3)  # INFO: run phases
    rows: list[tuple[str, float, str, str, bool]] = []
    try:
        ref = psql_copy(db_url, base)
        stack.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            ids = await upload(session, stack, base)
            jv = ids["validation_job_id"]
            rss_1m: list[int] = []
            cold, r = await timed_run(session, stack, jv, {}, rss_1m)
            rows.append(("cold load", cold, f"{cold / ref:.2f}x", "<= 1.5x", cold / ref <= 1.5))
            await asyncio.sleep(11)  # statistics are flushed by idle backends within ~10 s
            upd_before = await n_tup_upd(db_url)
            forced, r = await timed_run(session, stack, jv, {"force": True})
            await asyncio.sleep(11)
            upd_after = await n_tup_upd(db_url)
            ok = forced / ref <= 0.5 and upd_after == upd_before and r["updated"] == 0
            rows.append(
                (
                    "identical re-run, force",
                    forced,
                    f"{forced / ref:.2f}x",
                    "<= 0.5x, n_tup_upd +0",
                    ok,
                )
            )
            rows.append(
                (
                    "  n_tup_upd moved by",
                    float(upd_after - upd_before),
                    "",
                    "0",
                    upd_after == upd_before,
                )
            )
            await upload(session, stack, changed, ids["feed_id"])
            one_pct, r = await timed_run(session, stack, jv, {})
            rows.append(
                (
                    "re-run, 1% changed",
                    one_pct,
                    f"{one_pct / ref:.2f}x",
                    "<= 0.5x",
                    one_pct / ref <= 0.5,
                )
            )
            rows.append(
                (
                    "  rows updated",
                    float(r["updated"]),
                    "",
                    "= changed rows",
                    r["updated"] == summary(changed)["changed"],
                )
            )
            skip, r = await timed_run(session, stack, jv, {})
            rows.append(
                (
                    "identical re-run, file skip",
                    skip,
                    "",
                    "< 1 s",
                    skip < 1.0 and r["file_unchanged"],
                )
            )
        peak_1m = max(rss_1m) if rss_1m else 0
        rows.append(
            (
                "consumer peak RSS, 1x rows (MB)",
                peak_1m / 2**20,
                "",
                "< 300 MB",
                peak_1m < 300 * 2**20,
            )
        )
        if not args.no_memory:
            big = feed(args.rows * 4, "--seed", "4")
            peak_4m = await load_once(stack, big)
            ratio = peak_4m / peak_1m if peak_1m else 0
            rows.append(
                (
                    "consumer peak RSS, 4x rows (MB)",
                    peak_4m / 2**20,
                    f"{ratio:.2f}x",
                    "<= 1.2x of 1x",
                    ratio <= 1.2,
                )
            )
    finally:
        stack.stop()
        if s3_proc:
            embedded_s3.stop(s3_proc)
    report(
        "etl",
        f"feedjobs ETL benchmark, {args.rows:,} rows",
        rows,
        rows_per_feed=args.rows,
        reference_s=round(ref, 3),
        reference="psql \\copy into a keyed table",
    )


if __name__ == "__main__":
    asyncio.run(main())
