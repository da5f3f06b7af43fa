"""Bytes kept aside on disk until the run needs them again: the hash pairs of the rows a
load writes (16 bytes a row), which become the feed's hash set once the load has merged.
A first load of 4M rows makes 64 MB of them; in the consumer's memory they would count
against its budget (docs/benchmarks.md), in a deleted temporary file they cost page cache
the kernel may drop."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO


class Spool:
    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="feedjobs-pairs-")
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def parts(self, size: int) -> Iterator[bytes]:
        """Everything written, from the start, in parts of ``size`` bytes."""
        self._file.seek(0)
        while part := self._file.read(size):
            yield part

    def close(self) -> None:
        self._file.close()
