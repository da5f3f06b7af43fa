"""Hostile AMQP input: every message is acked or dead-lettered with a code, whatever its
bytes, and no message can hold a consumer's slot."""

from __future__ import annotations

import json
import random

import aio_pika
import structlog

from service.core.bus import Names
from service.core.store import lifecycle
from tests.conftest import wait_for
from tests.integration.conftest import upload_feed, wait_terminal

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


async def publish(channel, settings, body: bytes, message_id: str) -> None:
    ex = await channel.get_exchange(Names(settings.amqp_prefix).jobs)
    await ex.publish(
        aio_pika.Message(body=body, content_type="application/json", message_id=message_id),
        routing_key="run",
    )


async def drain_dead(channel, settings, expected: int, timeout: float = 30.0) -> dict[str, str]:
    """message_id → x-error-code of ``expected`` dead letters."""
    dead = await channel.declare_queue(Names(settings.amqp_prefix).dead_queue, passive=True)
    got: dict[str, str] = {}

    async def collect():
        while (m := await dead.get(no_ack=True, fail=False)) is not None:
            assert m.headers["x-error-message"]
            got[m.message_id] = m.headers["x-error-code"]
        return len(got) >= expected

    await wait_for(collect, timeout=timeout)
    return got


POISON = {
    "non-utf8": (b'{"job_id": "\xff\xfe"}', "INVALID_JSON"),
    "nul-in-id": (b'{"job_id": "JV\\u000000001"}', "INVALID_MESSAGE"),
    "nul-in-request-id": (
        b'{"job_id": "JV00001", "request_id": "a\\u0000b"}',
        "INVALID_MESSAGE",
    ),
    "huge": (b'{"job_id": "' + b"J" * (2 * 1024 * 1024) + b'"}', "MESSAGE_TOO_LARGE"),
    "wrong-type": (b'{"job_id": ["JV00001"]}', "INVALID_MESSAGE"),
    "array": (b"[]", "INVALID_MESSAGE"),
    "deep": (b'{"job_id": "JV00001", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "INVALID_JSON"),
    # A top-level array this deep fails the schema first: still "nested too deeply".
    "deep-array": (b"[" * 30_000 + b"]" * 30_000, "INVALID_JSON"),
    "negative-attempt": (b'{"job_id": "JV00001", "attempt": -1}', "INVALID_MESSAGE"),
    "bad-options": (b'{"job_id": "JV00001", "options": {"mode": "all"}}', "INVALID_MESSAGE"),
}


async def test_poison_messages_never_block_the_consumers(client, acme, consumer, channel, settings):
    """More poison than consumer slots, then a valid request: it runs, and every poison
    message is dead-lettered with its code (no slot is held, nothing is redelivered)."""
    ids = await upload_feed(client, acme, FEED)
    for name, (body, _) in POISON.items():
        await publish(channel, settings, body, name)
    await publish(channel, settings, json.dumps({"feed_id": ids["feed_id"]}).encode(), "good")
    done = await wait_terminal(client, acme, ids["validation_job_id"], timeout=30)
    assert done["status"] == "completed" and done["result"]["inserted"] == 2
    got = await drain_dead(channel, settings, len(POISON))
    assert got == {name: code for name, (_, code) in POISON.items()}


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**63), 2**63)
    if kind == 3:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if kind == 4:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["job_id", "feed_id", "options", "attempt", "request_id", "mode", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


async def test_fuzzed_messages_are_all_dead_lettered_and_a_valid_one_still_runs(
    client, acme, consumer, channel, settings
):
    rng = random.Random(20261123)
    ids = await upload_feed(client, acme, FEED)
    count = 150
    for i in range(count):
        if i % 2:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        else:
            body = json.dumps(_random_json(rng)).encode()
        await publish(channel, settings, body, f"fuzz-{i}")
    await publish(channel, settings, json.dumps({"feed_id": ids["feed_id"]}).encode(), "good")
    done = await wait_terminal(client, acme, ids["validation_job_id"], timeout=60)
    assert done["status"] == "completed"
    got = await drain_dead(channel, settings, count, timeout=60)
    assert set(got) == {f"fuzz-{i}" for i in range(count)}
    assert set(got.values()) <= {"INVALID_JSON", "INVALID_MESSAGE", "UNKNOWN_JOB", "UNKNOWN_FEED"}


async def test_an_unexpected_error_dead_letters_the_message(
    client, acme, consumer, channel, settings, monkeypatch
):
    """A bug met while handling one message (injected here) dead-letters that message with
    INTERNAL_ERROR; the next message is handled as usual."""
    real_claim = lifecycle.claim

    async def claim(conn, req, lease_seconds):
        if req.request_id == "boom":
            raise RuntimeError("injected bug")
        return await real_claim(conn, req, lease_seconds)

    monkeypatch.setattr(lifecycle, "claim", claim)
    ids = await upload_feed(client, acme, FEED)
    request = {"feed_id": ids["feed_id"], "request_id": "boom"}
    await publish(channel, settings, json.dumps(request).encode(), "bug")
    got = await drain_dead(channel, settings, 1)
    assert got == {"bug": "INTERNAL_ERROR"}
    await publish(channel, settings, json.dumps({"feed_id": ids["feed_id"]}).encode(), "good")
    done = await wait_terminal(client, acme, ids["validation_job_id"], timeout=30)
    assert done["status"] == "completed"


async def test_message_lines_name_the_message_and_its_job(
    client, acme, consumer, channel, settings
):
    """An upstream request without request_id is known by its message id, like an HTTP
    request by x-request-id; a dead letter's line names the job it was about."""
    ids = await upload_feed(client, acme, FEED)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await publish(channel, settings, json.dumps({"job_id": "JV99999"}).encode(), "gone-1")
        await drain_dead(channel, settings, 1)
        await publish(channel, settings, json.dumps({"feed_id": ids["feed_id"]}).encode(), "up-7")
        await wait_terminal(client, acme, ids["validation_job_id"], timeout=30)
    dead = [e for e in logs if e["event"] == "message_dead_lettered"]
    assert dead and dead[0]["message_id"] == "gone-1" and dead[0]["job_id"] == "JV99999"
    assert dead[0]["code"] == "UNKNOWN_JOB"
    started = [e for e in logs if e["event"] == "run_started"]
    assert started and started[0]["request_id"] == "up-7" and started[0]["message_id"] == "up-7"
    runs_ = await (await client.get(f"/jobs/{ids['validation_job_id']}/runs", headers=acme)).json()
    assert runs_["runs"][0]["requested_by"] == "amqp"
