"""The parse worker: a child process that turns a CSV on stdin into frames on stdout.

``python -m consumer.parse_worker``, then on stdin: its ``WorkerConfig`` (length-prefixed
JSON), the feed's stored
hashes (when it recognises rows), then the file (un-gzipping it), validates every row,
recognises the unchanged ones, and writes the rest as CSV ready for COPY, plus rejections,
in batches. Running it in its own process keeps the consumer's event loop free for
heartbeats, lease renewals and acks, and uses the second core.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import msgspec

from consumer.csvread import FIELD_LIMIT, LineSource, Record, RecordReader
from consumer.fastpath import FastPath
from consumer.frames import (
    Batch,
    Cleaned,
    End,
    Fatal,
    Frame,
    Header,
    Kept,
    PartRows,
    WorkerConfig,
    pack,
)
from consumer.inflate import DecompressionLimit, Inflater
from consumer.known import KnownRows
from consumer.recognise import ErrorRow, Recogniser
from consumer.transcode import EncodingFault, transcode
from consumer.validate import HeaderInfo, RowValidator
from service.core.product import canonical_line, row_hash
from service.core.rules import RowFault

FAULT_MESSAGES = {
    "INVALID_ENCODING": "the row holds bytes that are not UTF-8: if the file is in another"
    " encoding, set the feed's encoding (windows-1252, iso-8859-1, utf-16, or auto)",
    "INVALID_CHARACTER": "the row holds a NUL byte",
    "FIELD_TOO_LARGE": f"a field is larger than {FIELD_LIMIT} bytes",
    "UNTERMINATED_QUOTE": "a quoted field is never closed: it runs to the end of the file",
}


def read_known(stdin: BinaryIO) -> KnownRows:
    """The stored hashes the consumer sends ahead of the file (see WorkerConfig)."""

    def chunks() -> Iterator[bytes]:
        while True:
            size = int.from_bytes(_read_exactly(stdin, 4), "big")
            if not size:
                return
            yield _read_exactly(stdin, size)

    return KnownRows.from_chunks(chunks())


def _read_exactly(stdin: BinaryIO, size: int) -> bytes:
    data = stdin.read(size)
    if len(data) != size:
        raise EOFError("the consumer stopped sending")
    return data


def process(stdin: BinaryIO, out: BinaryIO, cfg: WorkerConfig) -> None:
    def emit(frame: Frame) -> None:
        out.write(pack(frame))

    def chunks() -> Iterator[bytes]:
        while True:
            data = stdin.read(cfg.read_bytes)
            if not data:
                return
            yield data

    def part_chunks() -> Iterator[bytes]:
        while size := int.from_bytes(_read_exactly(stdin, 4), "big"):
            yield _read_exactly(stdin, size)

    started, cpu = time.monotonic(), time.process_time()
    known = read_known(stdin) if cfg.recognise else None
    timings = {"known": round((time.monotonic() - started) * 1000)}
    used = [cfg.encoding]

    def record(encoding: str) -> None:
        used[0] = encoding

    files = [part_chunks for _ in range(cfg.parts)] if cfg.parts else [chunks]
    state = _Parts(known, cfg, emit)
    try:
        for number, stream in enumerate(files, 1):
            chunked = stream()
            inflater = Inflater(chunked, cfg.max_inflated_bytes, cfg.max_inflate_ratio)
            source = LineSource(transcode(inflater, cfg.encoding, record))
            if not state.part(number, inflater, source):
                return  # a fatal fault, emitted
            if cfg.parts:
                for _ in chunked:  # to its end mark (a gzip stream may end before it)
                    pass
        end = state.end
        end.encoding = used[0]
        if state.rows is None:  # no header anywhere: an empty file
            end.rows_read = 0
            emit(_end(end, Recogniser(known, "", cfg.delimiter), timings, started, cpu))
            return
        _finish(_end(end, state.rows, timings, started, cpu), state.rows, cfg, out)
    except DecompressionLimit as exc:
        emit(Fatal("DECOMPRESSION_LIMIT", exc.message, exc.details))
    except EncodingFault as exc:
        emit(Fatal("INVALID_ENCODING", exc.message, exc.details))


class _Parts:
    """The run through a file, or through each part of a multi-part one in turn: the first
    header read decides the columns, the rows are recognised as one set (a sku in two parts
    is a duplicate), and lines are numbered on through the parts."""

    def __init__(self, known: KnownRows | None, cfg: WorkerConfig, emit: Callable[[Frame], None]):
        self.known = known
        self.cfg = cfg
        self.emit = emit
        self.info: HeaderInfo | None = None
        self.header: list[str] = []
        self.rows: Recogniser | None = None
        self.end = End(0, 0, 0, 0)
        self.lines = 0  # lines of the parts before this one
        self.bytes_before = 0  # their bytes as stored

    def part(self, number: int, inflater: Inflater, source: LineSource) -> bool:
        """Read one part; False after emitting a fatal fault."""
        cfg = self.cfg
        reader = RecordReader(source, cfg.delimiter)
        reader.lineno = self.lines
        first = next(iter(reader), None)
        where = {"part": number} if cfg.parts else {}
        if first is None:  # an empty part: no header, no rows
            self._close(inflater, reader, 0)
            return True
        if first.fields is None:
            self.emit(
                Fatal(
                    "INVALID_HEADER",
                    f"The header line{f' of part {number}' if cfg.parts else ''} could not be"
                    f" read: {FAULT_MESSAGES.get(first.fault or '', first.fault)}",
                    {"line": first.line, **where},
                )
            )
            return False
        if self.info is None:
            self.info = HeaderInfo(first.fields, cfg.columns, cfg.unknown_columns)
            fault = self.info.fault()
            if fault is not None:
                self.emit(Fatal(*fault))
                return False
            self.header = first.fields
            self.emit(
                Header(
                    ignored=self.info.ignored,
                    mapped=self.info.mapped,
                    attributes=[name for _, name in self.info.attributes],
                )
            )
            self.rows = Recogniser(
                self.known,
                cfg.direct_tail,
                cfg.delimiter,
                keep_set=bool(cfg.keep_set),
                attributes=bool(self.info.attributes),
            )
        elif first.fields != self.header:
            self.emit(
                Fatal(
                    "INVALID_HEADER",
                    f"Part {number} has another header than the first part: every part of"
                    " a feed must have the same columns, in the same order",
                    {"line": first.line, "part": number, "expected": self.header[:50],
                     "found": first.fields[:50]},
                )
            )  # fmt: skip
            return False
        reader.give_back()  # the rest of the header's block may take the fast path
        assert self.rows is not None
        before = self.bytes_before

        def parsed() -> int:
            """The file's bytes (as stored) behind the rows read so far."""
            behind = max(source.taken - reader.unread(), 0)
            if inflater.gzip:
                behind = behind * inflater.consumed // max(inflater.inflated, 1)
            return before + behind

        done = _rows(reader, source, self.info, cfg, self.rows, self.emit, parsed)
        self._close(inflater, reader, done.rows_read, first.line)
        end = self.end
        end.rows_read += done.rows_read
        end.rows_valid += done.rows_valid
        end.rows_rejected += done.rows_rejected
        end.fast_rows += done.fast_rows
        for column, seen in done.cleaned.items():
            mine = end.cleaned.setdefault(column, Cleaned(0, [], seen.example))
            mine.count += seen.count
            mine.lines = (mine.lines + seen.lines)[:3]
        return True

    def _close(self, inflater: Inflater, reader: RecordReader, rows: int, first: int = 0) -> None:
        self.end.inflated_bytes += inflater.inflated
        self.bytes_before += inflater.compressed if inflater.gzip else inflater.inflated
        if self.cfg.parts:
            self.end.parts.append(PartRows(rows, first or self.lines + 1, reader.lineno))
        self.lines = max(reader.lineno, self.lines)


