"""Metrics ops can trust: the consumer's own /metrics, and no gateway series left unset."""

from __future__ import annotations

import json
import socket

import aio_pika
import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from service.core.bus import Names
from tests.conftest import wait_for
from tests.integration.conftest import run_and_wait, running_consumer, upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nbad sku,B,1,USD\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_consumer_metrics_count_runs_rows_and_dead_letters(client, acme, settings, channel):
    port = _free_port()
    with_port = msgspec.structs.replace(settings, consumer_metrics_port=port)
    async with running_consumer(with_port), aiohttp.ClientSession() as http:
        ids = await upload_feed(client, acme, FEED)
        assert (await run_and_wait(client, acme, ids["validation_job_id"]))["status"] == "completed"
        jobs = await channel.get_exchange(Names(settings.amqp_prefix).jobs)
        await jobs.publish(aio_pika.Message(body=b"{oops"), routing_key="run")

        async def scraped():
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                got = _samples(await resp.text())
            return (
                got
                if got.get(("feedjobs_dead_letters_total", (("code", "INVALID_JSON"),)))
                else None
            )

        got = await wait_for(scraped, timeout=10)
        assert got[("feedjobs_runs_total", (("outcome", "completed"),))] == 1
        assert got[("feedjobs_rows_total", (("kind", "inserted"),))] == 1
        assert got[("feedjobs_rows_total", (("kind", "rejected"),))] == 1
        assert got[("feedjobs_run_duration_seconds_count", (("outcome", "completed"),))] == 1
        assert got[("feedjobs_amqp_connected", ())] == 1
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200 and json.loads(await resp.text())["status"] == "ready"


async def test_every_gateway_series_has_samples(client, acme):
    await upload_feed(client, acme, FEED)
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    empty = [name for name, f in families.items() if name.startswith("feedjobs") and not f.samples]
    assert empty == []
