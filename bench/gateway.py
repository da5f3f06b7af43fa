"""``make bench`` (gateway part): what polling clients feel, as ratios against a bare aiohttp
app answering a body of the same size, measured in the same run (docs/benchmarks.md).

- GET /jobs/{id}, and GET with a matching If-None-Match (304): 64 connections for 10 s
  (``wrk`` when installed, else a Python load generator in its own process), throughput and
  p99 latency against the bare app.
- 1,000 clients long-polling ``?wait=30`` on an active job: the gateway's CPU while nothing
  changes, then the time until every one of them has its answer after the job changes.

Only loopback addresses are used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Row, report  # noqa: E402
from bench.run import KEY, Stack, free_port, fresh_db, s3_endpoint  # noqa: E402
from service.cli import embedded_s3  # noqa: E402

CONNECTIONS = 64


def wrk(url: str, seconds: int, headers: dict[str, str]) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) from wrk."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 30)
    if "Non-2xx or 3xx responses" in out.stdout:  # fast errors are no answers
        raise RuntimeError(f"{url}: {out.stdout}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out.stdout).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99


async def _python_load(url: str, seconds: int, headers: dict[str, str]) -> tuple[float, float]:
    latencies: list[float] = []
    unexpected: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status not in (200, 304):
                        unexpected[resp.status] = unexpected.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    if unexpected:  # a fast error is no answer: the figure would be meaningless
        raise RuntimeError(f"{url} answered {unexpected}")
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99)] * 1000


def load(url: str, seconds: int, headers: dict[str, str]) -> tuple[float, float]:
    if shutil.which("wrk"):
        return wrk(url, seconds, headers)
    # In a child process, so that the load generator and the server each have a core.
    code = (
        "import asyncio, json, sys; from bench.gateway import _python_load;"
        "print(json.dumps(asyncio.run(_python_load(sys.argv[1], int(sys.argv[2]),"
        " json.loads(sys.argv[3])))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url, str(seconds), json.dumps(headers)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=seconds + 60,
    )
    rps, p99 = json.loads(out.stdout)
    return float(rps), float(p99)


def start_bare(body: bytes) -> tuple[subprocess.Popen[bytes], int]:
    """The reference app, answering ``body``, on a free loopback port."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_app.py"), str(port), f.name]
    )
    for _ in range(100):
        if embedded_s3.port_open("127.0.0.1", port):
            break
        time.sleep(0.1)
    return proc, port


