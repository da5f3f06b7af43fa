"""The parse worker: a child process that turns a CSV on stdin into frames on stdout.

``python -m consumer.parse_worker '<WorkerConfig JSON>'``. It reads (and un-gzips) the
feed, validates every row, and writes clean rows as CSV ready for COPY, plus rejections,
in batches. Running it in its own process keeps the consumer's event loop free for
heartbeats, lease renewals and acks, and uses the second core.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

from consumer.csvread import FIELD_LIMIT, RecordReader
from consumer.frames import Batch, End, Fatal, Frame, Header, WorkerConfig, pack
from consumer.inflate import DecompressionLimit, Inflater
from consumer.rules import RowFault
from consumer.validate import HeaderInfo, RowValidator, copy_line

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
            data = stdin.read(1024 * 1024)
            if not data:
                return
            yield data

    inflater = Inflater(chunks(), cfg.max_inflated_bytes, cfg.max_inflate_ratio)
    try:
        records = iter(RecordReader(inflater, cfg.delimiter))
        first = next(records, None)
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
        emit(Header(ignored=info.ignored, missing=info.missing))
        if info.missing:
            return
        validator = RowValidator(info)
        lines: list[str] = []
        errors: list[tuple[int, str | None, str, str, str]] = []
        pending = valid = rejected = rows_read = 0
        batch = cfg.batch_rows
        for rec in records:
            rows_read += 1
            if rec.fields is None:
                fault = rec.fault or "ROW_LENGTH"
                errors.append((rec.line, None, fault, FAULT_MESSAGES.get(fault, fault), rec.raw))
                rejected += 1
            else:
                try:
                    values = validator.clean(rec.fields)
                except RowFault as f:
                    errors.append((rec.line, f.column, f.code, f.message, rec.raw))
                    rejected += 1
                else:
                    lines.append(copy_line(rec.line, values))
                    valid += 1
                    pending += 1
            if pending + len(errors) >= batch:
                emit(Batch("".join(lines).encode(), pending, rows_read, errors))
                lines = []
                errors = []
                pending = 0
        if pending or errors:
            emit(Batch("".join(lines).encode(), pending, rows_read, errors))
        emit(End(rows_read, valid, rejected, inflater.inflated))
    except DecompressionLimit as exc:
        emit(Fatal("DECOMPRESSION_LIMIT", exc.message, exc.details))


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
