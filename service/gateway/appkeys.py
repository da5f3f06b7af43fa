"""Typed application keys: every handler finds its dependencies here, never in globals."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from service.core.listener import JobWatcher
from service.core.replica import Reads
from service.core.settings import Settings
from service.gateway.auth import KeyCache
from service.gateway.ratelimit import RateLimiter, StreamSlots

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)  # the primary: writes, and what must be current
READS = web.AppKey("reads", Reads)  # where reads go (service/core/replica.py)
S3 = web.AppKey("s3", Any)
WATCHER = web.AppKey("watcher", JobWatcher)
KEYS = web.AppKey("key_cache", KeyCache)
LIMITER = web.AppKey("rate_limiter", RateLimiter)
BAD_KEY_LIMITER = web.AppKey("bad_key_limiter", RateLimiter)
HEALTH = web.AppKey("health", dict)
STREAMS = web.AppKey("streams", StreamSlots)
