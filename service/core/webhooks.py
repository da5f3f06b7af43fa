"""Webhooks as the Standard Webhooks specification (standardwebhooks.com) has them: the
signature, the secret, the retry schedule, and which URLs may be called at all.

**Signature**: ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
keyed by the secret's bytes (``whsec_<base64>``); during a rotation's grace both secrets
sign, space-separated, so a receiver that still has the old one verifies too.

**SSRF**: a URL is http(s) only, and every address its host resolves to must be public
(``ipaddress``'s ``is_global``: no loopback, private, link-local, metadata, shared or
reserved range) unless the operator's ``WEBHOOK_ALLOWED_HOSTS`` names the host or a CIDR
holding the address. Checked when the endpoint is registered (a 400) and again at every
attempt, by the connection's own resolver, so a name re-pointed at 10.0.0.1 later
(DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.core.errors import InvalidRequest

SECRET_PREFIX = "whsec_"
MAX_URL = 2000


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` entry of the ``webhook-signature`` header."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def schedule(text: str) -> list[float]:
    """WEBHOOK_RETRY_SCHEDULE: seconds between attempts after the first."""
    return [float(part) for part in text.split(",") if part.strip()]


def next_delay(plan: list[float], attempts: int) -> float | None:
    """Seconds until the next attempt after ``attempts`` made, jittered ±10%; None: the
    schedule is over."""
    if attempts - 1 >= len(plan):
        return None
    return plan[attempts - 1] * random.uniform(0.9, 1.1)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Allowed:
    """WEBHOOK_ALLOWED_HOSTS: host names and networks allowed although not public."""

    def __init__(self, text: str) -> None:
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for item in (part.strip().lower() for part in text.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.hosts.add(item)

    def address(self, host: str, ip: str) -> bool:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if host.lower() in self.hosts or any(addr in n for n in self.networks):
            return True
        return addr.is_global and not addr.is_multicast


def check_url(url: str) -> tuple[str, int]:
    """The URL's host and port, or a 400 saying what is wrong with it (no resolving)."""
    if len(url) > MAX_URL:
        raise InvalidRequest(f"url is longer than {MAX_URL} characters", details={"field": "url"})
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "url must be an http or https URL with a host", details={"field": "url"}
        )
    if parts.username or parts.password:
        raise InvalidRequest("url must not hold credentials", details={"field": "url"})
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest("url has an invalid port", details={"field": "url"}) from None
    return parts.hostname, port


async def check_destination(url: str, allowed: Allowed) -> None:
    """A 400 unless every address the URL's host resolves to may be called."""
    host, port = check_url(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequest(
            f"url's host {host!r} does not resolve", details={"field": "url"}
        ) from None
    refused = sorted(
        {str(info[4][0]) for info in infos if not allowed.address(host, str(info[4][0]))}
    )
    if refused:
        raise InvalidRequest(
            f"url's host {host!r} resolves to {', '.join(refused)}: loopback, private,"
            " link-local and metadata addresses are refused (the operator may allow hosts"
            " with WEBHOOK_ALLOWED_HOSTS)",
            details={"field": "url", "addresses": refused},
        )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a webhook may call (none: the
    connection fails with that reason)."""

    def __init__(self, allowed: Allowed) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self._allowed.address(host, r["host"])]
        if not kept:
            raise OSError(f"{host} resolves only to addresses webhooks may not call")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def literal_refused(url: str, allowed: Allowed) -> str | None:
    """aiohttp does not resolve an IP literal: why such a URL may not be called, or None."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if allowed.address(host, host) else f"{host} is not an address webhooks may call"


def headers(msg_id: str, timestamp: int, body: bytes, signing: list[str]) -> dict[str, Any]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in signing),
        "content-type": "application/json",
        "user-agent": "feedjobs-webhooks/1",
    }
