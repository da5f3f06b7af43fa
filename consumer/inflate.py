"""gzip detection by magic bytes and streamed decompression with caps against gzip bombs."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

GZIP_MAGIC = b"\x1f\x8b"
OUT_STEP = 1024 * 1024
RATIO_GRACE = 16 * 1024 * 1024  # below this much output, any ratio is fine


class DecompressionLimit(Exception):
    def __init__(self, message: str, details: dict[str, int]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Inflater:
    """Yields the decompressed bytes of ``chunks`` (or the bytes as they are, if not gzip)."""

    def __init__(self, chunks: Iterable[bytes], max_bytes: int, max_ratio: int) -> None:
        self.chunks = iter(chunks)
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.compressed = 0  # read from the input
        self.consumed = 0  # ... of which the decompressor has taken (the rest waits)
        self.inflated = 0
        self.gzip = False

    def __iter__(self) -> Iterator[bytes]:
        first = b""
        for chunk in self.chunks:
            first += chunk
            if len(first) >= 2:
                break
        if not first.startswith(GZIP_MAGIC):
            self.inflated += len(first)
            if first:
                yield first
            for chunk in self.chunks:
                self.inflated += len(chunk)
                yield chunk
            return
        self.gzip = True
        yield from self._inflate(first)

    def _inflate(self, first: bytes) -> Iterator[bytes]:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)

        def source() -> Iterator[bytes]:
            yield first
            yield from self.chunks

        for chunk in source():
            self.compressed += len(chunk)
            data = chunk
            while data:
                out = d.decompress(data, OUT_STEP)
                self.consumed = self.compressed - len(d.unconsumed_tail)
                if out:
                    self._check(len(out))
                    yield out
                data = d.unconsumed_tail
                if d.eof:
                    rest = d.unused_data
                    if not rest.startswith(GZIP_MAGIC[: len(rest)]) or not rest:
                        return  # trailing bytes after the last member are ignored
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
        tail = d.flush()
        if tail:
            self._check(len(tail))
            yield tail

    def _check(self, produced: int) -> None:
        self.inflated += produced
        if self.inflated > self.max_bytes:
            raise DecompressionLimit(
                f"The file inflates to more than {self.max_bytes} bytes",
                {"max_inflated_bytes": self.max_bytes, "compressed_bytes_read": self.compressed},
            )
        if self.inflated > RATIO_GRACE and self.inflated > self.max_ratio * self.compressed:
            raise DecompressionLimit(
                f"The file inflates more than {self.max_ratio} times: a gzip bomb?",
                {
                    "max_inflate_ratio": self.max_ratio,
                    "compressed_bytes_read": self.compressed,
                    "inflated_bytes": self.inflated,
                },
            )
