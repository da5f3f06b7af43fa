"""A PostgreSQL primary and its streaming hot standby that a test creates, owns and removes:
their own folders, ports and socket directory, run as the ``postgres`` user (``initdb``
refuses root). The machine's own PostgreSQL is never touched."""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.cluster.tools import free_port, run

BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])


def _as_postgres(*args: str, timeout: float = 120) -> str:
    return run(["runuser", "-u", "postgres", "--", *args], timeout=timeout)


class Server:
    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: a crash (no checkpoint, connections dropped)."""
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def running(self) -> bool:
        done = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "status",
            ],
            capture_output=True,
        )
        return done.returncode == 0


class StandbyPair:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="feedjobs-pg-"))
        self.root.chmod(0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self.primary = Server(self.root / "primary", free_port())
        self.standby = Server(self.root / "standby", free_port())

    def start(self) -> None:
        p = self.primary
        _as_postgres(str(BIN / "initdb"), "-D", str(p.data), "-A", "trust", "-U", "postgres")
        with open(p.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {p.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nwal_level = replica\n"
                "max_wal_senders = 5\nfsync = off\nhot_standby_feedback = on\n"
            )
        with open(p.data / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        p.start()
        _as_postgres(
            str(BIN / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
            "-D", str(self.standby.data), "-R",
        )  # fmt: skip
        with open(self.standby.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.standby.port}\n")
        self.standby.start()

    def remove(self) -> None:
        for server in (self.standby, self.primary):
            if server.data.exists() and server.running():
                with contextlib.suppress(Exception):
                    server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def standby_pair() -> Iterator[StandbyPair]:
    pair = StandbyPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.remove()
