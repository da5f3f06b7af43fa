"""The gateway's job cache: what it may keep, and when it must forget."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from service.core.jobcache import JobCache


def row(version: int) -> Any:
    return SimpleNamespace(version=version)


def test_a_row_is_served_to_its_tenant_only():
    cache = JobCache()
    cache.reset(enabled=True)
    cache.put("JV00001", 1, row(1), cache.changes)
    assert cache.get("JV00001", 1) == row(1)
    assert cache.get("JV00001", 2) is None  # another tenant reads the database (and gets 404)


def test_an_invalidation_during_the_read_keeps_the_old_row_out():
    cache = JobCache()
    cache.reset(enabled=True)
    seen = cache.changes  # a request starts reading version 1 ...
    cache.invalidate("JV00001")  # ... the job changes meanwhile (NOTIFY) ...
    cache.put("JV00001", 1, row(1), seen)  # ... so its read must not be kept
    assert cache.get("JV00001", 1) is None
    cache.put("JV00001", 1, row(2), cache.changes)
    assert cache.get("JV00001", 1) == row(2)
    cache.invalidate("JV00001")
    assert cache.get("JV00001", 1) is None


def test_nothing_is_kept_while_the_listener_is_down():
    cache = JobCache()
    cache.put("JV00001", 1, row(1), cache.changes)
    assert cache.get("JV00001", 1) is None
    cache.reset(enabled=True)
    cache.put("JV00001", 1, row(1), cache.changes)
    cache.reset(enabled=False)  # the listener dropped: notifications may be missed
    assert cache.get("JV00001", 1) is None


def test_the_least_recently_used_row_goes_first():
    cache = JobCache(size=2)
    cache.reset(enabled=True)
    for job in ("A", "B"):
        cache.put(job, 1, row(1), cache.changes)
    cache.get("A", 1)
    cache.put("C", 1, row(1), cache.changes)
    assert cache.get("B", 1) is None and cache.get("A", 1) and cache.get("C", 1)


def test_the_newest_version_read_outlives_invalidations_and_resets():
    """What a standby read (the primary down) is held to: never older than a version read."""
    cache = JobCache(size=2)
    cache.put("JV00001", 1, row(3), cache.changes)  # kept although the cache is off
    cache.invalidate("JV00001")
    cache.reset(enabled=False)
    assert cache.seen_version("JV00001") == 3
    cache.put("JV00001", 1, row(2), cache.changes)  # an older read lowers nothing
    assert cache.seen_version("JV00001") == 3
    cache.put("JV00002", 1, row(1), cache.changes)
    cache.put("JV00003", 1, row(1), cache.changes)  # bounded: the oldest goes
    assert cache.seen_version("JV00001") == 0 and cache.seen_version("JV00003") == 1
