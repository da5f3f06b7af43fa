"""A three-node RabbitMQ cluster that this test starts and owns; the node that leads
``jobs.run`` is killed (SIGKILL) once while runs load and once while run requests are being
posted. A gateway and a consumer, each its own process with ``AMQP_URL`` naming the three
nodes, go on: every run completes exactly once, no status event is lost, both processes
are alive, and the time from each kill until a run requested then has completed is printed.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from service.core.bus import Names, connect
from service.core.settings import Settings
from service.core.store import keys as keys_store
from tests.cluster.rabbit import RabbitCluster, rabbit_cluster
from tests.cluster.tools import free_port
from tests.conftest import wait_for
from tests.integration.conftest import ACME_KEY, consumer_process
from tests.integration.feeds import generate

ACME = {"x-api-key": ACME_KEY}
HOST = socket.gethostname()  # in the connection names (bus.connect)
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    started = time.monotonic()
    with rabbit_cluster(3) as c:
        print(f"\ncluster: 3 nodes up and joined in {time.monotonic() - started:.1f} s")
        yield c


@pytest.fixture
def on_cluster(settings: Settings, cluster: RabbitCluster) -> Settings:
    return msgspec.structs.replace(settings, amqp_url=cluster.urls)


class Stack:
    """A gateway and a consumer, each its own process; their logs in ``logs/``."""

    def __init__(self, settings: Settings, port: int, logs: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        logs.mkdir()
        self.logs = {name: open(logs / f"{name}.log", "wb") for name in ("gateway", "consumer")}
        self.procs = {
            "gateway": consumer_process(
                settings,
                module="service",
                HTTP_PORT=str(port),
                LOG_LEVEL="INFO",
                log_file=self.logs["gateway"],
            ),
            "consumer": consumer_process(
                settings, LOG_LEVEL="INFO", log_file=self.logs["consumer"]
            ),
        }
        self.http = aiohttp.ClientSession(headers=ACME)

    def alive(self) -> dict[str, int | None]:
        return {name: p.poll() for name, p in self.procs.items()}

    async def json(self, method: str, path: str, **kw: object) -> tuple[int, dict]:  # type: ignore[type-arg]
        async with self.http.request(method, self.base + path, **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.json()

    async def ready(self) -> bool:
        try:
            status, _ = await self.json("GET", "/readyz")
        except (aiohttp.ClientError, json.JSONDecodeError):
            return False
        return status == 200

    async def close(self) -> None:
        await self.http.close()
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except Exception:
                p.kill()
        for f in self.logs.values():
            f.close()


@pytest.fixture
async def stack(on_cluster: Settings, db, tmp_path: Path) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    async with db.acquire() as conn:
        await keys_store.add_key(conn, "acme", ACME_KEY)
    s = Stack(on_cluster, free_port(), tmp_path / "logs")
    try:
        await wait_for(s.ready, timeout=60, interval=0.2)
        yield s
    finally:
        await s.close()


async def subscribe_events(settings: Settings) -> str:
    """A quorum queue bound to every status event, as a downstream service would have."""
    name = f"{settings.amqp_prefix}test.events"
    conn = await connect(settings.amqp_url)
    try:
        ch = await conn.channel()
        queue = await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(Names(settings.amqp_prefix).events, routing_key="#")
    finally:
        await conn.close()
    return name


async def drain_events(settings: Settings, queue_name: str) -> dict[str, set[str]]:
    """Every event in the queue: job id -> statuses told."""
    told: dict[str, set[str]] = {}
    conn = await connect(settings.amqp_url)
    try:
        ch = await conn.channel()
        queue = await ch.get_queue(queue_name)
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            body = json.loads(message.body)
            if "status" in body:
                told.setdefault(body["job_id"], set()).add(body["status"])
    finally:
        await conn.close()
    return told


async def upload(stack: Stack, data: bytes) -> str:
    status, ids = await stack.json(
        "POST", "/feeds", data=data, headers={"Content-Type": "text/csv"}
    )
    assert status == 201, ids
    return str(ids["validation_job_id"])


async def terminal(stack: Stack, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    async def done() -> dict | None:  # type: ignore[type-arg]
        try:
            _, job = await stack.json("GET", f"/jobs/{job_id}?wait=5")
        except aiohttp.ClientError:
            return None
        return job if job["status"] in TERMINAL else None

    return await wait_for(done, timeout=timeout, interval=0.1)  # type: ignore[no-any-return]


SMALL = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


async def start_runs(stack: Stack, feed: bytes, n: int) -> list[str]:
    """``n`` feeds of ``feed`` whose runs are loading now."""
    jobs = [await upload(stack, feed) for _ in range(n)]
    for job_id in jobs:
        assert (await stack.json("POST", f"/jobs/{job_id}/run"))[0] == 202

    async def running() -> bool:
        states = [(await stack.json("GET", f"/jobs/{j}"))[1]["status"] for j in jobs]
        return all(s == "running" for s in states)

    await wait_for(running, timeout=60, interval=0.05)
    return jobs


async def probe(stack: Stack, since: float) -> float:
    """Seconds from ``since`` until a run requested now has completed."""
    job_id = await upload(stack, SMALL)
    assert (await stack.json("POST", f"/jobs/{job_id}/run"))[0] == 202
    assert (await terminal(stack, job_id))["status"] == "completed"
    return time.monotonic() - since


async def test_losing_broker_nodes(stack, on_cluster, cluster, tmp_path, db):
    events = await subscribe_events(on_cluster)
    run_queue = Names(on_cluster.amqp_prefix).run_queue
    big, _ = generate(tmp_path, 300_000)
    requested: list[str] = []
    recovery: dict[str, float] = {}

    # 1. The node leading the run queue dies while two long runs load.
    requested += await start_runs(stack, big, 2)
    node = cluster.leader_of(run_queue)
    killed_at = time.monotonic()
    node.kill()
    recovery["leader, during runs"] = await probe(stack, killed_at)
    cluster.restart(node)  # it rejoins: three nodes again

    # 2. The leader dies while run requests are being posted (the outbox holds them).
    posted = [await upload(stack, SMALL) for _ in range(12)]
    for i, job_id in enumerate(posted):
        if i == 6:
            node = cluster.leader_of(run_queue)
            killed_at = time.monotonic()
            node.kill()
        assert (await stack.json("POST", f"/jobs/{job_id}/run"))[0] == 202
    await terminal(stack, posted[6])
    recovery["leader, during POST /run"] = time.monotonic() - killed_at
    requested += posted
    cluster.restart(node)

    # 3. The node the consumer is connected to dies while a run loads: it reconnects to
    # another, and the run it holds goes on.
    requested += await start_runs(stack, big, 1)
    consumer_pid = stack.procs["consumer"].pid
    [node] = cluster.nodes_of(f"feedjobs consumer {HOST}:{consumer_pid}")
    killed_at = time.monotonic()
    node.kill()
    recovery["consumer's node, during a run"] = await probe(stack, killed_at)
    moved = cluster.nodes_of(f"feedjobs consumer {HOST}:{consumer_pid}")
    assert moved and node not in moved
    cluster.restart(node)

    # 4. The node the gateway publishes through dies: its relay reconnects to another.
    gateway_pid = stack.procs["gateway"].pid
    [node] = cluster.nodes_of(f"feedjobs outbox-relay {HOST}:{gateway_pid}")
    killed_at = time.monotonic()
    node.kill()
    recovery["gateway's node"] = await probe(stack, killed_at)

    finished = [await terminal(stack, j) for j in requested]
    assert stack.alive() == {"gateway": None, "consumer": None}
    for job in finished:
        assert job["status"] == "completed", job
    # exactly once: one run each, however many times a request was published
    for job_id in requested:
        status, runs = await stack.json("GET", f"/jobs/{job_id}/runs")
        assert status == 200 and len(runs["runs"]) == 1, runs
    # and exact: each feed holds what its run says it inserted, the whole file
    async with db.acquire() as conn:
        live = dict(
            await conn.fetch(
                "SELECT f.id, count(p.sku) FROM feeds f LEFT JOIN products p"
                " ON p.feed_id = f.id AND p.deleted_at IS NULL GROUP BY f.id"
            )
        )
    for job in finished:
        result = job["result"]
        assert live[job["feed_id"]] == result["inserted"] == result["rows_read"], job
    assert sorted(j["result"]["rows_read"] for j in finished)[-3:] == [300_000] * 3

    # no status event lost: each job's queued, running and completed reached the subscriber
    seen: dict[str, set[str]] = {}

    async def all_told() -> bool:
        for job_id, statuses in (await drain_events(on_cluster, events)).items():
            seen.setdefault(job_id, set()).update(statuses)
        return all({"queued", "running", "completed"} <= seen.get(j, set()) for j in requested)

    await wait_for(all_told, timeout=60, interval=0.5)
    assert stack.alive() == {"gateway": None, "consumer": None}
    print(
        "\nbroker node killed -> a run requested at the kill completed: "
        + ", ".join(f"{what} {secs:.1f} s" for what, secs in recovery.items())
    )
