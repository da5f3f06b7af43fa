"""Token-bucket rate limiting (per process: each gateway replica counts its own).

Two limiters use it: one per API key, and one per client address for failed API keys (so a
key-guessing client is slowed down too). ``StreamSlots`` bounds a tenant's concurrent
downloads.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Hashable, Iterator

from service.core.errors import RateLimited

MAX_BUCKETS = 100_000  # bounded memory whatever the number of clients; a reset only forgives


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.limit_text = str(burst)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def take(self, key: Hashable, now: float | None = None) -> tuple[bool, int, float]:
        """Take one token; returns (allowed, tokens left, seconds until one is back)."""
        now = time.monotonic() if now is None else now
        if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
            self._buckets.clear()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            self._buckets[key] = (tokens, now)
            return True, int(tokens), 0.0
        self._buckets[key] = (tokens, now)
        wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
        return False, 0, wait

    def headers(self, remaining: int, wait: float) -> dict[str, str]:
        return {
            "RateLimit-Limit": self.limit_text,
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(max(0, math.ceil(wait))),
        }


class StreamSlots:
    """Concurrent downloads per tenant, in this gateway process."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self.active: collections.Counter[int] = collections.Counter()

    @contextlib.contextmanager
    def take(self, tenant_id: int) -> Iterator[None]:
        if self.active[tenant_id] >= self.per_tenant:
            raise RateLimited(
                f"At most {self.per_tenant} CSV downloads of one tenant run at once"
                " (MAX_STREAMS_PER_TENANT); try again when one has finished",
                detail="Too many concurrent downloads",
                headers={"Retry-After": "5"},
                details={"max_streams_per_tenant": self.per_tenant},
            )
        self.active[tenant_id] += 1
        try:
            yield
        finally:
            self.active[tenant_id] -= 1
            if not self.active[tenant_id]:
                del self.active[tenant_id]
