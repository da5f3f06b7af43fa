"""One run's parse worker: spawned, fed (the stored hashes, then the file), heard, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sys
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import msgspec

from consumer.frames import Frame, WorkerConfig, decoder
from service.core.errors import JobFailure
from service.core.s3 import ObjectChanged, S3Uri, read_stream

PIPE_BYTES = 1024 * 1024  # Linux's default limit for an unprivileged process


def _widen(proc: asyncio.subprocess.Process, fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: the file goes to the worker a whole S3 chunk at a
    time and its frames come back whole, so neither side waits for the other as often."""
    with contextlib.suppress(OSError, AttributeError):
        pipe = proc._transport.get_pipe_transport(fd).get_extra_info("pipe")  # type: ignore[attr-defined]
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


async def _start() -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer.parse_worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1024 * 1024,
        # Its own session: a signal to the consumer's process group (Ctrl-C, systemd's
        # SIGTERM) must reach only the consumer, which drains its runs and then ends the
        # worker itself (stdin closed, or killed on abandon).
        start_new_session=True,
    )
    _widen(proc, 0)
    _widen(proc, 1)
    return proc


class Spawner:
    """Starts parse workers one ahead: a run takes a worker that has already started and
    imported its modules (about 0.1 s) and waits on stdin for its configuration. The spare
    is started when a run's worker ends, not while it works: it would otherwise sit beside
    the busy worker's memory (about 30 MB) for the whole run."""

    def __init__(self) -> None:
        self._spare: asyncio.Task[asyncio.subprocess.Process] | None = None
        self._closed = False

    async def take(self) -> asyncio.subprocess.Process:
        task, self._spare = self._spare, None
        proc = None
        if task is not None:
            with contextlib.suppress(Exception):
                proc = await task
        if proc is None or proc.returncode is not None:
            proc = await _start()
        return proc

    def replenish(self) -> None:
        """Start a spare for the next run, unless one is on its way."""
        if not self._closed and self._spare is None:
            self._spare = asyncio.create_task(_start(), name="parse-worker-spare")

    async def close(self) -> None:
        self._closed = True
        task, self._spare = self._spare, None
        if task is None:
            return
        with contextlib.suppress(Exception):
            proc = await task
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class WorkerSession:
    def __init__(
        self, proc: asyncio.subprocess.Process, name: str, spawner: Spawner | None = None
    ) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.name = name
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._feeder: asyncio.Task[None] | None = None
        self._file_gate = asyncio.Event()
        self._spawner = spawner

    @classmethod
    async def spawn(cls, cfg: WorkerConfig, name: str, spawner: Spawner) -> WorkerSession:
        session = cls(await spawner.take(), name, spawner)
        config = msgspec.json.encode(cfg)
        session._stdin.write(len(config).to_bytes(4, "big") + config)
        return session

    async def __aenter__(self) -> WorkerSession:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- to the worker --------------------------------------------------------------------

    async def send_chunk(self, data: bytes) -> None:
        """One length-prefixed chunk of the stored hashes (an empty one ends them).

        Never raises: it is the output callback of a COPY, and an exception there leaves
        asyncpg's connection waiting for ever on its own cancel request. A worker that
        stopped reading has ended: the run's next frame read says so (PARSE_FAILED, with
        what it wrote on stderr)."""
        if self._stdin.is_closing():
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._stdin.write(len(data).to_bytes(4, "big") + data)
            await self._stdin.drain()

    def feed_file(
        self,
        s3: Any,
        files: list[tuple[S3Uri, str]],
        on_chunk: Callable[[int], None],
        *,
        framed: bool = False,
    ) -> None:
        """Stream the object (or each part of a multi-part file, ``framed`` as
        ``WorkerConfig.parts`` says) to the worker's stdin, in a task of its own. The first
        object is asked for at once, so that S3's time to the first byte passes while the
        stored hashes are still on their way; its bytes go to the worker only after them
        (``release_file``). Each object is read only as it was listed (its ETag): one
        replaced or deleted meanwhile fails the run ``FILE_CHANGED``."""

        async def feed() -> None:
            try:
                for uri, etag in files:
                    async for chunk in read_stream(s3, uri, if_match=etag):
                        await self._file_gate.wait()
                        on_chunk(len(chunk))
                        self._stdin.write(
                            len(chunk).to_bytes(4, "big") + chunk if framed else chunk
                        )
                        await self._stdin.drain()
                    if framed:
                        await self._file_gate.wait()
                        self._stdin.write(b"\0\0\0\0")  # the end of this part
                # Never close stdin before the stored hashes are all sent: an empty object
                # has no chunk to wait on, and a closed pipe would cut them short.
                await self._file_gate.wait()
            except (BrokenPipeError, ConnectionResetError):
                return  # the worker stopped reading (a fatal fault it reports itself)
            except ObjectChanged as exc:
                await self._file_gate.wait()  # the stored hashes are not cut short
                raise JobFailure(
                    "FILE_CHANGED",
                    f"{exc.message}: a feed's file (each part of it) must stay as it is until"
                    " its run has read it; run again to load the new version",
                    {"s3_uri": str(uri)},
                ) from exc
            except asyncio.CancelledError:
                raise
            except BaseException:
                await self._file_gate.wait()  # the stored hashes are not cut short
                raise
            finally:
                if self._file_gate.is_set():
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self._stdin.close()

        self._feeder = asyncio.create_task(feed(), name=f"s3-feed-{self.name}")

    def release_file(self) -> None:
        """The stored hashes (if any) are sent: the file's bytes may follow them."""
        self._file_gate.set()

    def feed_failure(self) -> BaseException | None:
        """What reading the file raised, if it has ended so."""
        task = self._feeder
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def file_sent(self) -> None:
        """Wait for the whole file to be sent (raises what reading it raised)."""
        if self._feeder is not None:
            await self._feeder

    # -- from the worker ------------------------------------------------------------------

    async def next_frame(self) -> Frame | None:
        try:
            head = await self._stdout.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        frame: Frame = decoder.decode(await self._stdout.readexactly(int.from_bytes(head, "big")))
        return frame

    async def frames(self) -> AsyncIterator[Frame]:
        while (frame := await self.next_frame()) is not None:
            yield frame

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        try:
            data = await asyncio.wait_for(self.proc.stderr.read(4096), 2)
        except TimeoutError:
            return ""
        return data.decode(errors="replace")[-2000:]

    async def stop(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(BaseException):
                await self._feeder
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        if self._spawner is not None:
            self._spawner.replenish()
