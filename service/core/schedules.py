"""Schedules of feeds: validation and the next due time (pure functions).

Cron expressions are read by ``cronsim`` in the schedule's time zone, so daylight saving
behaves as cron does: a time that does not exist that day (02:30 when clocks jump from 02:00
to 03:00) runs at the first minute after the gap, and a time that happens twice (when clocks
go back) runs once, the first time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from service.core.contracts import ScheduleBody
from service.core.errors import InvalidRequest


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"timezone {name!r} is not an IANA time zone (such as Europe/Berlin or UTC)",
            details={"field": "timezone"},
        ) from None


def check(body: ScheduleBody) -> None:
    """A 400 naming the field, for a schedule that cannot be run."""
    if (body.cron is None) == (body.every_seconds is None):
        raise InvalidRequest(
            "A schedule has either `cron` (with an optional `timezone`) or `every_seconds`",
            details={"field": "cron" if body.cron is None else "every_seconds"},
        )
    tz = zone(body.timezone)
    if body.cron is not None:
        try:
            CronSim(body.cron, datetime.now(tz))
        except CronSimError as exc:
            raise InvalidRequest(
                f"cron {body.cron!r} is not a cron expression: {exc}", details={"field": "cron"}
            ) from None


def next_run(
    cron: str | None, every_seconds: int | None, timezone: str, after: datetime
) -> datetime:
    """The first due time strictly after ``after`` (an aware datetime). Runs missed while
    nothing was up are not made up one by one: the next one is after ``after``."""
    if every_seconds is not None:
        return after + timedelta(seconds=every_seconds)
    assert cron is not None
    local = after.astimezone(zone(timezone))
    due: datetime = next(iter(CronSim(cron, local)))
    return due
