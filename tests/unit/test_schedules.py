"""Due times of schedules (service/core/schedules.py), daylight saving included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.core.contracts import ScheduleBody
from service.core.errors import InvalidRequest
from service.core.schedules import check, next_run


def at(text: str) -> datetime:
    """An instant, in UTC: aware datetimes in a repeated hour never compare equal across
    time zones in Python, so every comparison here is of UTC instants."""
    return datetime.fromisoformat(text).astimezone(UTC)


def test_an_interval_counts_from_now():
    assert next_run(None, 90, "UTC", at("2026-01-01T00:00:00+00:00")) == at(
        "2026-01-01T00:01:30+00:00"
    )


def test_cron_is_read_in_its_time_zone():
    due = next_run("0 9 * * *", None, "Europe/Berlin", at("2026-06-01T10:00:00+00:00"))
    assert due.astimezone(UTC) == at("2026-06-02T09:00:00+02:00") and due.astimezone(UTC).hour == 7


def test_a_time_skipped_by_daylight_saving_runs_right_after_the_gap():
    # 2026-03-29: Berlin clocks jump from 02:00 to 03:00; 02:30 does not exist that day.
    due = next_run("30 2 * * *", None, "Europe/Berlin", at("2026-03-28T12:00:00+01:00"))
    assert due.astimezone(UTC) == at("2026-03-29T03:00:00+02:00")
    after = next_run("30 2 * * *", None, "Europe/Berlin", due)
    assert after.astimezone(UTC) == at("2026-03-30T02:30:00+02:00")


def test_a_time_repeated_by_daylight_saving_runs_once():
    # 2026-10-25: Berlin clocks go back from 03:00 to 02:00; 02:30 happens twice.
    first = next_run("30 2 * * *", None, "Europe/Berlin", at("2026-10-24T12:00:00+02:00"))
    assert first.astimezone(UTC) == at("2026-10-25T02:30:00+02:00")
    second = next_run("30 2 * * *", None, "Europe/Berlin", first)
    assert second.astimezone(UTC) == at("2026-10-26T02:30:00+01:00")  # not again on the 25th


def test_runs_missed_while_down_happen_once():
    # Hourly, nothing ran for three days: the next due time is after now, not 72 back-runs.
    now = at("2026-05-04T10:20:00+00:00")
    assert next_run("0 * * * *", None, "UTC", now).astimezone(UTC) == at("2026-05-04T11:00:00Z")


@pytest.mark.parametrize(
    "body,field",
    [
        (ScheduleBody(), "cron"),
        (ScheduleBody(cron="0 * * * *", every_seconds=60), "every_seconds"),
        (ScheduleBody(cron="61 * * * *"), "cron"),
        (ScheduleBody(cron="0 * * * *", timezone="Mars/Olympus"), "timezone"),
    ],
)
def test_bad_schedules_name_the_field(body, field):
    with pytest.raises(InvalidRequest) as caught:
        check(body)
    assert caught.value.details == {"field": field}