def _finish(end: End, rows: Recogniser, cfg: WorkerConfig, out: BinaryIO) -> None:
    """The End frame, then (when the feed's hash set changed) the stored pairs that stay."""
    snapshot = cfg.keep_set == "snapshot"
    end.set_changed = rows.keep_set and (
        not cfg.set_stored or rows.staged > 0 or (snapshot and bool(end.gone))
    )
    if end.set_changed and rows.known is not None:
        end.kept_parts = rows.known.kept_parts()
    out.write(pack(end))
    if end.kept_parts:
        out.flush()  # the End goes now: the consumer merges while the parts are made
        # Read by the consumer after its merge (this waits on the pipe until then).
        for part in rows.kept(snapshot=snapshot):
            out.write(pack(Kept(part)))


def _end(end: End, rows: Recogniser, timings: dict[str, int], started: float, cpu: float) -> End:
    timings["cpu"] = round((time.process_time() - cpu) * 1000)
    timings["wall"] = round((time.monotonic() - started) * 1000)
    end.timings_ms = timings
    end.unchanged = rows.unchanged
    end.rows_valid -= rows.duplicates
    end.rows_rejected += rows.duplicates
    if rows.known is not None:
        end.gone = rows.gone()
        end.fresh = rows.fresh
        end.known_rows = len(rows.known)
        end.known_bytes = rows.known.nbytes + (rows.seen.nbytes if rows.seen else 0)
    return end


