"""Feeds that follow S3: object events (shaped as MinIO and AWS send them) to runs."""

from __future__ import annotations

import json
import urllib.parse

import aio_pika
import msgspec

from service.core.bus import Names
from service.core.contracts import RunRequest
from service.core.s3 import s3_client
from service.core.store import lifecycle
from tests.conftest import wait_for
from tests.integration.conftest import allow_prefix, running_consumer

V1 = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"
V2 = b"sku,name,price,currency\nA-1,Widget,2.50,USD\nA-2,Gadget,3.00,EUR\n"


def minio_event(bucket: str, key: str, size: int, etag: str, sequencer: str) -> bytes:
    return json.dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{bucket}/{key}",
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": "minio:s3",
                    "awsRegion": "",
                    "eventTime": "2026-11-23T10:00:00.000Z",
                    "eventName": "s3:ObjectCreated:Put",
                    "userIdentity": {"principalId": "minioadmin"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "Config",
                        "bucket": {
                            "name": bucket,
                            "ownerIdentity": {"principalId": "minioadmin"},
                            "arn": f"arn:aws:s3:::{bucket}",
                        },
                        "object": {
                            "key": urllib.parse.quote(key, safe=""),
                            "size": size,
                            "eTag": etag,
                            "contentType": "text/csv",
                            "sequencer": sequencer,
                        },
                    },
                    "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO"},
                }
            ],
        }
    ).encode()


def aws_event(bucket: str, key: str, size: int, etag: str, sequencer: str) -> bytes:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-11-23T10:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {
                            "key": urllib.parse.quote_plus(key, safe="/"),
                            "size": size,
                            "eTag": etag,
                            "sequencer": sequencer,
                        },
                    },
                }
            ]
        }
    ).encode()


async def _put(settings, key: str, body: bytes) -> str:
    async with s3_client(settings) as s3:
        resp = await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    return str(resp["ETag"]).strip('"')


async def _publish(channel, settings, body: bytes) -> None:
    ex = await channel.get_exchange(Names(settings.amqp_prefix).s3_events)
    await ex.publish(aio_pika.Message(body=body), routing_key="s3.ObjectCreated")


async def _runs(client, acme, jv):
    return (await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json())["runs"]


async def test_new_versions_run_once_each_and_newest_wins(client, acme, channel, settings, db):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/drop/")
    resp = await client.post(
        "/feeds", json={"s3_uri": f"s3://{bucket}/drop/*.csv", "watch": True}, headers=acme
    )
    assert resp.status == 201, await resp.text()
    ids = await resp.json()
    jv = ids["validation_job_id"]
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["status"] == "receiving" and feed["watch"] == f"s3://{bucket}/drop/*.csv"
    quick = msgspec.structs.replace(settings, scheduler_tick_seconds=0.2)
    async with running_consumer(quick) as consumer:
        etag = await _put(settings, "drop/day 1.csv", V1)
        first = minio_event(bucket, "drop/day 1.csv", len(V1), etag, "0000000000000001")
        await _publish(channel, settings, first)

        async def completed(n):
            done = [r for r in await _runs(client, acme, jv) if r["status"] == "completed"]
            return done if len(done) >= n else None

        done = await wait_for(lambda: completed(1), timeout=20)
        assert done[0]["requested_by"] == "s3_event" and done[0]["result"]["inserted"] == 1
        await _publish(channel, settings, first)  # S3 may send an event twice
        etag2 = await _put(settings, "drop/day 1.csv", V2)
        newer = aws_event(bucket, "drop/day 1.csv", len(V2), etag2, "0000000000000003")
        older = aws_event(bucket, "drop/day 1.csv", len(V1), etag, "0000000000000002")
        await _publish(channel, settings, newer)
        await _publish(channel, settings, older)  # ... and out of order
        await wait_for(lambda: completed(2), timeout=20)
        # Unwatched keys are acknowledged; a malformed event is dead-lettered.
        await _publish(channel, settings, aws_event(bucket, "elsewhere/x.csv", 1, "e", "09"))
        await _publish(channel, settings, b'{"Records": "nope"}')
        dead = await channel.declare_queue(Names(settings.amqp_prefix).dead_queue, passive=True)
        message = await wait_for(lambda: dead.get(no_ack=True, fail=False), timeout=10)
        assert message.headers["x-error-code"] == "INVALID_EVENT"
        outcomes = {}

        async def all_taken():
            for family in consumer.metrics.s3_events.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        outcomes[sample.labels["outcome"]] = sample.value
            return sum(outcomes.values()) == 5

        await wait_for(all_taken, timeout=10)
        assert outcomes == {"loaded": 2, "stale": 2, "unwatched": 1}
        await wait_for(lambda: completed(2), timeout=20)
        history = await _runs(client, acme, jv)
    assert [r["status"] for r in history] == ["completed", "completed"]  # no third run
    assert history[0]["result"]["inserted"] == 1 and history[0]["result"]["updated"] == 1
    products = await db.fetch("SELECT sku, price::text FROM products ORDER BY sku")
    assert [(p["sku"], p["price"]) for p in products] == [("A-1", "2.50"), ("A-2", "3.00")]
    assert await dead.get(no_ack=True, fail=False) is None  # the unwatched one was not


async def test_a_version_that_arrives_mid_run_runs_after_it(client, acme, channel, settings, db):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/in/")
    key = "in/feed.csv"
    await _put(settings, key, V1)
    resp = await client.post(
        "/feeds", json={"s3_uri": f"s3://{bucket}/{key}", "watch": True}, headers=acme
    )
    ids = await resp.json()
    jv = ids["validation_job_id"]
    # A run is in hand (claimed as a consumer would) when the new version lands.
    async with db.acquire() as conn:
        _, run = await lifecycle.claim(conn, RunRequest(job_id=jv), 60)
    quick = msgspec.structs.replace(settings, scheduler_tick_seconds=0.2)
    async with running_consumer(quick):
        etag = await _put(settings, key, V2)
        await _publish(channel, settings, aws_event(bucket, key, len(V2), etag, "0A"))
        await wait_for(
            lambda: db.fetchval("SELECT run_pending FROM feeds WHERE id = $1", ids["feed_id"]),
            timeout=10,
        )
        assert await lifecycle.complete(db, run, {}, "done")

        async def rerun():
            history = await _runs(client, acme, jv)
            return history if history[0]["status"] == "completed" and len(history) == 2 else None

        history = await wait_for(rerun, timeout=20)
    assert history[0]["requested_by"] == "s3_event" and history[0]["result"]["inserted"] == 2


async def test_notify_s3_object_stands_in_for_a_server_that_sends_no_events(
    client, acme, settings, db, capsys
):
    import argparse

    from service.cli import admin

    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/drop/")
    resp = await client.post(
        "/feeds", json={"s3_uri": f"s3://{bucket}/drop/", "watch": True}, headers=acme
    )
    jv = (await resp.json())["validation_job_id"]
    await _put(settings, "drop/today.csv", V2)
    async with running_consumer(settings):
        args = argparse.Namespace(s3_uri=f"s3://{bucket}/drop/today.csv")
        assert await admin.notify_s3_object(settings, args) == 0

        async def loaded():
            history = await _runs(client, acme, jv)
            return history if history and history[0]["status"] == "completed" else None

        history = await wait_for(loaded, timeout=20)
    assert history[0]["result"]["inserted"] == 2
    missing = argparse.Namespace(s3_uri=f"s3://{bucket}/drop/none.csv")
    assert await admin.notify_s3_object(settings, missing) == 1
