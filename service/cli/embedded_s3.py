"""moto's standalone S3 server as a child process: the embedded S3 of development and tests.

moto keeps objects in memory; ``make run`` saves them to its data folder on exit and loads
them back at the next start (:func:`save`, :func:`restore`), so earlier feeds still run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it ends, however it
    ends (killed, crashed, a shutdown that overran), so no server outlives ``make run``."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_leftover(pid_file: Path, port: int) -> bool:
    """An embedded server an earlier ``make run`` left behind (its pid file names a live moto
    server): stopped; True if there was one."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    if b"moto.server" not in cmdline or str(port).encode() not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True


def start(
    port: int, host: str = "127.0.0.1", timeout: float = 30.0, pid_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start moto's server on ``host:port`` and wait until it answers (its pid written to
    ``pid_file``, so that a leftover can be recognised by the next start)."""
    if port_open(host, port):
        raise RuntimeError(
            f"port {port} is taken (EMBEDDED_S3_PORT): stop what holds it, or set"
            " EMBEDDED_S3_PORT to a free port, or S3_ENDPOINT_URL to an S3 server of your own"
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us, not it: its objects are saved first
        preexec_fn=_die_with_parent,
    )
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded S3 server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the embedded S3 server did not start in time")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def client(endpoint: str) -> Any:
    import boto3  # comes with moto's server, the only user of this module

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def save(endpoint: str, folder: Path) -> int:
    """Write every object of the embedded server to ``folder/<bucket>/<key>`` (the server
    keeps them in memory only); returns how many. The folder then holds exactly them."""
    s3 = client(endpoint)
    staging = folder.with_name(folder.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    count = 0
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        (staging / name).mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                target = staging / name / obj["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(name, obj["Key"], str(target))
                count += 1
    shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)
    return count


def restore(endpoint: str, folder: Path) -> int:
    """Load what :func:`save` wrote back into a fresh embedded server; returns how many."""
    if not folder.is_dir():
        return 0
    s3 = client(endpoint)
    count = 0
    for bucket_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        s3.create_bucket(Bucket=bucket_dir.name)
        for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket_dir.name, path.relative_to(bucket_dir).as_posix())
            count += 1
    return count
