"""moto's standalone S3 server as a child process: the embedded S3 of development and tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def start(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start moto's server on ``host:port`` and wait until it answers."""
    if port_open(host, port):
        raise RuntimeError(f"port {port} is taken: set EMBEDDED_S3_PORT or S3_ENDPOINT_URL")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
