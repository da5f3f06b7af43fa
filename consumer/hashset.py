"""The feed's stored hashes around a load: sent to the worker at the start (the feed's
packed hash set, or a scan of its products), and the feed's new set written at the end,
last in the run's transaction (service/core/store/hash_sets.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec

from consumer.frames import End, Kept, WorkerConfig
from consumer.known import SET_SIGNATURE
from consumer.session import WorkerSession
from consumer.spool import Spool
from service.core.logs import get_logger
from service.core.store import hash_sets
from service.core.store import products as stage
from service.core.store.runs import ClaimedRun

log = get_logger(__name__)


async def send_known(
    conn: asyncpg.Connection, worker: WorkerSession, config: WorkerConfig, feed_id: str
) -> None:
    """The feed's stored hashes, to a worker that recognises rows: its packed set when it
    has one, else a scan of its products (a first load has none)."""
    if not config.recognise:
        return
    if config.set_stored:
        await worker.send_chunk(SET_SIGNATURE)
        await hash_sets.read_each(conn, feed_id, worker.send_chunk)
    elif not config.direct_tail:  # a re-run of a feed without a set (a first load: none)
        await stage.copy_stored_hashes(conn, feed_id, worker.send_chunk)
    await worker.send_chunk(b"")


async def keep_set(
    conn: asyncpg.Connection,
    worker: WorkerSession,
    run: ClaimedRun,
    end: End,
    spool: Spool | None,
    counts: stage.MergeCounts,
) -> int | None:
    """Write the feed's new hash set (its pairs written, then the stored ones that stay),
    last in the run's transaction. Only when PostgreSQL's counts agree with the worker's
    (every row it sent was written, every gone row deleted): else no set is kept, and the
    next run reads the feed's products instead (None)."""
    sent = end.rows_valid - end.unchanged
    pairs = spool.size // hash_sets.PAIR_BYTES if spool is not None else 0
    gone = len(end.gone) if run.options.mode == "snapshot" else 0
    if not (counts.inserted + counts.updated == sent == pairs and counts.deleted == gone):
        log.warning(
            "hash_set_not_kept", sent=sent, pairs=pairs, gone=gone, **msgspec.structs.asdict(counts)
        )
        await hash_sets.drop(conn, run.feed_id)
        return None

    async def parts() -> AsyncIterator[bytes]:
        if spool is not None:
            for part in spool.parts(hash_sets.PART_BYTES):
                yield part
        for _ in range(end.kept_parts):
            frame = await worker.next_frame()
            if not isinstance(frame, Kept):
                raise _SetCutShort(await worker.stderr())
            yield frame.pairs

    try:
        return await hash_sets.write(conn, run.feed_id, parts())
    except _SetCutShort as exc:
        # The products are written and whole; only the cache is not: the run completes.
        log.warning("hash_set_not_kept", reason="the worker stopped", stderr=str(exc))
        await hash_sets.drop(conn, run.feed_id)
        return None


class _SetCutShort(Exception):
    """The worker ended before sending every part of the set that stays."""
