"""A feed's text encoding, turned into UTF-8 as the file streams through the parse worker
(after un-gzipping, before lines are cut), so everything after it (the fast path, the
validator, the hashes, COPY) sees UTF-8 only. Rejected rows therefore show their text as
decoded.

- ``utf-8`` (the default; a BOM is dropped later, by the line source): passed through.
- ``windows-1252`` and ``iso-8859-1``: every byte decodes (the five bytes Windows-1252 leaves
  undefined become the C1 controls ISO-8859-1 gives them, as browsers do).
- ``utf-16``: by its BOM (little-endian without one); a file that is not UTF-16 fails
  ``INVALID_ENCODING`` with the byte offset.
- ``auto``: a BOM says UTF-8 or UTF-16; else the head of the file (64 KiB) decoding as strict
  UTF-8 says UTF-8; else charset-normalizer's verdict among the encodings above. The
  encoding used is recorded in the run's result (``encoding``).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator

_CODECS = {
    "utf-16": "utf-16",
    "utf-16-be": "utf-16-be",  # found by ``auto`` only: big-endian without a BOM
    "windows-1252": "cp1252",
    "iso-8859-1": "latin-1",
}
_DETECTED = {
    "cp1252": "windows-1252",
    "latin_1": "iso-8859-1",
    "utf_16_le": "utf-16",
    "utf_16_be": "utf-16-be",
    "utf_8": "utf-8",
    "ascii": "utf-8",
}
SAMPLE_BYTES = 64 * 1024
_C1 = "feedjobs-c1"


def _as_c1(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error(_C1, _as_c1)


class EncodingFault(Exception):
    """The file cannot be decoded in its encoding (only UTF-16 can fail: a single-byte
    encoding decodes anything)."""

    def __init__(self, message: str, details: dict[str, object]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def transcode(
    chunks: Iterable[bytes], encoding: str, record: Callable[[str], None]
) -> Iterator[bytes]:
    """``chunks`` as UTF-8; ``record`` is told the encoding used (for ``auto``, the one it
    found) before the first chunk."""
    source = iter(chunks)
    if encoding == "auto":
        head, source = _head(source)
        encoding = detect(head)
        source = _chain(head, source)
    record(encoding)
    codec = _CODECS.get(encoding)
    if codec is None:
        yield from source
        return
    decoder = codecs.getincrementaldecoder(codec)(errors=_C1 if codec == "cp1252" else "strict")
    offset = 0
    try:
        for chunk in source:
            text = decoder.decode(chunk)
            offset += len(chunk)
            if text:
                yield text.encode("utf-8")
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        raise EncodingFault(
            f"The file is not valid {encoding.upper()} at byte {at}: check its encoding"
            " (utf-8, windows-1252, iso-8859-1, utf-16 or auto)",
            {"encoding": encoding, "byte": at},
        ) from None
    if tail:
        yield tail.encode("utf-8")


def detect(head: bytes) -> str:
    """The encoding of a file that starts with ``head``: BOM, else strict UTF-8, else the
    detector's verdict among the encodings we decode."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer  # only a file that is not UTF-8 pays for the import

    best = charset_normalizer.from_bytes(
        head, cp_isolation=["cp1252", "latin_1", "utf_16_le", "utf_16_be"]
    ).best()
    return _DETECTED.get(best.encoding, "windows-1252") if best else "windows-1252"


def _head(source: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    head = b""
    for chunk in source:
        head += chunk
        if len(head) >= SAMPLE_BYTES:
            break
    return head, source


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
