"""The operator's commands (service/cli/admin.py) against the real database and broker."""

from __future__ import annotations

import argparse
import json

import aio_pika

from service.cli import admin
from service.core.bus import Names
from tests.conftest import wait_for
from tests.integration.conftest import upload_feed, wait_terminal

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def _printed(capsys) -> list[dict]:
    """The command's JSON lines (the tests' own log lines go to stdout too)."""
    out = capsys.readouterr().out.splitlines()
    return [json.loads(x) for x in out if x.startswith("{")]


async def test_list_and_replay_dead_letters(client, acme, consumer, channel, settings, capsys):
    """A request for a feed that did not exist yet is dead-lettered; once the feed exists,
    an operator replays it and the run happens."""
    jobs = await channel.get_exchange(Names(settings.amqp_prefix).jobs)
    body = json.dumps({"feed_id": "FD00001"}).encode()
    await jobs.publish(aio_pika.Message(body=body, message_id="early"), routing_key="run")
    dead = await channel.declare_queue(Names(settings.amqp_prefix).dead_queue, passive=True)

    async def dead_lettered():
        d = await channel.declare_queue(dead.name, passive=True)
        return d.declaration_result.message_count == 1

    await wait_for(dead_lettered, timeout=15)
    capsys.readouterr()
    listing = _args(limit=10, code=None, replay=False)
    assert await admin.dead_letters(settings, listing) == 0
    lines = _printed(capsys)
    assert [(x["message_id"], x["code"]) for x in lines] == [("early", "UNKNOWN_FEED")]
    # Listing leaves it queued (the broker counts a requeued message back in a moment later).
    await wait_for(dead_lettered, timeout=5)
    ids = await upload_feed(client, acme, FEED)
    assert ids["feed_id"] == "FD00001"
    replay = _args(limit=10, code="UNKNOWN_FEED", replay=True)
    assert await admin.dead_letters(settings, replay) == 0
    assert _printed(capsys)[0]["replayed"] is True
    done = await wait_terminal(client, acme, ids["validation_job_id"], timeout=30)
    assert done["status"] == "completed" and done["result"]["inserted"] == 1


async def test_keys_jobs_and_revocation(client, acme, settings, db, capsys):
    from service.core.store import keys as keys_store

    async with db.acquire() as conn:
        await keys_store.add_key(conn, "initech", "initech-key")
    await upload_feed(client, acme, FEED)
    capsys.readouterr()
    assert await admin.keys(settings, _args(tenant="initech")) == 0
    (key,) = _printed(capsys)
    assert key["tenant"] == "initech" and key["revoked_at"] is None and "key_hash" not in key
    assert await admin.revoke_key(settings, _args(key_id=key["key_id"])) == 0
    assert await admin.revoke_key(settings, _args(key_id=key["key_id"])) == 1  # already
    resp = await client.get("/jobs", headers={"x-api-key": "initech-key"})
    assert resp.status == 401
    capsys.readouterr()
    assert await admin.jobs(settings, _args(tenant="acme", status="created", limit=10)) == 0
    listed = _printed(capsys)
    assert [j["job_id"] for j in listed] == ["JV00001"]
    assert await admin.job(settings, _args(job_id="JV00001")) == 0
    (shown,) = _printed(capsys)
    assert shown["tenant"] == "acme" and shown["runs"] == [] and shown["status"] == "created"
    assert await admin.job(settings, _args(job_id="JV99999")) == 1
