"""Operator commands of ``python -m service``: look at jobs and keys, revoke keys, list and
replay dead letters. Each prints JSON lines (one object per job, key or message), so the
output reads at a terminal and pipes into ``jq``."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aio_pika
import asyncpg
import msgspec

from service.core.bus import Names, connect, copy_message, declare_topology
from service.core.s3 import head, parse_s3_uri, s3_client
from service.core.settings import Settings
from service.core.store import admin as admin_store

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def _print(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


async def _with_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


async def jobs(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        statuses = args.status.split(",") if args.status else None
        for row in await admin_store.jobs(conn, args.tenant, statuses, args.limit):
            _print(row)
        return 0

    return await _with_db(settings, work)


async def job(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        found = await admin_store.job(conn, args.job_id)
        if found is None:
            print(f"no job {args.job_id}", file=sys.stderr)
            return 1
        _print(found)
        return 0

    return await _with_db(settings, work)


async def keys(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for row in await admin_store.keys(conn, args.tenant):
            _print(row)
        return 0

    return await _with_db(settings, work)


async def revoke_key(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        if not await admin_store.revoke_key(conn, args.key_id):
            print(f"no live key with id {args.key_id}", file=sys.stderr)
            return 1
        # Gateways cache a good key for up to 30 s (service/gateway/auth.py).
        _print({"revoked": args.key_id, "effective_within_s": 30})
        return 0

    return await _with_db(settings, work)


async def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """List (``replay=False``) or re-publish dead letters, oldest first."""
    names = Names(settings.amqp_prefix)
    conn = await connect(settings.amqp_url, "feedjobs admin")
    try:
        channel = await conn.channel(publisher_confirms=True)
        topo = await declare_topology(channel, names)
        seen: list[aio_pika.abc.AbstractIncomingMessage] = []
        while len(seen) < args.limit:
            message = await topo["dead"].get(no_ack=False, fail=False)
            if message is None:
                break
            headers = dict(message.headers or {})
            code = str(headers.get("x-error-code", ""))
            if args.code and code != args.code:
                seen.append(message)
                continue
            entry = {
                "message_id": message.message_id,
                "code": code,
                "reason": headers.get("x-error-message"),
                "body": message.body[:2000].decode(errors="replace"),
            }
            if args.replay:
                clean = {k: v for k, v in headers.items() if not str(k).startswith("x-")}
                await topo["jobs"].publish(copy_message(message, clean), routing_key="run")
                await message.ack()  # replayed: it leaves the dead-letter queue
                entry["replayed"] = True
            else:
                seen.append(message)
            _print(entry)
        for message in seen:  # only looked at: back to the queue, in order
            await message.nack(requeue=True)
        return 0
    finally:
        await conn.close()


async def notify_s3_object(settings: Settings, args: argparse.Namespace) -> int:
    """Publish the object event S3 would send for an object that exists (the embedded S3
    server of make run sends none), so that feeds watching it load it."""
    uri = parse_s3_uri(args.s3_uri)
    async with s3_client(settings) as s3:
        info = await head(s3, uri)
    if info is None:
        print(f"no object {uri}", file=sys.stderr)
        return 1
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": uri.bucket},
            "object": {
                "key": urllib.parse.quote(uri.key, safe=""),
                "size": info.size,
                "eTag": info.etag,
                "sequencer": f"{time.time_ns():020X}",
            },
        },
    }
    conn = await connect(settings.amqp_url, "feedjobs admin")
    try:
        channel = await conn.channel(publisher_confirms=True)
        topo = await declare_topology(channel, Names(settings.amqp_prefix))
        body = msgspec.json.encode({"EventName": "s3:ObjectCreated:Put", "Records": [record]})
        await topo["s3_events"].publish(
            aio_pika.Message(body=body, content_type="application/json"), routing_key="s3"
        )
    finally:
        await conn.close()
    _print({"published": str(uri), "etag": info.etag})
    return 0


def add_commands(sub: Any) -> dict[str, Command]:
    """Register the operator sub-commands on an argparse sub-parser group."""
    p = sub.add_parser("jobs", help="list jobs of every tenant, newest first (JSON lines)")
    p.add_argument("--tenant")
    p.add_argument("--status", help="comma-separated statuses")
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("job", help="one job with its runs and first rejections")
    p.add_argument("job_id")
    p = sub.add_parser("keys", help="list API keys (ids, tenants, dates; never the keys)")
    p.add_argument("--tenant")
    p = sub.add_parser("revoke-key", help="revoke an API key by its id (see keys)")
    p.add_argument("key_id", type=int)
    for verb, text in (
        ("dead-letters", "list dead-lettered messages, oldest first, leaving them queued"),
        ("replay-dead-letters", "re-publish dead-lettered messages as run requests"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("--code", help="only messages with this x-error-code")
        p.set_defaults(replay=verb == "replay-dead-letters")
    p = sub.add_parser(
        "notify-s3-object", help="publish the S3 object event for an object (for watching feeds)"
    )
    p.add_argument("s3_uri")
    return {
        "notify-s3-object": notify_s3_object,
        "jobs": jobs,
        "job": job,
        "keys": keys,
        "revoke-key": revoke_key,
        "dead-letters": dead_letters,
        "replay-dead-letters": dead_letters,
    }
