"""One way to keep a long-lived loop alive: bounded exponential backoff, never giving up.

Every reconnect loop of both processes (outbox relay, LISTEN connection, the consumer's
AMQP session, the sweeper) runs through :func:`retry_forever`, so a dependency that goes
away costs a log line and a wait, never the process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import aio_pika
import aiormq
import asyncpg

from service.core.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# Faults of a dependency (a dropped or refused connection, a broker that went away): expected,
# logged without a traceback. Anything else is a bug, logged with one; both are retried.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed on its way up.

    Some client code (seen with aiormq and asyncpg mid-operation) catches CancelledError and
    answers with an error of its own, or nothing: a loop that retries errors would then go
    on forever, and a shutdown that waits for it would hang. Every loop here checks first.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class Backoff:
    """Exponential delays from ``first`` to ``cap`` seconds, with ±20% jitter so that many
    processes cut off together do not come back together."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.8, 1.2)


async def retry_forever(
    name: str,
    step: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff | None = None,
    healthy_after: float = 5.0,
) -> NoReturn:
    """Run ``step`` again and again. A step that raises is retried after a backoff; one that
    ran for ``healthy_after`` seconds first starts the backoff over. Only cancellation ends
    the loop."""
    backoff = backoff or Backoff()
    while True:
        raise_if_cancelling()
        started = time.monotonic()
        error: BaseException | None = None
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except TRANSIENT as exc:
            error = exc
        except Exception as exc:
            error = exc
            log.exception("background_step_crashed", task=name)
        if time.monotonic() - started >= healthy_after:
            backoff.reset()
        delay = backoff.next()
        log.warning(
            "background_retry",
            task=name,
            error="it ended" if error is None else f"{type(error).__name__}: {error}"[:500],
            delay_s=round(delay, 2),
        )
        raise_if_cancelling()
        await asyncio.sleep(delay)


async def retry_transient(
    event: str,
    step: Callable[[], Awaitable[T]],
    *,
    give_up: Callable[[], bool] = lambda: False,
) -> T:
    """``step()``'s result, waiting out dependency faults with backoff (each wait logged as
    ``event``). A fault that is not transient, or any fault once ``give_up()`` is true, is
    raised to the caller."""
    backoff = Backoff()
    while True:
        raise_if_cancelling()
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc) or give_up():
                raise
            delay = backoff.next()
            log.warning(event, error=repr(exc)[:300], delay_s=round(delay, 2))
            await asyncio.sleep(delay)


async def until_reachable(
    what: str,
    step: Callable[[], Awaitable[T]],
    *,
    retries: int,
    unreachable: tuple[type[BaseException], ...],
) -> T:
    """``step()``'s result once the dependency ``what`` answers: what a process does at
    start-up. Each wait is logged (``{what}_waiting``: attempt, error, delay; 0.5 s doubling
    to 5 s) and the end too (``{what}_ready``); ``retries`` tries at most, 0 for as long as
    it takes. Other faults are raised at once."""
    backoff = Backoff(0.5, 5.0)
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await step()
        except unreachable as exc:
            if retries and attempt >= retries:
                raise
            delay = backoff.next()
            log.warning(
                f"{what}_waiting",
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}"[:300],
                delay_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            log.info(f"{what}_ready", attempts=attempt)
        return result


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
