"""The parse worker: a child process that turns a CSV on stdin into frames on stdout.

``python -m consumer.parse_worker '<WorkerConfig JSON>'``. It reads (and un-gzips) the
feed, validates every row, and writes clean rows as CSV ready for COPY, plus rejections,
in batches. Running it in its own process keeps the consumer's event loop free for
heartbeats, lease renewals and acks, and uses the second core.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

import msgspec

from consumer.csvread import FIELD_LIMIT, LineSource, RecordReader
from consumer.fastpath import FastPath
from consumer.frames import Batch, End, Fatal, Frame, Header, WorkerConfig, pack
from consumer.inflate import DecompressionLimit, Inflater
from consumer.rules import RowFault
from consumer.validate import CopyWriter, HeaderInfo, RowValidator

FAULT_MESSAGES = {
    "INVALID_ENCODING": "the row holds bytes that are not UTF-8",
    "INVALID_CHARACTER": "the row holds a NUL byte",
    "FIELD_TOO_LARGE": f"a field is larger than {FIELD_LIMIT} bytes",
    "UNTERMINATED_QUOTE": "a quoted field is never closed: it runs to the end of the file",
}


def process(stdin: BinaryIO, out: BinaryIO, cfg: WorkerConfig) -> None:
    def emit(frame: Frame) -> None:
        out.write(pack(frame))

    def chunks() -> Iterator[bytes]:
        while True:
            data = stdin.read(cfg.read_bytes)
            if not data:
                return
            yield data

    inflater = Inflater(chunks(), cfg.max_inflated_bytes, cfg.max_inflate_ratio)
    try:
        source = LineSource(inflater)
        reader = RecordReader(source, cfg.delimiter)
        first = next(iter(reader), None)
        if first is None:
            emit(End(0, 0, 0, inflater.inflated))
            return
        if first.fields is None:
            emit(
                Fatal(
                    "INVALID_HEADER",
                    f"The header line could not be read: "
                    f"{FAULT_MESSAGES.get(first.fault or '', first.fault)}",
                    {"line": first.line},
                )
            )
            return
        info = HeaderInfo(first.fields)
        emit(Header(ignored=info.ignored, missing=info.missing, columns=info.stage_columns))
        if info.missing:
            return
        end = _rows(reader, source, info, cfg, emit)
        end.inflated_bytes = inflater.inflated
        emit(end)
    except DecompressionLimit as exc:
        emit(Fatal("DECOMPRESSION_LIMIT", exc.message, exc.details))


def _rows(
    reader: RecordReader,
    source: LineSource,
    info: HeaderInfo,
    cfg: WorkerConfig,
    emit: Callable[[Frame], None],
) -> End:
    """Every data row: whole clean blocks by the fast path, the rest record by record."""
    validator = RowValidator(info)
    writer = CopyWriter(info, cfg.delimiter)
    fast = FastPath(info, cfg.delimiter) if cfg.fast_path and not info.wide else None
    parts: list[str] = []
    errors: list[tuple[int, str | None, str, str, str]] = []
    pending = valid = rejected = rows_read = fast_rows = 0
    batch = cfg.batch_rows
    while True:
        rec = reader.next_record()
        if rec is None:
            if reader.at_end():
                break
            # Idle between records: the next block goes to the fast path if it is all clean.
            block = source.next_block()
            if block is None:
                break
            taken = fast.try_block(block, reader.lineno + 1) if fast is not None else None
            if taken is None:
                reader.push(block)
                continue
            text, count = taken
            reader.lineno += count
            rows_read += count
            valid += count
            pending += count
            fast_rows += count
            parts.append(text)
        else:
            rows_read += 1
            if rec.fields is None:
                fault = rec.fault or "ROW_LENGTH"
                errors.append((rec.line, None, fault, FAULT_MESSAGES.get(fault, fault), rec.raw))
                rejected += 1
            else:
                try:
                    values = validator.clean(rec.fields)
                except RowFault as f:
                    errors.append((rec.line, f.column, f.code, f.message, reader.raw_of_last()))
                    rejected += 1
                else:
                    parts.append(writer.line(rec.line, values))
                    valid += 1
                    pending += 1
        if pending + len(errors) >= batch:
            emit(Batch("".join(parts).encode(), pending, rows_read, errors))
            parts = []
            errors = []
            pending = 0
    if pending or errors:
        emit(Batch("".join(parts).encode(), pending, rows_read, errors))
    return End(rows_read, valid, rejected, 0, fast_rows)


def main() -> None:
    cfg = WorkerConfig()
    if len(sys.argv) > 1:
        cfg = msgspec.json.decode(sys.argv[1], type=WorkerConfig)
    try:
        process(sys.stdin.buffer, sys.stdout.buffer, cfg)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the consumer stopped listening (cancel, failure): just go
        sys.stderr.close()


if __name__ == "__main__":
    main()
