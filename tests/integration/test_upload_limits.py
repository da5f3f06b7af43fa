"""An upload's limits, each with its error body (service/gateway/uploads.py): an empty body,
no Content-Type, a declared length over MAX_UPLOAD_BYTES (refused before a byte is read), a
gzip body that inflates past its caps, a client under the minimum rate, the deadline."""

from __future__ import annotations

import asyncio
import re
import zlib

import msgspec
import pytest

from tests.integration.conftest import gateway, upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"


async def _feeds(client, headers) -> int:
    return len((await (await client.get("/feeds", headers=headers)).json())["feeds"])


async def test_an_empty_upload_is_a_400_naming_the_body_and_creates_nothing(client, acme):
    resp = await client.post("/feeds", data=b"", headers={**acme, "Content-Type": "text/csv"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error_code"] == "INVALID_REQUEST" and body["details"] == {"field": "body"}
    assert await _feeds(client, acme) == 0
    ids = await upload_feed(client, acme, FEED)
    put = await client.put(
        f"/feeds/{ids['feed_id']}/file", data=b"", headers={**acme, "Content-Type": "text/csv"}
    )
    assert put.status == 400 and (await put.json())["details"] == {"field": "body"}
    # The feed keeps its file, and no new submission was made.
    jobs = await (await client.get("/jobs?job_type=submission", headers=acme)).json()
    assert len(jobs["jobs"]) == 1


async def test_an_upload_without_content_type_is_a_415(client, acme):
    head = (
        f"POST /feeds HTTP/1.1\r\nHost: test\r\nx-api-key: {acme['x-api-key']}\r\n"
        f"Content-Length: {len(FEED)}\r\n\r\n"
    ).encode()
    reader, writer = await _raw(client, head + FEED)  # aiohttp's client always adds a type
    try:
        status, body = await _answer(reader)
    finally:
        writer.close()
    assert status == 415, body
    assert body["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert body["message"].startswith("No Content-Type")
    assert await _feeds(client, acme) == 0


async def _raw(client, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return int(head.split()[1]), msgspec.json.decode(body)


def _head(key: str, length: int | None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST /feeds?name=limits HTTP/1.1\r\nHost: test\r\nContent-Type: text/csv\r\n"
        f"x-api-key: {key}\r\n{size}{extra}\r\n"
    ).encode()


async def test_a_declared_length_over_the_limit_is_refused_before_reading(client, acme):
    reader, writer = await _raw(client, _head(acme["x-api-key"], 10**18))
    try:
        status, body = await _answer(reader)  # no body byte was ever sent
    finally:
        writer.close()
    assert status == 413 and body["error_code"] == "PAYLOAD_TOO_LARGE"
    assert body["details"]["declared"] == 10**18
    assert await _feeds(client, acme) == 0


async def test_a_gzip_body_is_capped_by_its_inflate_ratio(client, acme, settings):
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    bomb = packer.compress(FEED + b"\0" * (40 * 1024 * 1024)) + packer.flush()
    assert len(bomb) * settings.max_inflate_ratio < 40 * 1024 * 1024
    resp = await client.post(
        "/feeds",
        data=bomb,
        headers={**acme, "Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert resp.status == 413, await resp.text()
    body = await resp.json()
    assert body["error_code"] == "PAYLOAD_TOO_LARGE"
    assert body["details"]["limit"] == "MAX_INFLATE_RATIO"
    assert body["details"]["limit_bytes"] == len(bomb) * settings.max_inflate_ratio
    # The submission failed with the same code; nothing runnable was left.
    js = (await (await client.get("/jobs?job_type=submission", headers=acme)).json())["jobs"]
    assert js[0]["status"] == "failed" and js[0]["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # A modest gzip body still goes through, inflated.
    ok = await client.post(
        "/feeds",
        data=_gzip(FEED),
        headers={**acme, "Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert ok.status == 201, await ok.text()


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


async def _trickle(settings, db, acme, *, every: float, size: int, **limits) -> tuple[int, dict]:
    quick = msgspec.structs.replace(settings, **limits)
    async with gateway(quick, db) as client:
        reader, writer = await _raw(client, _head(acme["x-api-key"], 10_000_000))
        try:

            async def send() -> None:
                while True:
                    writer.write(b"x" * size)
                    await writer.drain()
                    await asyncio.sleep(every)

            sender = asyncio.create_task(send())
            try:
                return await _answer(reader)
            finally:
                sender.cancel()
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("every", "size", "limits", "which"),
    [
        # 5 bytes every 0.1 s: 25 bytes a 0.5 s window, under 1000 B/s
        (0.1, 5, {}, "UPLOAD_MIN_BYTES_PER_SECOND"),
        # fast enough, but longer than the whole deadline allows
        (0.05, 4096, {"upload_deadline_seconds": 1.5}, "UPLOAD_DEADLINE_SECONDS"),
    ],
    ids=["under the minimum rate", "past the deadline"],
)
async def test_a_slow_upload_is_cut_off(settings, db, acme, every, size, limits, which):
    status, body = await _trickle(
        settings,
        db,
        acme,
        every=every,
        size=size,
        upload_read_timeout_seconds=0.5,
        upload_min_bytes_per_second=1000,
        **limits,
    )
    assert status == 408 and body["error_code"] == "REQUEST_TIMEOUT"
    assert body["details"]["limit"] == which, body
