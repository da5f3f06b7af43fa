"""The status events PostgreSQL's trigger writes are exactly ``contracts.StatusEvent``
(the struct OpenAPI documents them by): no field missing, none extra."""

from __future__ import annotations

from typing import Any

import msgspec

from service.core.contracts import StatusEvent
from tests.integration.conftest import run_and_wait, upload_feed


class Strict(StatusEvent, forbid_unknown_fields=True):
    # (msgspec.Raw is for encoding: read the documents as JSON objects)
    result: dict[str, Any] | None  # type: ignore[assignment]
    error: dict[str, Any] | None  # type: ignore[assignment]


async def test_the_events_written_are_the_documented_struct(client, acme, consumer, db):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\nA-1,Cap,1.00,EUR\n")
    await run_and_wait(client, acme, ids["validation_job_id"])
    rows = await db.fetch(
        "SELECT routing_key, body FROM outbox WHERE exchange = 'jobs.events'"
        " AND routing_key LIKE 'job.%'"
    )
    assert rows, "no status event was written"
    seen = set()
    for row in rows:
        event = msgspec.json.decode(bytes(row["body"]), type=Strict)
        assert row["routing_key"] == f"job.{event.status}"
        assert set(msgspec.json.decode(bytes(row["body"]))) == set(StatusEvent.__struct_fields__)
        seen.add((event.job_type, event.status))
    assert ("validation", "completed") in seen and ("submission", "completed") in seen