def _rows(
    reader: RecordReader,
    source: LineSource,
    info: HeaderInfo,
    cfg: WorkerConfig,
    rows: Recogniser,
    emit: Callable[[Frame], None],
    parsed: Callable[[], int],
) -> End:
    """Every data row: whole clean blocks by the fast path, the rest record by record."""
    validator = RowValidator(info)
    fast = FastPath(info, cfg.delimiter) if cfg.fast_path and not info.wide else None
    known = rows.known
    errors: list[ErrorRow] = []
    cleaned: dict[str, Cleaned] = {}
    valid = rejected = rows_read = fast_rows = 0
    batch = cfg.batch_rows

    def send() -> None:
        nonlocal errors
        staged = rows.staged
        flushed = rows.flush(errors)
        emit(
            Batch(flushed.payload, rows.staged - staged, rows_read, errors, flushed.pairs, parsed())
        )
        errors = []

    while True:
        rec = reader.next_record()
        if rec is None:
            if reader.at_end():
                break
            # Idle between records: the next block goes to the fast path if it is all clean.
            block = source.next_block()
            if block is None:
                break
            taken = fast.take(block, known) if fast is not None else None
            if taken is None:
                halves = _halves(block, cfg.min_split_lines) if fast is not None else None
                if halves is not None:
                    source.give_back(*halves)  # each half tries the fast path again
                else:
                    reader.push(block)
                continue
            count = len(taken.canon)
            rows.add_block(reader.lineno + 1, taken.canon, taken.hashes, taken.stored)
            reader.lineno += count
            rows_read += count
            valid += count
            fast_rows += count
        else:
            rows_read += 1
            if _one_record(rec, validator, reader, rows, errors, cleaned):
                valid += 1
            else:
                rejected += 1
        if rows.pending + len(errors) >= batch:
            send()
    if rows.pending or errors:
        send()
    return End(rows_read, valid, rejected, 0, fast_rows, cleaned=cleaned)


def _halves(block: bytes, min_lines: int) -> tuple[bytes, bytes] | None:
    """The block cut in two at a line break near its middle, or None when it has fewer
    than ``min_lines`` lines (WorkerConfig.min_split_lines)."""
    if block.count(b"\n") < min_lines:
        return None
    cut = block.rfind(b"\n", 0, len(block) // 2) + 1
    if cut <= 0 or cut >= len(block):
        return None
    return block[:cut], block[cut:]


def _one_record(
    rec: Record,
    validator: RowValidator,
    reader: RecordReader,
    rows: Recogniser,
    errors: list[ErrorRow],
    cleaned: dict[str, Cleaned],
) -> bool:
    """Validate one record the fast path did not take: added to ``rows`` (True) or rejected
    into ``errors`` (False)."""
    if rec.fields is None:
        fault = rec.fault or "ROW_LENGTH"
        errors.append((rec.line, None, fault, FAULT_MESSAGES.get(fault, fault), rec.raw))
        return False
    try:
        values, attributes = validator.clean(rec.fields)
    except RowFault as f:
        errors.append((rec.line, f.column, f.code, f.message, reader.raw_of_last()))
        return False
    for column, raw, text in validator.changed(rec.fields, values):
        seen = cleaned.get(column)
        if seen is None:
            cleaned[column] = Cleaned(1, [rec.line], f"{raw[:60]!r} → {text[:60]!r}")
        else:
            seen.count += 1
            if len(seen.lines) < 3:
                seen.lines.append(rec.line)
    canon = canonical_line(values, attributes).encode()
    rows.add_row(rec.line, canon, row_hash(canon))
    return True


def main() -> None:
    # Millions of short-lived strings a run, almost no reference cycles: collect rarely
    # (the default threshold ran a collection every 700 allocations, a third of the CSV
    # parser's time on a wide feed).
    gc.set_threshold(200_000, 50, 50)
    stdin = sys.stdin.buffer
    try:
        # Started ahead of its run (consumer.session.Spawner): the configuration comes first.
        size = int.from_bytes(_read_exactly(stdin, 4), "big")
        cfg = msgspec.json.decode(_read_exactly(stdin, size), type=WorkerConfig)
        process(stdin, sys.stdout.buffer, cfg)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the consumer stopped listening (cancel, failure): just go
        sys.stderr.close()
    except EOFError:  # stdin closed early: a spare nobody took, or a run given up
        return


if __name__ == "__main__":
    main()
