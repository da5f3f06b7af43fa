"""Clients that ask for a large CSV report and then stop reading hold no pooled connection:
every other tenant's requests keep answering, /readyz stays 200; a tenant has at most
MAX_STREAMS_PER_TENANT downloads at once, and a client that takes nothing for
STREAM_SEND_TIMEOUT_SECONDS is dropped. Before, each such client held a server-side cursor
in an open transaction: four of them took the whole pool of four."""

from __future__ import annotations

import asyncio

import msgspec

from tests.integration.conftest import gateway, run_and_wait, running_consumer, upload_feed

ROWS = 12_000  # x ~1 KiB of raw each: far more than the socket buffers hold


async def _stalled_reader(client, key: str, jv: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"GET /jobs/{jv}/errors HTTP/1.1\r\nHost: t\r\nAccept: text/csv\r\n"
        f"x-api-key: {key}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    return writer  # and never read again


async def test_slow_readers_hold_no_connection(settings, db, acme, globex):
    small = msgspec.structs.replace(
        settings, db_pool_max=4, max_streams_per_tenant=4, stream_send_timeout_seconds=6.0
    )
    async with gateway(small, db) as client, running_consumer(small):
        long_name = "n" * 1000
        body = "sku,name,price,currency\n" + "".join(
            f"S{i},{long_name},bad,USD\n" for i in range(ROWS)
        )
        jv = (await upload_feed(client, acme, body.encode()))["validation_job_id"]
        assert (await run_and_wait(client, acme, jv, wait=60))["result"]["rows_rejected"] == ROWS
        writers = [await _stalled_reader(client, acme["x-api-key"], jv) for _ in range(4)]
        try:
            await asyncio.sleep(0.5)
            # A fifth download of the same tenant waits its turn: 429, with Retry-After.
            fifth = await client.get(f"/jobs/{jv}/errors", headers={**acme, "Accept": "text/csv"})
            assert fifth.status == 429 and fifth.headers["Retry-After"] == "5"
            assert (await fifth.json())["details"] == {"max_streams_per_tenant": 4}
            # Everyone else is served at once: the pool is free.
            for path in ("/feeds", "/jobs", "/readyz"):
                resp = await asyncio.wait_for(client.get(path, headers=globex), 5)
                assert resp.status == 200, (path, resp.status)
            await asyncio.sleep(7)  # past the send timeout: the stalled clients were dropped
            again = await client.get(f"/jobs/{jv}/errors", headers={**acme, "Accept": "text/csv"})
            assert again.status == 200
            assert len((await again.read()).splitlines()) == ROWS + 1
        finally:
            for w in writers:
                w.close()
