"""``AMQP_URL`` naming several broker nodes: every connection picks a live one and fails
over on loss. Here two proxies in front of the machine's broker stand for two nodes (the
real three-node cluster, whose nodes are killed, is ``make test-cluster``); cutting one
is a node that crashed."""

from __future__ import annotations

import functools
import json
import subprocess

import aio_pika
import msgspec
import pytest
import structlog

from service.core import bus
from service.core.bus import Names, connect, declare_topology
from service.core.settings import load_settings
from tests.conftest import wait_for
from tests.faultproxy import FaultProxy
from tests.integration.conftest import (
    ACME_KEY,
    gateway,
    run_and_wait,
    running_consumer,
    upload_feed,
)

ACME = {"x-api-key": ACME_KEY}
FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


async def test_every_connection_fails_over_to_a_live_node(settings, db):
    async with (
        FaultProxy.for_url(settings.amqp_url) as one,
        FaultProxy.for_url(settings.amqp_url) as two,
    ):
        nodes = f"{one.url(settings.amqp_url)}, {two.url(settings.amqp_url)}"
        via = msgspec.structs.replace(settings, amqp_url=nodes)
        await two.cut()  # everything starts on the first node
        async with gateway(via, db) as client, running_consumer(via) as consumer:
            jv = (await upload_feed(client, ACME, FEED))["validation_job_id"]
            assert (await run_and_wait(client, ACME, jv))["status"] == "completed"
            # The consumer and both relays (the gateway's, the consumer's) are on one node:
            # it dies, the other is up; then the other way round. Every run goes through.
            for down, up in ((one, two), (two, one)):
                await up.restore()
                before = up.connections
                await down.cut()
                again = await run_and_wait(client, ACME, jv, {"force": True})
                assert again["status"] == "completed", again
                # all three reconnect to the live node (one relay alone may have sent it)
                await wait_for(functools.partial(_reconnected, up, before), timeout=15)
                await wait_for(lambda: _flag(consumer.consuming), timeout=15)
            runs = await (await client.get(f"/jobs/{jv}/runs", headers=ACME)).json()
            assert [r["attempt"] for r in runs["runs"]] == [3, 2, 1]


async def _reconnected(proxy: FaultProxy, before: int) -> bool:
    return proxy.connections - before >= 3


async def _flag(event) -> bool:  # type: ignore[no-untyped-def]
    return bool(event.is_set())


async def test_a_node_that_refuses_is_tried_last_and_all_refusing_is_named(settings):
    async with FaultProxy.for_url(settings.amqp_url) as dead:
        await dead.cut()
        dead_url = dead.url(settings.amqp_url)
        urls = f"{dead_url},{settings.amqp_url}"
        bus._suspects.clear()
        with structlog.testing.capture_logs() as logs:
            for _ in range(30):  # until the shuffle has put the dead node first once
                conn = await connect(urls, "feedjobs test")
                await conn.close()
                if dead_url in bus._suspects:
                    break
        refused = [e for e in logs if e["event"] == "amqp_node_unreachable"]
        assert refused and {e["node"] for e in refused} == {f"127.0.0.1:{dead.port}"}
        assert refused[0]["log_level"] == "warning" and "guest" not in str(refused[0])
        connected = {e["node"] for e in logs if e["event"] == "amqp_node_connected"}
        assert connected == {settings.amqp_url.split("@")[1].rstrip("/")}
        assert dead_url in bus._suspects  # refused: marked ...
        bus._suspects.pop(settings.amqp_url, None)  # (another test's connection may mark it)
        assert bus._in_order(bus.broker_nodes(urls)) == [settings.amqp_url, dead_url]  # ... last
        with pytest.raises(ConnectionError) as refused:
            await connect(f"{dead_url},{dead_url.replace(str(dead.port), str(dead.port + 1))}")
        assert "no broker node answered" in str(refused.value)
        assert f"127.0.0.1:{dead.port}" in str(refused.value)
        assert "guest" not in str(refused.value)  # credentials never in a message


def _queue_arguments(name: str) -> dict[str, object]:
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "arguments", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for row in json.loads(out):
        if row["name"] == name:
            return {a[0]: a[2] for a in row["arguments"]}
    raise AssertionError(f"no queue {name}")


async def test_work_queues_dead_letter_at_least_once(settings):
    names = Names(settings.amqp_prefix)
    conn = await connect(settings.amqp_url)
    try:
        await declare_topology(await conn.channel(), names)
    finally:
        await conn.close()
    for queue in (names.run_queue, names.s3_queue):
        args = _queue_arguments(queue)
        assert args["x-queue-type"] == "quorum" and args["x-delivery-limit"] == 5
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-overflow"] == "reject-publish"


async def test_a_queue_declared_by_an_older_version_is_used_as_it_is(settings):
    """RabbitMQ refuses to change a queue's arguments in place: a deployment upgraded from a
    version without at-least-once dead-lettering keeps working, and its log says what to do."""
    names = Names(settings.amqp_prefix)
    conn = await connect(settings.amqp_url)
    try:
        ch = await conn.channel()
        await ch.declare_queue(
            names.run_queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 5,
                "x-dead-letter-exchange": names.dlx,
            },
        )
        with structlog.testing.capture_logs() as logs:
            topo = await declare_topology(ch, names)
        warned = [e for e in logs if e["event"] == "amqp_queue_arguments_outdated"]
        assert [e["queue"] for e in warned] == [names.run_queue]
        assert "dead-letter-strategy=at-least-once" in warned[0]["advice"]
        # the channel still works: publish to the old queue and read it back
        await topo["jobs"].publish(aio_pika.Message(b"{}"), routing_key="run")
        got = await wait_for(lambda: topo["run_queue"].get(fail=False), timeout=5)
        await got.ack()
    finally:
        await conn.close()


def test_amqp_url_takes_several_nodes_and_refuses_what_is_not_one():
    s = load_settings({"AMQP_URL": "amqp://a:1/, amqps://b:2/ ,"})
    assert bus.broker_nodes(s.amqp_url) == ["amqp://a:1/", "amqps://b:2/"]
    for bad in ("http://x/", "amqp://a/,localhost:5672", " , "):
        with pytest.raises(Exception, match="AMQP_URL"):
            load_settings({"AMQP_URL": bad})
