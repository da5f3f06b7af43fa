"""API-key authentication with a short-lived in-process cache of key hash → tenant."""

from __future__ import annotations

import time

import asyncpg

from service.core.errors import Unauthorized
from service.core.store import keys as keys_store
from service.core.store.keys import Principal


class KeyCache:
    """Caches successful look-ups for ``ttl`` seconds, so a poll costs no key query.

    Unknown keys are not cached (a flood of bad keys still costs a query each; the rate
    limiter is keyed per valid key only).
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def cached(self, key: str | None) -> Principal | None:
        """The key's principal if it is cached and fresh (no await: every poll asks)."""
        if not key:
            return None
        hit = self._entries.get(keys_store.hash_key(key))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def authenticate(self, pool: asyncpg.Pool, key: str | None) -> Principal:
        if not key:
            raise Unauthorized()
        digest = keys_store.hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await keys_store.lookup(pool, digest)
        if principal is None:
            raise Unauthorized()
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now + self.ttl, principal)
        return principal
