"""What an operator sees when the set-up is off: one line naming the setting, exit status 2,
never a traceback; and an embedded S3 that never outlives ``make run``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli import embedded_s3

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_an_operator_command_without_its_database_says_so_in_one_line():
    down = f"postgresql://postgres@127.0.0.1:{_free_port()}/feedjobs"
    for command in (["jobs"], ["create-api-key", "--tenant", "t"], ["migrate"]):
        done = _run(*command, DATABASE_URL=down)
        assert done.returncode == 2, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "DATABASE_URL" in lines[0], (command, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout


def test_make_run_with_its_port_taken_says_so_in_one_line(tmp_path, settings):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run("dev", HTTP_PORT=str(port), DEV_DATA_DIR=str(tmp_path), timeout=30)
        gateway = _run(  # it binds once PostgreSQL and S3 answer: give it both
            "gateway",
            HTTP_PORT=str(port),
            DATABASE_URL=settings.database_url,
            S3_ENDPOINT_URL=settings.s3_endpoint_url or "",
            S3_BUCKET=settings.s3_bucket,
            AMQP_PREFIX=settings.amqp_prefix,
            timeout=60,
        )
    assert done.returncode == 2 and "HTTP_PORT" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert gateway.returncode == 2, gateway.stderr
    assert gateway.stderr.strip().splitlines()[-1].startswith("feedjobs: port"), gateway.stderr
    assert "Traceback" not in gateway.stderr


def test_the_embedded_s3_dies_with_its_parent(tmp_path):
    port = _free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from service.cli import embedded_s3;"
            f" embedded_s3.start({port}); print('up', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "up"
        assert embedded_s3.port_open("127.0.0.1", port)
        parent.send_signal(signal.SIGKILL)  # no finally, no shutdown: gone
        parent.wait(10)
        deadline = time.monotonic() + 10
        while embedded_s3.port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not embedded_s3.port_open("127.0.0.1", port)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_leftover_embedded_s3_is_recognised_and_stopped(tmp_path):
    port = _free_port()
    pid_file = tmp_path / "embedded-s3.pid"
    server = embedded_s3.start(port, pid_file=pid_file)  # as an earlier make run left it
    try:
        assert not embedded_s3.stop_leftover(tmp_path / "none.pid", port)
        assert embedded_s3.stop_leftover(pid_file, port)
        server.wait(10)
        assert not embedded_s3.port_open("127.0.0.1", port) and not pid_file.exists()
    finally:
        embedded_s3.stop(server)


async def test_clean_data_forgets_the_dead_letters_too(settings):
    """``make clean-data`` (``dev-reset --yes``): the database empty again, and the queues
    of the prefix gone with their messages, dead letters included."""
    import aio_pika

    from service.core.bus import Names, declare_topology

    names = Names(settings.amqp_prefix)
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        await declare_topology(channel, names)
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"job_id": "JV00001"}'), routing_key=names.dead_queue
        )
        dead = await channel.get_queue(names.dead_queue)
        assert (await dead.declare()).message_count == 1
        done = _run(
            "dev-reset",
            "--yes",
            DATABASE_URL=settings.database_url,
            AMQP_PREFIX=settings.amqp_prefix,
        )
        assert done.returncode == 0, done.stderr
        assert "deleted" in done.stdout
        channel = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(names.dead_queue, passive=True)
    finally:
        await conn.close()
