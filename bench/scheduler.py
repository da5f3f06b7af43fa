"""``make bench`` (scheduler part): 10,000 feeds whose schedules fall due in the same minute.

Measures how long the active scheduler takes to request all their runs (each one a queued
run and its outbox message, in the transaction that advances the schedule), against a
scratch database. Target: all within 5 s, none twice.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from bench.run import fresh_db  # noqa: E402
from consumer import scheduler  # noqa: E402
from service.core.logs import configure_logging  # noqa: E402
from service.core.migrate import migrate  # noqa: E402
from service.core.settings import load_settings  # noqa: E402

FEEDS = 10_000


async def main() -> None:
    url = await fresh_db("feedjobs_scheduler_bench")
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO tenants (name) VALUES ('bench');"
            " INSERT INTO feeds (id, tenant_id, name, s3_uri, source, validation_job_id,"
            "  submission_job_id)"
            f" SELECT 'FD' || lpad(n::text, 5, '0'), 1, 'f' || n, 's3://b/k' || n, 'upload',"
            f"  'JV' || lpad(n::text, 5, '0'), 'JS' || lpad(n::text, 5, '0')"
            f" FROM generate_series(1, {FEEDS}) n;"
            " INSERT INTO jobs (id, seq, tenant_id, feed_id, job_type, status)"
            f" SELECT 'JV' || lpad(n::text, 5, '0'), n, 1, 'FD' || lpad(n::text, 5, '0'),"
            f"  'validation', 'created' FROM generate_series(1, {FEEDS}) n;"
            " INSERT INTO feed_schedules (feed_id, cron, next_run_at)"
            f" SELECT 'FD' || lpad(n::text, 5, '0'), '*/5 * * * *',"
            f"  date_trunc('minute', now()) FROM generate_series(1, {FEEDS}) n"
        )
        now = datetime.now(UTC)
        started = time.perf_counter()
        due = 0
        while batch := await scheduler.tick(conn, now):
            due += batch
        took = time.perf_counter() - started
        runs = await conn.fetchval("SELECT count(*) FROM job_runs WHERE requested_by = 'schedule'")
        messages = await conn.fetchval("SELECT count(*) FROM outbox WHERE exchange = 'jobs'")
        again = await scheduler.tick(conn, now)
    finally:
        await conn.close()
    ok = runs == messages == FEEDS and again == 0
    report(
        "scheduler",
        f"feedjobs scheduler, {FEEDS:,} feeds due in the same minute",
        [
            ("all runs requested (s)", took, "", "< 5 s", took < 5 and ok),
            ("runs requested", float(runs), "", f"= {FEEDS}", runs == FEEDS),
            ("run messages in the outbox", float(messages), "", f"= {FEEDS}", messages == FEEDS),
            ("requested again on a second tick", float(again), "", "0", again == 0),
        ],
        feeds=FEEDS,
    )


if __name__ == "__main__":
    configure_logging(load_settings(os.environ, log_level="WARNING"))
    asyncio.run(main())
