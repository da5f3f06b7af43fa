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
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
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

from bench.report import Row, report  # noqa: E402
from service.cli import embedded_s3  # noqa: E402
from service.core.bus import delete_topology  # noqa: E402
from service.core.db import admin_url  # noqa: E402
from service.core.product import PRODUCT  # noqa: E402
from service.core.settings import load_settings  # noqa: E402

KEY = "bench-key"
_STACKS = itertools.count(1)  # each stack its own AMQP prefix, deleted when it stops


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
            "AMQP_PREFIX": f"bench{os.getpid()}x{next(_STACKS)}.",
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
                load = event.get("load") or {}
                return f"{phases} path={load.get('path')} worker={load.get('worker_ms')}"
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
        # The stack's queues and exchanges go too (a thread: callers may be in a loop).
        url, prefix = load_settings(self.env).amqp_url, self.env["AMQP_PREFIX"]
        cleanup = threading.Thread(target=asyncio.run, args=(delete_topology(url, prefix),))
        cleanup.start()
        cleanup.join(30)


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


PEAKS: dict[str, int] = {}  # peak RSS per process role, for the breakdown printed


async def sample_rss(proc: psutil.Process, out: list[int]) -> None:
    """Peak resident memory of the consumer and its children (the run's parse worker and
    the spare one waiting for the next run), summed."""
    while True:
        try:
            parts = {"consumer": proc.memory_info().rss}
            for i, child in enumerate(proc.children(recursive=True)):
                parts[f"child{i}"] = child.memory_info().rss
            out.append(sum(parts.values()))
            for role, rss in parts.items():
                PEAKS[role] = max(PEAKS.get(role, 0), rss)
        except psutil.Error:
            pass
        await asyncio.sleep(0.05)


