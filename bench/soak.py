"""``make soak``: two gateways and two consumers under random dependency cuts and kills for
N minutes, then the invariants (not part of ``make test``; ``SOAK_MINUTES``, default 5).

The processes reach PostgreSQL, RabbitMQ and S3 through TCP proxies this script owns: it
cuts them (open connections dropped, new ones refused), freezes them (bytes stop, the
connections stay open: a dependency that hangs) and restores them, and it SIGKILLs and
restarts gateways and consumers. Clients meanwhile upload new versions of snapshot feeds,
ask for runs (some forced), poll and cancel, through either gateway. At the end, with every
dependency back, it checks:

- every run is final (nothing queued or running);
- each feed's live products are exactly the rows of the file its last completed run read
  (snapshot feeds: a replay of a completed run is its file);
- no HTTP answer was a 5xx other than 503 (what an outage is answered with);
- no process died that the soak did not kill;
- each process's memory and open files stayed flat (the end against the first minute).

It prints the figures and exits 1 if an invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # noqa: E402

from bench import genfeed  # noqa: E402
from bench.run import KEY, fresh_db, s3_endpoint  # noqa: E402
from service.cli import embedded_s3  # noqa: E402
from service.core.bus import delete_topology  # noqa: E402
from service.core.settings import load_settings  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

HEADERS = {"x-api-key": KEY}
FEEDS = 6
ROWS = 20_000
TERMINAL = {"completed", "failed", "cancelled"}


class Proc:
    """One gateway or consumer process, restarted after the soak kills it."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind, self.env = kind, env
        self.popen: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.died = 0  # exits the soak did not cause
        self.samples: list[tuple[float, int, int]] = []  # (time, rss, fds)

    def start(self) -> None:
        module = ["-m", "service", "gateway"] if self.kind == "gateway" else ["-m", "consumer"]
        self.popen = subprocess.Popen(
            [sys.executable, *module], env=self.env, stdout=subprocess.DEVNULL
        )

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self.kills += 1
        self.samples.clear()  # a new process: its own baseline
        self.start()

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            self.died += 1
            self.samples.clear()
            self.start()

    def sample(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            p = psutil.Process(self.popen.pid)
            self.samples.append((time.monotonic(), p.memory_info().rss, p.num_fds()))
        except psutil.Error:
            pass


class Soak:
    def __init__(self, minutes: float, seed: int) -> None:
        self.minutes = minutes
        self.rng = random.Random(seed)
        self.statuses: Counter[int] = Counter()
        self.events: Counter[str] = Counter()
        self.files: dict[str, bytes] = {}  # S3 etag -> the bytes uploaded
        self.feeds: list[dict[str, str]] = []
        self.versions: dict[str, int] = {}
        # webhook-id -> (type, job_id, status, attempt) of what the receiver verified
        self.received: dict[str, tuple[str, str, str, int]] = {}
        self.received_twice = 0
        self.unverified = 0
        self.secret = ""

    async def hook(self, request: web.Request) -> web.Response:
        """The soak's webhook receiver: verifies, records, and fails one answer in ten."""
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.unverified += 1
            return web.Response(status=400)
        if self.rng.random() < 0.1:
            return web.Response(status=500)
        msg_id = request.headers["webhook-id"]
        data = payload["data"]
        if msg_id in self.received:
            self.received_twice += 1  # at least once: a resend after a lost answer
        self.received[msg_id] = (payload["type"], data["job_id"], data["status"], data["attempt"])
        return web.Response(status=204)

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """Through a random live gateway; connection errors (a killed gateway) count 0."""
        url = self.rng.choice(self.gateway_urls) + path
        headers = {**HEADERS, **kw.pop("headers", {})}
        try:
            async with self.http.request(method, url, headers=headers, **kw) as resp:
                self.statuses[resp.status] += 1
                body = await resp.read()
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError):
            self.statuses[0] += 1
            return 0, b""

    def version(self, feed_no: int, n: int) -> bytes:
        buf = io.StringIO()
        genfeed.write_feed(
            buf,
            ROWS,
            seed=1000 * feed_no + n,
            base_seed=1000 * feed_no,
            change_pct=5.0 if n else 0.0,
            drop_pct=3.0 if n else 0.0,
        )
        return buf.getvalue().encode()

    async def remember(self, submission_id: str, data: bytes) -> None:
        """The S3 etag of an upload, so a completed run's file can be replayed."""
        row = await self.db.fetchrow(
            "SELECT result->>'s3_uri' AS uri FROM jobs WHERE id = $1", submission_id
        )
        if row is None or row["uri"] is None:
            return
        bucket, key = row["uri"][5:].split("/", 1)
        head = await asyncio.to_thread(self.s3.head_object, Bucket=bucket, Key=key)
        self.files[head["ETag"].strip('"')] = data

    async def client(self) -> None:
        """Uploads, runs, polls and cancels until the soak ends."""
        while time.monotonic() < self.deadline:
            feed_no = self.rng.randrange(FEEDS)
            ids = self.feeds[feed_no]
            action = self.rng.random()
            if action < 0.25:
                n = self.versions[ids["feed_id"]] = self.versions[ids["feed_id"]] + 1
                data = self.version(feed_no, n)
                status, body = await self.request(
                    "PUT",
                    f"/feeds/{ids['feed_id']}/file",
                    data=data,
                    headers={**HEADERS, "Content-Type": "text/csv"},
                )
                if status == 201:
                    await self.remember(json.loads(body)["submission_job_id"], data)
                    self.events["uploads"] += 1
            elif action < 0.75:
                options = {"force": self.rng.random() < 0.3}
                status, _ = await self.request(
                    "POST", f"/jobs/{ids['validation_job_id']}/run", json=options
                )
                self.events[f"run {status}"] += 1
            elif action < 0.85:
                status, _ = await self.request("POST", f"/jobs/{ids['validation_job_id']}/cancel")
                self.events[f"cancel {status}"] += 1
            else:
                await self.request("GET", f"/jobs/{ids['validation_job_id']}?wait=2")
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))

    async def chaos(self) -> None:
        """A fault every 8-20 s: a cut or a freeze of a dependency, or a process killed."""
        faults = ["cut pg", "cut mq", "cut s3", "freeze s3", "freeze pg", "kill"]
        while time.monotonic() < self.deadline - 20:
            await asyncio.sleep(self.rng.uniform(8, 20))
            fault = self.rng.choice(faults)
            self.events[fault] += 1
            if fault == "kill":
                proc = self.rng.choice(self.procs)
                proc.kill()
                self.events[f"killed {proc.kind}"] += 1
                continue
            proxy = self.proxies[fault.split()[1]]
            down = self.rng.uniform(2, 6)
            if fault.startswith("cut"):
                await proxy.cut()
                await asyncio.sleep(down)
                await proxy.restore()
            else:
                proxy.freeze()
                await asyncio.sleep(down)
                proxy.thaw()

    async def watch(self) -> None:
        while time.monotonic() < self.deadline:
            for proc in self.procs:
                proc.check()
                proc.sample()
            await asyncio.sleep(2)

    async def settle(self) -> None:
        """Every dependency back: wait for every job to end (a stuck run is a failure)."""
        for proxy in self.proxies.values():
            proxy.thaw()
            await proxy.restore()
        limit = time.monotonic() + 240
        while time.monotonic() < limit:
            active = await self.db.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            )
            if not active:
                return
            await asyncio.sleep(1)

    async def invariants(self) -> list[tuple[str, str, bool]]:
        out: list[tuple[str, str, bool]] = []
        stuck = await self.db.fetch(
            "SELECT id, status, message FROM jobs WHERE status IN ('queued', 'running')"
        )
        out.append(("every run final", f"{len(stuck)} not final", not stuck))
        wrong = 0
        for ids in self.feeds:
            run = await self.db.fetchrow(
                "SELECT file_etag FROM job_runs WHERE job_id = $1 AND status = 'completed'"
                " AND NOT coalesce((options->>'dry_run')::boolean, false)"
                " ORDER BY attempt DESC LIMIT 1",
                ids["validation_job_id"],
            )
            if run is None:
                continue
            data = self.files.get(run["file_etag"])
            if data is None:
                wrong += 1
                continue
            expected = {(r["sku"], r["name"]) for r in csv.DictReader(io.StringIO(data.decode()))}
            stored = {
                (r["sku"], r["name"])
                for r in await self.db.fetch(
                    "SELECT sku, name FROM products WHERE feed_id = $1 AND deleted_at IS NULL",
                    ids["feed_id"],
                )
            }
            wrong += expected != stored
        out.append(
            ("products = replay of each feed's last run", f"{wrong} feeds differ", not wrong)
        )
        bad = {s: n for s, n in self.statuses.items() if s >= 500 and s != 503}
        out.append(("no 5xx but 503", f"{sum(bad.values())} ({bad})", not bad))
        died = {p.kind + str(i): p.died for i, p in enumerate(self.procs) if p.died}
        out.append(("no process died on its own", str(died or 0), not died))
        for i, p in enumerate(self.procs):
            if len(p.samples) < 4:
                continue
            early = p.samples[min(len(p.samples) - 1, max(1, len(p.samples) // 5))]
            last = p.samples[-1]
            rss_growth = last[1] / early[1]
            fd_growth = last[2] - early[2]
            flat = rss_growth < 1.5 and fd_growth < 20
            what = f"RSS x{rss_growth:.2f} ({last[1] >> 20} MB), fds {fd_growth:+d}"
            out.append((f"{p.kind} {i}: memory and fds flat", what, flat))
        out += await self.webhook_invariants()
        return out

    async def webhook_invariants(self) -> list[tuple[str, str, bool]]:
        limit = time.monotonic() + 120
        while time.monotonic() < limit and await self.db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
        ):
            await asyncio.sleep(1)
        rows = await self.db.fetch("SELECT id, status FROM webhook_deliveries")
        undelivered = [r["id"] for r in rows if r["status"] != "delivered"]
        lost = [r["id"] for r in rows if r["id"] not in self.received]
        # Each job's last end (every earlier one is a delivery row, checked above).
        finals = await self.db.fetch(
            "SELECT id, attempt, status FROM jobs WHERE status IN ('completed', 'failed',"
            " 'cancelled') AND finished_at > $1",
            self.hooked_at,
        )
        told = {(job, status, attempt) for _, job, status, attempt in self.received.values()}
        untold = [f for f in finals if (f["id"], f["status"], f["attempt"]) not in told]
        return [
            (
                "every webhook delivery delivered, verified",
                f"{len(rows)} deliveries, {len(undelivered)} not delivered,"
                f" {len(lost)} not received, {self.unverified} unverified",
                not undelivered and not lost and not self.unverified,
            ),
            (
                "every job's end told by a webhook",
                f"{len(finals)} jobs, {len(untold)} untold, {self.received_twice} resent",
                not untold,
            ),
        ]

    async def run(self) -> int:
        base = load_settings(os.environ)
        s3_url, s3_proc = s3_endpoint()
        self.proxies = {
            "pg": FaultProxy.for_url(base.database_url),
            "mq": FaultProxy.for_url(base.amqp_url),
            "s3": FaultProxy.for_url(s3_url),
        }
        for proxy in self.proxies.values():
            await proxy.start()
        db_url = await fresh_db("feedjobs_soak")
        prefix = f"soak{os.getpid()}."
        env = {
            **os.environ,
            "DATABASE_URL": self.proxies["pg"].url(db_url),
            "AMQP_URL": self.proxies["mq"].url(base.amqp_url),
            "S3_ENDPOINT_URL": self.proxies["s3"].url(s3_url),
            "AMQP_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_PER_SECOND": "100000",
            "RATE_LIMIT_BURST": "100000",
            "CONSUMER_METRICS_PORT": "0",
            "RUN_STALL_SECONDS": "20",
            "LEASE_SECONDS": "15",
            "SWEEP_INTERVAL_SECONDS": "5",
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "WEBHOOK_RETRY_SCHEDULE": "0.5,1,2,4,8,8,8,8",
            "WEBHOOK_TIMEOUT_SECONDS": "5",
        }
        direct = {**env, "DATABASE_URL": db_url, "S3_ENDPOINT_URL": s3_url}
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "service", "create-api-key", "--tenant", "soak", "--key", KEY],
            env=direct,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ports = [_free_port(), _free_port()]
        self.gateway_urls = [f"http://127.0.0.1:{p}" for p in ports]
        self.procs = [Proc("gateway", {**env, "HTTP_PORT": str(p)}) for p in ports] + [
            Proc("consumer", env),
            Proc("consumer", env),
        ]
        self.db = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
        receiver = web.Application()
        receiver.router.add_post("/hook", self.hook)
        hook_runner = web.AppRunner(receiver, access_log=None)
        await hook_runner.setup()
        hook_port = _free_port()
        await web.TCPSite(hook_runner, "127.0.0.1", hook_port).start()
        self.s3 = embedded_s3.client(s3_url)
        try:
            for proc in self.procs:
                proc.start()
            for port in ports:
                while not embedded_s3.port_open("127.0.0.1", port):
                    await asyncio.sleep(0.2)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as self.http:
                for n in range(FEEDS):
                    data = self.version(n, 0)
                    status, body = 0, b""
                    while status != 201:
                        status, body = await self.request(
                            "POST",
                            f"/feeds?name=soak{n}&mode=snapshot",
                            data=data,
                            headers={**HEADERS, "Content-Type": "text/csv"},
                        )
                    ids = json.loads(body)
                    self.feeds.append(ids)
                    self.versions[ids["feed_id"]] = 0
                    await self.remember(ids["submission_job_id"], data)
                status = 0
                while status != 201:
                    status, body = await self.request(
                        "POST",
                        "/webhooks",
                        json={
                            "url": f"http://127.0.0.1:{hook_port}/hook",
                            "events": ["job.completed", "job.failed", "job.cancelled"],
                        },
                    )
                self.secret = json.loads(body)["secret"]
                self.hooked_at = await self.db.fetchval("SELECT now()")
                started = time.monotonic()
                self.deadline = started + self.minutes * 60
                await asyncio.gather(self.client(), self.client(), self.chaos(), self.watch())
                await self.settle()
                settled_s = time.monotonic() - self.deadline
            checks = await self.invariants()
        finally:
            for proc in self.procs:
                if proc.popen is not None and proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in self.procs:
                if proc.popen is not None:
                    try:
                        await asyncio.to_thread(proc.popen.wait, 40)
                    except subprocess.TimeoutExpired:
                        proc.popen.kill()
            await self.db.close()
            await hook_runner.cleanup()
            for proxy in self.proxies.values():
                await proxy.close()
            if s3_proc is not None:
                embedded_s3.stop(s3_proc)
            await delete_topology(base.amqp_url, prefix)
        runs = await _runs(db_url)
        print(f"\nfeedjobs soak: {self.minutes:g} min, 2 gateways, 2 consumers, {FEEDS} feeds")
        print(f"faults: {dict(sorted(self.events.items()))}")
        print(f"HTTP answers by status: {dict(sorted(self.statuses.items()))}")
        print(f"runs by outcome: {runs}; settled {settled_s:.1f} s after the last fault window")
        print(f"{'invariant':48} {'measured':40} ok")
        for name, measured, ok in checks:
            print(f"{name:48} {measured:40} {'yes' if ok else 'NO'}")
        return 0 if all(ok for _, _, ok in checks) else 1


async def _runs(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM job_runs GROUP BY status")
        return {r["status"]: r["n"] for r in rows}
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 5)))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(Soak(args.minutes, args.seed).run()))


if __name__ == "__main__":
    main()
