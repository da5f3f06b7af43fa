"""Every line on stdout is one JSON object, ours and the libraries' alike."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from service.core.logs import configure_logging, get_logger
from service.core.settings import load_settings

configure_logging(load_settings({}))
get_logger("t").info("run_started", job_id="JV00001", obj=object())
logging.getLogger("aiormq.connection").error("error when creating transport: %s", "refused")
logging.getLogger("aiormq.connection").warning("Cancelling cause reader exited abnormally")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("aiohttp.server").exception("Error handling request")
    get_logger("t").exception("run_crashed", job_id="JV00001")
"""


def test_every_stdout_line_is_json_with_event_level_and_time():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    # A refused connection is raised to our reconnect loop, which logs it as a warning:
    # the library's own ERROR line for it is dropped (service/core/logs.py).
    assert [e["event"] for e in lines] == [
        "run_started",
        "Cancelling cause reader exited abnormally",
        "Error handling request",
        "run_crashed",
    ]
    assert all({"event", "level", "ts"} <= e.keys() for e in lines)
    assert lines[0]["job_id"] == "JV00001" and lines[1]["logger"] == "aiormq.connection"
    assert (
        "ZeroDivisionError" in lines[2]["exception"]
        and "ZeroDivisionError" in lines[3]["exception"]
    )


def test_the_access_line_is_the_json_object_structlog_would_write():
    import io
    import re

    from service.core.logs import AccessLog

    access = AccessLog()
    assert access.write({"event": "http_request"}) is False  # off: structlog writes it
    out = io.BytesIO()
    access.configure(out)
    fields = {"event": "http_request", "status": 200, "request_id": "r-1", "job_id": "JV1"}
    assert access.write(fields) is True
    line = json.loads(out.getvalue())
    assert line["event"] == "http_request" and line["job_id"] == "JV1"
    assert line["level"] == "info" and line["logger"] == "service.http"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["ts"])
    assert out.getvalue().endswith(b"}\n") and out.getvalue().count(b"\n") == 1


async def test_an_access_line_is_flushed_soon_even_when_the_gateway_is_quiet(tmp_path):
    import asyncio

    from service.core.logs import AccessLog

    access = AccessLog()
    path = tmp_path / "out.log"
    with open(path, "wb") as out:  # noqa: ASYNC230 (a buffered stream, as stdout is)
        access.configure(out)
        access.write({"event": "http_request", "status": 200})
        access.write({"event": "http_request", "status": 304})
        assert path.read_bytes() == b""  # still in the buffer: one write for a batch
        await asyncio.sleep(access.FLUSH_AFTER * 4)
        lines = path.read_bytes().splitlines()
    assert [json.loads(line)["status"] for line in lines] == [200, 304]
