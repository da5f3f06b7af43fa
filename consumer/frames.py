"""What the parse worker tells the consumer: length-prefixed msgpack frames on its stdout."""

from __future__ import annotations

import struct
from typing import Any

import msgspec


class Header(msgspec.Struct, tag="header"):
    ignored: list[str]  # header fields read into nothing
    mapped: dict[str, str] = {}  # header field -> the product column it is
    attributes: list[str] = []  # header fields kept as attributes


class Batch(msgspec.Struct, tag="batch"):
    payload: bytes  # CSV for COPY: canonical line, row hash, sku hash, line (or feed, job)
    rows: int  # rows in payload
    rows_read: int  # data rows read so far
    errors: list[tuple[int, str | None, str, str, str]]  # line, column, code, message, raw
    pairs: bytes = b""  # the rows' packed (row hash, sku hash) pairs, when the set is kept
    # Bytes of the file (as stored: compressed for gzip) behind the rows read so far: what
    # progress estimates from, not the bytes sent, which run ahead by a pipe and a block.
    bytes_parsed: int = 0


class Cleaned(msgspec.Struct, array_like=True):
    """Accepted rows of one column whose value cleaning changed (consumer/issues.py)."""

    count: int
    lines: list[int]  # the first few
    example: str  # the first: "raw → cleaned"


class PartRows(msgspec.Struct, array_like=True):
    """One part of a multi-part file: its data rows and its lines (numbered through the
    parts in order, as if they were one file, each part's header included)."""

    rows_read: int
    first_line: int  # its header
    last_line: int


class End(msgspec.Struct, tag="end"):
    rows_read: int
    rows_valid: int
    rows_rejected: int
    inflated_bytes: int
    fast_rows: int = 0  # rows taken by the fast path (consumer/fastpath.py)
    unchanged: int = 0  # rows recognised as stored (recognising runs only)
    gone: list[int] = []  # row hashes of stored products the file no longer holds
    fresh: int = -1  # rows staged for skus not stored live (-1: not known, staged path)
    known_rows: int = 0  # stored products the worker knew
    known_bytes: int = 0  # the memory they took (consumer/known.py)
    timings_ms: dict[str, int] = {}  # the worker's own: known (read + sorted), cpu, wall
    # The feed's hash set changed (or none was stored): its new set is the pairs of the
    # batches, then the stored ones that stay, in the ``kept_parts`` Kept frames that
    # follow this one (WorkerConfig.keep_set).
    set_changed: bool = False
    kept_parts: int = 0
    encoding: str = ""  # the file's encoding as decoded (for ``auto``, the one found)
    cleaned: dict[str, Cleaned] = {}  # per column, by the slow path (the fast one changes none)
    # Of a multi-part file (WorkerConfig.parts), each part's rows read and line range.
    parts: list[PartRows] = []


class Kept(msgspec.Struct, tag="kept"):
    """A part of the stored set that stays (packed pairs), after End."""

    pairs: bytes


class Fatal(msgspec.Struct, tag="fatal"):
    code: str
    message: str
    details: dict[str, Any] = {}


Frame = Header | Batch | End | Kept | Fatal
LENGTH = struct.Struct(">I")
encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Frame)


def pack(frame: Frame) -> bytes:
    body = encoder.encode(frame)
    return LENGTH.pack(len(body)) + body


class WorkerConfig(msgspec.Struct, frozen=True):
    delimiter: str = ","
    encoding: str = "utf-8"  # consumer/transcode.py
    columns: dict[str, str] = {}  # the feed's header mapping (consumer/validate.py)
    unknown_columns: str = "keep"  # keep, ignore or reject
    # Recognise stored rows: stdin starts with the feed's stored hashes (its packed hash
    # set after a SET_SIGNATURE chunk, or a binary COPY; as length-prefixed chunks ending
    # with an empty one), and the worker rejects duplicates.
    recognise: bool = False
    # Keep the feed's packed hash set ("" no, else the run's mode: upsert or snapshot), and
    # whether one is stored (the stored hashes then come as that set).
    keep_set: str = ""
    set_stored: bool = False
    # Rows go straight into products: each COPY line ends with this (",feed,job") instead
    # of its line number.
    direct_tail: str = ""
    fast_path: bool = True
    # A block the fast path refuses is halved, and each half tries again, down to pieces of
    # this many lines: a doubtful line then costs the slow path (several times the fast
    # path's time a row) a few dozen lines, not the whole block (about 6,000 lines).
    min_split_lines: int = 64
    read_bytes: int = 1024 * 1024  # stdin read size (tests use small ones: many blocks)
    batch_rows: int = 5000
    max_inflated_bytes: int = 20 * 1024**3
    max_inflate_ratio: int = 200
    # A multi-part file: this many parts, each as length-prefixed chunks ending with an
    # empty one (0: one file, its bytes as they are until stdin closes). Each part has its
    # header; every part's must be the first one's.
    parts: int = 0