def psql_copy(db_url: str, path: Path, extra: int = 0) -> float:
    # The product's columns as declared (service/core/product.py), keyed by sku; a wide
    # feed's own columns as text columns of their own.
    ddl = "DROP TABLE IF EXISTS ref_products; " + PRODUCT.table_ddl("ref_products")
    if extra:
        ddl += "; ALTER TABLE ref_products " + ", ".join(
            f"ADD COLUMN attr_{k + 1:02d} text" for k in range(extra)
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


def last_load(stack: Stack) -> dict[str, Any]:
    """The ``load`` field of the consumer's last run_completed line (path, known rows...)."""
    for line in reversed(stack.consumer_log.read_text().splitlines()):
        if '"run_completed"' in line:
            load: dict[str, Any] = json.loads(line).get("load") or {}
            return load
    return {}


def case(name: str, seconds: float, ref: float, target: float, ok: bool = True) -> Row:
    ratio = seconds / ref
    return (name, seconds, f"{ratio:.2f}x", f"<= {target}x", ok and ratio <= target)


def fact(name: str, value: float, target: str, ok: bool) -> Row:
    return (name, value, "", target, ok)


async def new_feed(session: aiohttp.ClientSession, stack: Stack, path: Path) -> tuple[str, str]:
    ids = await upload(session, stack, path)
    return ids["feed_id"], ids["validation_job_id"]


async def etl_cases(
    stack: Stack, db_url: str, rows: int, ref: float, files: dict[str, Path]
) -> tuple[list[Row], list[int]]:
    out: list[Row] = []
    rss: list[int] = []
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Feed A: a cold load, an identical forced re-run, 1% changed, then an unchanged file.
        feed_a, jv = await new_feed(session, stack, files["base"])
        colds = [(await timed_run(session, stack, jv, {}, rss))[0]]
        path = last_load(stack).get("path")
        await asyncio.sleep(11)  # statistics are flushed by idle backends within ~10 s
        upd_before = await n_tup_upd(db_url)
        forced, r = await timed_run(session, stack, jv, {"force": True}, rss)
        await asyncio.sleep(11)
        moved = await n_tup_upd(db_url) - upd_before
        out.append(
            case("identical re-run, force", forced, ref, 0.5, moved == 0 and not r["updated"])
        )
        out.append(fact("  n_tup_upd moved by", moved, "0", moved == 0))
        await upload(session, stack, files["changed"], feed_a)
        one_pct, r = await timed_run(session, stack, jv, {}, rss)
        expected = summary(files["changed"])["changed"]
        out.append(case("re-run, 1% changed", one_pct, ref, 0.5))
        out.append(
            fact(
                "  rows updated", r["updated"], f"= {expected:,} changed", r["updated"] == expected
            )
        )
        skip, r = await timed_run(session, stack, jv, {}, rss)
        out.append(
            fact(
                "identical re-run, file skip (s)", skip, "< 1 s", skip < 1.0 and r["file_unchanged"]
            )
        )
        # Feed B: a cold load, then a snapshot with 1% of the skus gone.
        feed_b, jv = await new_feed(session, stack, files["base"])
        colds.append((await timed_run(session, stack, jv, {}, rss))[0])
        await upload(session, stack, files["gone"], feed_b)
        gone_s, r = await timed_run(session, stack, jv, {"mode": "snapshot"}, rss)
        dropped = summary(files["gone"])["dropped"]
        out.append(case("snapshot re-run, 1% of skus gone", gone_s, ref, 0.6))
        out.append(
            fact("  rows deleted", r["deleted"], f"= {dropped:,} gone", r["deleted"] == dropped)
        )
        # Feed C: a cold load, then half of the rows changed.
        feed_c, jv = await new_feed(session, stack, files["base"])
        colds.append((await timed_run(session, stack, jv, {}, rss))[0])
        await upload(session, stack, files["churn"], feed_c)
        churn, r = await timed_run(session, stack, jv, {}, rss)
        expected = summary(files["churn"])["changed"]
        out.append(case("re-run, 50% changed", churn, ref, 2.0, r["updated"] == expected))
        out.append(
            fact(
                "  rows updated", r["updated"], f"= {expected:,} changed", r["updated"] == expected
            )
        )
    cold = sorted(colds)[1]
    out.insert(0, case(f"cold load ({path}; median of 3)", cold, ref, 1.5))
    return out, rss


WIDE = 19  # 11 product columns + 19 of the merchant's own = 30


async def wide_cases(stack: Stack, db_url: str, rows: int) -> list[Row]:
    r"""A 30-column feed (19 kept as attributes): a cold load and a forced identical re-run,
    against its own \copy into a 30-column keyed table (median of 3)."""
    path = feed(rows, "--seed", "6", "--wide", str(WIDE))
    refs = sorted(psql_copy(db_url, path, WIDE) for _ in range(3))
    ref = refs[1]
    print(f"reference \\copy, wide: {', '.join(f'{r:.2f}' for r in refs)} s (median {ref:.2f})")
    rss: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        _, jv = await new_feed(session, stack, path)
        cold, r = await timed_run(session, stack, jv, {}, rss)
        ok = r["inserted"] == rows and r["attributes"] == [f"attr_{k + 1:02d}" for k in range(WIDE)]
        forced, again = await timed_run(session, stack, jv, {"force": True}, rss)
    return [
        case(f"wide feed (30 columns), cold load (ref {ref:.2f} s)", cold, ref, 1.6, ok),
        case("wide feed, identical re-run, force", forced, ref, 0.35, again["unchanged"] == rows),
    ]


async def changes_cases(
    base_env: dict[str, str], db_url: str, s3: str, files: dict[str, Path]
) -> list[Row]:
    """What recording each run's changes (RECORD_CHANGES) costs a load: a cold load, a 1%-
    and a 50%-changed re-run with it on, against the same with it off, on stacks taking
    turns (median of 3 each)."""
    times: dict[tuple[str, str], list[float]] = {}
    counted: dict[str, bool] = {}
    for turn in range(3):
        for record in ("false", "true") if turn % 2 == 0 else ("true", "false"):
            stack = Stack({**base_env, "RECORD_CHANGES": record}, db_url, s3)
            stack.start()
            try:
                timeout = aiohttp.ClientTimeout(total=None)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    feed_id, jv = await new_feed(session, stack, files["base"])
                    cold, _ = await timed_run(session, stack, jv, {})
                    await upload(session, stack, files["changed"], feed_id)
                    one_pct, r = await timed_run(session, stack, jv, {})
                    await upload(session, stack, files["churn"], feed_id)
                    churn, _ = await timed_run(session, stack, jv, {})
                    counted[record] = bool(r.get("changes_url")) == (record == "true")
            finally:
                stack.stop()
            for name, took in (("cold", cold), ("1%", one_pct), ("50%", churn)):
                times.setdefault((name, record), []).append(took)

    def median(name: str, record: str) -> float:
        return sorted(times[(name, record)])[1]

    ok = all(counted.values())
    return [
        case(
            f"change recording, cold load (off {median('cold', 'false'):.2f} s)",
            median("cold", "true"),
            median("cold", "false"),
            1.10,
            ok,
        ),
        case(
            f"change recording, 1% changed (off {median('1%', 'false'):.2f} s)",
            median("1%", "true"),
            median("1%", "false"),
            1.05,
            ok,
        ),
        fact(  # no target: what heavy churn pays, reported
            f"change recording, 50% changed (off {median('50%', 'false'):.2f} s), ratio",
            round(median("50%", "true") / median("50%", "false"), 2),
            "(reported)",
            ok,
        ),
    ]


async def memory_cases(stack: Stack, rows: int, peak_1x: int) -> list[Row]:
    """Peak RSS of consumer + worker at 4x rows: a cold load, then a forced re-run (the
    worker then holds every stored product's hashes)."""
    big = feed(rows * 4, "--seed", "4")
    rss_cold: list[int] = []
    rss_rerun: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        _, jv = await new_feed(session, stack, big)
        await timed_run(session, stack, jv, {}, rss_cold)
        await timed_run(session, stack, jv, {"force": True}, rss_rerun)
    print("  peak RSS by process (MB):", {k: round(v / 2**20) for k, v in PEAKS.items()})
    load = last_load(stack)
    per_product = load.get("known_bytes", 0) / max(load.get("known_rows", 0), 1)
    mb = 2**20
    return [
        fact("peak RSS, 1x rows (MB)", peak_1x / mb, "< 300 MB", peak_1x < 300 * mb),
        fact(
            "peak RSS, 4x rows, cold (MB)", max(rss_cold) / mb, "< 300 MB", max(rss_cold) < 300 * mb
        ),
        fact(
            "peak RSS, 4x rows, re-run (MB)",
            max(rss_rerun) / mb,
            "< 300 MB",
            max(rss_rerun) < 300 * mb,
        ),
        fact("  bytes per stored product", per_product, "<= 24", 0 < per_product <= 24),
    ]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only the 4x-rows RSS cases")
    ap.add_argument("--wide-only", action="store_true", help="only the 30-column feed's cases")
    ap.add_argument("--no-wide", action="store_true", help="without the 30-column feed's cases")
    ap.add_argument("--changes-only", action="store_true", help="only what change recording costs")
    ap.add_argument("--no-changes", action="store_true", help="without the change recording cases")
    args = ap.parse_args()
    n = args.rows
    files = {
        "base": feed(n, "--seed", "1"),
        "changed": feed(n, "--seed", "2", "--base-seed", "1", "--change-pct", "1"),
        "gone": feed(n, "--seed", "3", "--base-seed", "1", "--drop-pct", "1"),
        "churn": feed(n, "--seed", "5", "--base-seed", "1", "--change-pct", "50"),
    }
    s3, s3_proc = s3_endpoint()
    db_url = await fresh_db("feedjobs_bench")
    stack = Stack({**os.environ, "LOG_LEVEL": "INFO"}, db_url, s3)  # INFO: run phases
    stopped = False
    try:
        only = args.memory_only or args.wide_only or args.changes_only
        refs = sorted(psql_copy(db_url, files["base"]) for _ in range(1 if only else 3))
        ref = refs[len(refs) // 2]
        print(f"reference \\copy: {', '.join(f'{r:.2f}' for r in refs)} s (median {ref:.2f})")
        stack.start()
        rows, rss = [], [0]
        if not only:
            rows, rss = await etl_cases(stack, db_url, n, ref, files)
        if (not only and not args.no_wide) or args.wide_only:
            rows += await wide_cases(stack, db_url, n)
        if (not only and not args.no_memory) or args.memory_only:
            rows += await memory_cases(stack, n, max(rss))
        if (not only and not args.no_changes) or args.changes_only:
            # Alone: the outbox is in the database, so any running stack's relay could
            # publish the runs to its own consumer.
            stack.stop()
            stopped = True
            rows += await changes_cases(stack.env, db_url, s3, files)
    finally:
        if not stopped:
            stack.stop()
        if s3_proc:
            embedded_s3.stop(s3_proc)
    report(
        "etl",
        f"feedjobs ETL benchmark, {n:,} rows",
        rows,
        rows_per_feed=n,
        reference_s=round(ref, 3),
        reference="psql \\copy into a keyed table (median of 3)",
    )


if __name__ == "__main__":
    asyncio.run(main())
