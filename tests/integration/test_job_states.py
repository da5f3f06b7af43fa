"""The job state table of docs/operations.md is exactly what the code does: every path is
driven here, PostgreSQL records each status change, and the two sets must be equal."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from consumer import s3watch, sweeper
from service.core import s3_events
from service.core.contracts import RunRequest
from service.core.s3 import s3_client
from service.core.store import lifecycle
from tests.conftest import wait_for
from tests.integration.conftest import (
    allow_prefix,
    run_and_wait,
    running_consumer,
    upload_feed,
    wait_terminal,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
GOOD = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"
NO_PRICE = b"sku,name\nA-1,Widget\n"


def documented() -> set[tuple[str, str, str]]:
    section = DOC.read_text().split("## Job states", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (submission|validation) \| ([^|]+) \| ([^|]+) \|", section, re.M)
    return {(kind, old.strip(), new.strip()) for kind, old, new in rows}


async def test_the_state_table_is_what_the_code_does(client, acme, settings, db, tmp_path):
    await db.execute(
        "CREATE TABLE seen_transitions (job_type text, old text, new text);"
        " CREATE FUNCTION record_transition() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO seen_transitions VALUES (NEW.job_type,"
        "   CASE WHEN TG_OP = 'INSERT' THEN '(new)' ELSE OLD.status END, NEW.status);"
        "   RETURN NULL; END $$;"
        " CREATE TRIGGER record_transition AFTER INSERT OR UPDATE OF status ON jobs"
        "   FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION record_transition()"
    )
    ok = await upload_feed(client, acme, GOOD)
    jv = ok["validation_job_id"]
    # created → queued → cancelled → queued, with no consumer about.
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202
    assert (await client.post(f"/jobs/{jv}/cancel", headers=acme)).status == 202
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202
    async with running_consumer(settings):
        assert (await wait_terminal(client, acme, jv))["status"] == "completed"
        bad = await upload_feed(client, acme, NO_PRICE)
        failed = await run_and_wait(client, acme, bad["validation_job_id"])
        assert failed["status"] == "failed"
        again = await run_and_wait(client, acme, bad["validation_job_id"])  # failed → queued
        assert again["status"] == "failed"
    # cancelled → queued; running → cancelled / queued / failed, driven as a consumer would.
    async with db.acquire() as conn:
        _, run = await lifecycle.claim(conn, RunRequest(job_id=jv), 0)
        assert await lifecycle.cancelled(conn, run)
        _, run = await lifecycle.claim(conn, RunRequest(job_id=jv), 0)
    assert await lifecycle.release(db, run, "shutdown", max_interruptions=10) == "requeued"
    async with db.acquire() as conn:
        _, run = await lifecycle.claim(conn, RunRequest(job_id=jv, attempt=run.attempt + 1), 0)
    await sweeper.sweep(db, max_attempts=1, requeue_after=60, queue_is_empty=False)
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", jv) == "failed"
    # Submissions: a broken upload, a registration, a watched prefix and its first object.
    reader, writer = await _broken_upload(client, acme)
    writer.transport.abort()
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key="in/a.csv", Body=GOOD)
    await allow_prefix(db, "acme", f"s3://{settings.s3_bucket}/in/")
    reg = await client.post(
        "/feeds", json={"s3_uri": f"s3://{settings.s3_bucket}/in/a.csv"}, headers=acme
    )
    assert reg.status == 201
    watch = await client.post(
        "/feeds", json={"s3_uri": f"s3://{settings.s3_bucket}/in/", "watch": True}, headers=acme
    )
    assert watch.status == 201
    event = s3_events.S3Event(
        Records=[
            s3_events.S3Record(
                eventName="ObjectCreated:Put",
                s3=s3_events.S3Entity(
                    bucket=s3_events.S3Bucket(name=settings.s3_bucket),
                    object=s3_events.S3Object(key="in/a.csv", size=len(GOOD), sequencer="01"),
                ),
            )
        ]
    )
    await s3watch.take(db, event)

    async def settled():
        return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0

    await wait_for(settled, timeout=10)
    seen = {
        (r["job_type"], r["old"], r["new"])
        for r in await db.fetch("SELECT * FROM seen_transitions")
    }
    table = documented()
    assert table, "no table found in docs/operations.md"
    assert seen - table == set(), "the code makes changes the table does not list"
    assert table - seen == set(), "the table lists changes this test did not see"


async def _broken_upload(client, acme):
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        (
            "POST /feeds HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
            f"x-api-key: {acme['x-api-key']}\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        + GOOD
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    return reader, writer
