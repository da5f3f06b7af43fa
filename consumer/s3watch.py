"""S3 object events in, runs of watching feeds out.

Each new object version under a feed's ``watch`` becomes a submission job (the feed's file
from then on) and a run of its validation job (``requested_by: s3_event``). A multi-part
feed (its ``s3_uri`` a pattern of part files) runs once per complete set instead: on its
folder's ``_SUCCESS`` or ``_manifest…`` object, never on a part. An event that
is not newer than the newest taken for its (feed, key) is a duplicate or came out of order:
it is acknowledged and ignored. If the job is busy, the version is recorded and the run
happens once the job is idle (the scheduler looks for ``run_pending`` feeds).
"""

from __future__ import annotations

import asyncpg

from service.core import s3, s3_events
from service.core.contracts import RunOptions, SubmissionResult, encode
from service.core.logs import get_logger
from service.core.store import feeds as feeds_store
from service.core.store import jobs as jobs_store
from service.core.store import lifecycle
from service.core.store import watch as watch_store

log = get_logger(__name__)


async def take(pool: asyncpg.Pool, event: s3_events.S3Event) -> dict[str, int]:
    """Act on one event document; counts by outcome (loaded, pending, stale, unwatched)."""
    counts = {"loaded": 0, "pending": 0, "stale": 0, "unwatched": 0, "part": 0}
    for obj in s3_events.created(event):
        async with pool.acquire() as conn:
            feeds = [
                f
                for f in await watch_store.watching(conn, obj.bucket)
                if s3_events.matches(f.watch, obj.bucket, obj.key)
            ]
            if not feeds:
                counts["unwatched"] += 1
                log.info("s3_event_unwatched", bucket=obj.bucket, key=obj.key)
                continue
            for feed in feeds:
                async with conn.transaction():
                    outcome = await _new_version(conn, feed.id, obj)
                counts[outcome] += 1
    return counts


async def _new_version(conn: asyncpg.Connection, feed_id: str, obj: s3_events.Created) -> str:
    feed = await feeds_store.lock_feed_row(conn, feed_id)
    assert feed is not None
    parts = feed.s3_uri is not None and s3_events.is_pattern(feed.s3_uri)
    if parts and not s3.completes_a_set(obj.key):
        log.info("s3_event_part", feed_id=feed_id, key=obj.key)  # its set is not complete
        return "part"
    seen = await watch_store.newest_seen(conn, feed_id, obj.key)
    if not s3_events.newer(obj.sequencer, seen):
        log.info("s3_event_stale", feed_id=feed_id, key=obj.key, sequencer=obj.sequencer)
        return "stale"
    await watch_store.record(conn, feed_id, obj.key, obj.sequencer, obj.etag, obj.size)
    # the new version: the object, or all the parts its marker says are complete
    uri = feed.s3_uri if parts else f"s3://{obj.bucket}/{obj.key}"
    js_id = await watch_store.initial_submission(conn, feed_id)
    if js_id is None:
        js_id, _ = await feeds_store.new_submission(conn, feed.tenant_id, feed_id)
    result = SubmissionResult(bytes=obj.size or 0, sha256=None, s3_uri=uri, etag=obj.etag)
    await feeds_store.set_file(conn, feed_id, uri, js_id)
    await lifecycle.end_submission(
        conn, js_id, result=encode(result).decode(), error=None, message=f"New object {uri}"
    )
    job = await jobs_store.lock_job(conn, feed.validation_job_id)
    assert job is not None
    queued = await lifecycle.request_run(
        conn,
        job,
        "ready",  # its file was just set
        jobs_store.effective_options(RunOptions(), feed),
        requested_by="s3_event",
        request_id=f"s3-{obj.sequencer[:100]}" if obj.sequencer else None,
    )
    if queued is lifecycle.Refusal.ALREADY_ACTIVE:
        await watch_store.mark_run_pending(conn, feed_id, True)
        log.info("s3_event_run_pending", feed_id=feed_id, job_id=job.id, key=obj.key)
        return "pending"
    log.info("s3_event_loaded", feed_id=feed_id, job_id=job.id, key=obj.key)
    return "loaded"
