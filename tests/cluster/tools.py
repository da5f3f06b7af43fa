"""What the cluster tests share: free loopback ports, and commands that must succeed."""

from __future__ import annotations

import socket
import subprocess

_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and this process has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def run(args: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """The command's output; a failure raises with what it said."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stdout}\n{done.stderr}")
    return done.stdout