async def long_polls(stack: Stack, job_id: str, clients: int) -> tuple[float, float, int]:
    """(gateway CPU % over 5 idle seconds, seconds until all answered, answers) for
    ``clients`` long polls on an active job that then changes."""
    gateway = psutil.Process(stack.procs[0].pid)
    headers = {"x-api-key": KEY}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        first = await session.get(f"{stack.url}/jobs/{job_id}", headers=headers)
        etag = first.headers["ETag"]
        answered: list[float] = []

        async def poll() -> None:
            async with session.get(
                f"{stack.url}/jobs/{job_id}?wait=30", headers={**headers, "If-None-Match": etag}
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    answered.append(time.perf_counter())

        polls = [asyncio.create_task(poll()) for _ in range(clients)]
        await asyncio.sleep(3)  # all connected and waiting
        cpu_before = gateway.cpu_times()
        idle_started = time.perf_counter()
        await asyncio.sleep(5)
        cpu_after = gateway.cpu_times()
        idle = time.perf_counter() - idle_started
        busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        changed = time.perf_counter()
        resp = await session.post(f"{stack.url}/jobs/{job_id}/cancel", headers=headers)
        assert resp.status == 202, await resp.text()
        await asyncio.wait_for(asyncio.gather(*polls), 40)
    last = max(answered) - changed if answered else float("inf")
    return 100.0 * busy / idle, last, len(answered)


async def start_polled(
    log_level: str, db: str, s3: str
) -> tuple[Stack, dict[str, str], bytes, str]:
    """A gateway (no consumer) at ``log_level``, a feed, and the body and ETag of the
    finished job polled (what most polls read)."""
    db_url = await fresh_db(db)
    stack = Stack({**os.environ, "LOG_LEVEL": log_level}, db_url, s3, consumer=False)
    stack.start()
    headers = {"x-api-key": KEY}
    async with aiohttp.ClientSession() as session:
        feed = b"sku,name,price,currency\nA-1,Cap,1.00,USD\n"
        resp = await session.post(
            f"{stack.url}/feeds", data=feed, headers={**headers, "Content-Type": "text/csv"}
        )
        ids = await resp.json()
        resp = await session.get(f"{stack.url}/jobs/{ids['submission_job_id']}", headers=headers)
        body, etag = await resp.read(), resp.headers["ETag"]
        # No consumer runs here: a run request leaves the job queued (active) for long polls.
        await session.post(f"{stack.url}/jobs/{ids['validation_job_id']}/run", headers=headers)
    return stack, ids, body, etag


def ratio_rows(label: str, rps: float, nm_rps: float, bare_rps: float, gate: bool) -> list[Row]:
    get_ok = rps / bare_rps >= 0.6
    nm_ok = nm_rps / bare_rps >= 0.7
    return [
        (
            f"GET /jobs/{{id}}{label} (req/s)",
            rps,
            f"{rps / bare_rps:.2f}x",
            ">= 0.6x" if gate else "(for comparison)",
            get_ok or not gate,
        ),
        (
            f"GET, If-None-Match (304){label} (req/s)",
            nm_rps,
            f"{nm_rps / bare_rps:.2f}x",
            ">= 0.7x" if gate else "(for comparison)",
            nm_ok or not gate,
        ),
    ]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--long-polls", type=int, default=1000)
    args = ap.parse_args()
    s3, s3_proc = s3_endpoint()
    bare = None
    stacks: list[Stack] = []
    rows: list[Row] = []
    headers = {"x-api-key": KEY}
    try:
        # INFO: one access line per request, as deployed.
        stack, ids, body, etag = await start_polled("INFO", "feedjobs_bench_gateway", s3)
        stacks.append(stack)
        bare, bare_port = start_bare(body)
        bare_url = f"http://127.0.0.1:{bare_port}/jobs/{ids['submission_job_id']}"
        job_url = f"{stack.url}/jobs/{ids['submission_job_id']}"
        print(f"load generator: {'wrk' if shutil.which('wrk') else 'python'}", flush=True)
        bare_rps, bare_p99 = load(bare_url, args.seconds, headers)
        get_rps, get_p99 = load(job_url, args.seconds, headers)
        nm_rps, _ = load(job_url, args.seconds, {**headers, "If-None-Match": etag})
        rows.append(("bare aiohttp app (req/s)", bare_rps, "", "reference", True))
        rows += ratio_rows("", get_rps, nm_rps, bare_rps, gate=True)
        rows.append(
            (
                "p99 latency, 64 conns (ms)",
                get_p99,
                f"{get_p99 / bare_p99:.2f}x",
                "<= 3x bare",
                get_p99 / bare_p99 <= 3,
            )
        )
        cpu, last, answered = await long_polls(stack, ids["validation_job_id"], args.long_polls)
        rows += [
            (f"{args.long_polls} long polls: gateway CPU idle (%)", cpu, "", "< 10%", cpu < 10),
            (
                f"{args.long_polls} long polls: all answered after (s)",
                last,
                "",
                f"< 1 s, {args.long_polls} answers",
                last < 1.0 and answered == args.long_polls,
            ),
        ]
        # The same polls without the access line (LOG_LEVEL=WARNING): what the line costs.
        quiet, qids, _, qetag = await start_polled("WARNING", "feedjobs_bench_gateway_quiet", s3)
        stacks.append(quiet)
        quiet_url = f"{quiet.url}/jobs/{qids['submission_job_id']}"
        q_rps, _ = load(quiet_url, args.seconds, headers)
        q_nm_rps, _ = load(quiet_url, args.seconds, {**headers, "If-None-Match": qetag})
        rows += ratio_rows(", no access line", q_rps, q_nm_rps, bare_rps, gate=False)
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        for stack in stacks:
            stack.stop()
        if s3_proc:
            embedded_s3.stop(s3_proc)
    report(
        "gateway",
        "feedjobs gateway benchmark",
        rows,
        body_bytes=len(body),
        connections=CONNECTIONS,
        load_generator="wrk" if shutil.which("wrk") else "python",
        log_level="INFO (access line per request), then WARNING (none)",
    )


if __name__ == "__main__":
    asyncio.run(main())
