"""API-key authentication with a short-lived in-process cache of key hash → tenant."""

from __future__ import annotations

import time
from typing import TypeVar

from service.core.errors import Unauthorized
from service.core.replica import Reads
from service.core.store import keys as keys_store
from service.core.store.keys import Principal

T = TypeVar("T")


class KeyCache:
    """Caches successful look-ups for ``ttl`` seconds, so a poll costs no key query.

    Two more memories make key guessing cheap for us and slow for the guesser
    (middleware.authenticate): keys that authenticated within ``seen_ttl`` (1 h) skip the
    bad-key throttle, so a legitimate client behind the same address as a guesser keeps
    working; unknown keys are remembered for ``unknown_ttl`` (60 s), so the same wrong key
    costs no query. Each memory is bounded (cleared past MAX_ENTRIES).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float = 30.0, seen_ttl: float = 3600.0, unknown_ttl: float = 60.0):
        self.ttl = ttl
        self.seen_ttl = seen_ttl
        self.unknown_ttl = unknown_ttl
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._seen: dict[bytes, float] = {}
        self._unknown: dict[bytes, float] = {}

    def cached(self, key: str | None) -> Principal | None:
        """The key's principal if it is cached and fresh (no await: every poll asks)."""
        if not key:
            return None
        hit = self._entries.get(keys_store.hash_key(key))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def seen_valid(self, key: str | None) -> bool:
        """Whether ``key`` authenticated within the last ``seen_ttl`` seconds."""
        if not key:
            return False
        return self._seen.get(keys_store.hash_key(key), 0.0) > time.monotonic()

    async def authenticate(self, reads: Reads, key: str | None) -> Principal:
        if not key:
            raise Unauthorized()
        digest = keys_store.hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._unknown.get(digest, 0.0) > now:
            raise Unauthorized()
        # the primary (a key just revoked is refused), the standby while it is down
        principal = await reads.primary_first(lambda db: keys_store.lookup(db, digest))
        if principal is None:
            _remember(self._unknown, digest, now + self.unknown_ttl)
            raise Unauthorized()
        self._unknown.pop(digest, None)
        _remember(self._entries, digest, (now + self.ttl, principal))
        _remember(self._seen, digest, now + self.seen_ttl)
        return principal


def _remember(memory: dict[bytes, T], digest: bytes, value: T) -> None:
    if len(memory) >= KeyCache.MAX_ENTRIES and digest not in memory:
        memory.clear()
    memory[digest] = value
