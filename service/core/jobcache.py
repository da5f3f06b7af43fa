"""The gateway's cache of job rows: kept until PostgreSQL says the job changed.

Polling clients read the same few jobs over and over, and a job changes a few times a
minute at most (progress about once a second while it runs). Every change of a job's ETag
fires ``NOTIFY job_changed`` (sql/0001_init.sql), which the gateway already LISTENs to for
long polls; the same notification drops the job's row here, so a cached row is never older
than the notification's delivery (milliseconds). While the listener is disconnected the
cache is off and empty: notifications could be missed. A row read from the database is only
kept if no invalidation happened while it was being read, so a read that raced a change
can never put the old row back. Writes made by this gateway drop their jobs themselves,
so a client reads its own writes at once. Bounded (least recently used out first).
"""

from __future__ import annotations

from collections import OrderedDict

from service.core.store.jobs import JobRecord


class JobCache:
    def __init__(self, size: int = 10_000) -> None:
        self._rows: OrderedDict[str, tuple[int, JobRecord]] = OrderedDict()
        self._size = size
        self.changes = 0  # invalidations so far: a fill started before one is not kept
        self.enabled = False
        # The newest version of each job this gateway has read, kept across invalidations
        # and resets: a job read from a standby (the primary down) must not be older.
        self._seen: OrderedDict[str, int] = OrderedDict()

    def get(self, job_id: str, tenant_id: int) -> JobRecord | None:
        """The cached row, if any and if it is this tenant's (else None: read the database)."""
        entry = self._rows.get(job_id)
        if entry is None or entry[0] != tenant_id:
            return None
        self._rows.move_to_end(job_id)
        return entry[1]

    def seen_version(self, job_id: str) -> int:
        """The newest version of the job read so far (0: none)."""
        return self._seen.get(job_id, 0)

    def put(self, job_id: str, tenant_id: int, row: JobRecord, seen: int) -> None:
        """Keep ``row``, read after ``changes`` was ``seen``, unless something changed since."""
        if row.version > self._seen.get(job_id, 0):
            self._seen[job_id] = row.version
            self._seen.move_to_end(job_id)
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        if not self.enabled or seen != self.changes:
            return
        self._rows[job_id] = (tenant_id, row)
        self._rows.move_to_end(job_id)
        if len(self._rows) > self._size:
            self._rows.popitem(last=False)

    def invalidate(self, job_id: str) -> None:
        self.changes += 1
        self._rows.pop(job_id, None)

    def reset(self, *, enabled: bool) -> None:
        """Forget everything (the listener (re)connected or dropped)."""
        self.changes += 1
        self._rows.clear()
        self.enabled = enabled
