"""A RabbitMQ cluster of three nodes that a test starts, owns and removes.

Each node has its own name, AMQP and distribution ports, config file and data folders
under one temporary folder; the machine's own broker (``rabbit@localhost``) is never
addressed. The nodes share the machine's Erlang cookie (the server and ``rabbitmqctl``
both run as the ``rabbitmq`` user), which is what lets them join each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.tools import free_port, run


@dataclass
class Node:
    name: str  # e.g. fjct1a2b3c@localhost
    port: int
    dist_port: int
    home: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
        }

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return run(["rabbitmqctl", "-n", self.name, *args], env=self.env(), timeout=timeout)

    def os_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """A crash: SIGKILL to the node's Erlang VM, no goodbye to its peers or clients."""
        pid = self.os_pid()
        assert pid is not None, f"{self.name} has no pid file"
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not _alive(pid):
                return
            time.sleep(0.05)

    def start(self) -> None:
        self.pid_file.unlink(missing_ok=True)  # `rabbitmqctl wait` must not read a dead pid
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self.env(), check=True, capture_output=True
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=30)
        pid = self.os_pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie is not: a killed node's VM may wait a while to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _vms_under(root: Path) -> list[int]:
    """Erlang VMs whose data folder is under ``root``: a node whose start failed half-way
    has no pid file, but it must not outlive its test."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"RABBITMQ_MNESIA_BASE={root}/".encode() in environ:
            found.append(int(entry.name))
    return found


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root = Path(tempfile.mkdtemp(prefix="feedjobs-rabbit-"))
        os.chmod(self.root, 0o755)
        self.nodes = [
            Node(f"fjct{tag}n{i}@localhost", free_port(), free_port(), self.root / f"n{i}")
            for i in range(1, size + 1)
        ]

    @property
    def urls(self) -> str:
        """What AMQP_URL holds for the whole cluster."""
        return ",".join(n.url for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.home.mkdir()
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{node.port}\nloopback_users = none\n"
            )
            (node.home / "enabled_plugins").write_text("[].\n")
        shutil.chown(self.root, "rabbitmq", "rabbitmq")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.root)], check=True)
        for node in self.nodes:  # the VMs boot side by side
            node.start()
        for node in self.nodes:  # its pid file first, then its boot
            node.ctl("wait", str(node.pid_file), "--timeout", "120", timeout=130)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app", timeout=120)
        running = json.loads(first.ctl("cluster_status", "--formatter", "json"))
        assert sorted(running["running_nodes"]) == sorted(n.name for n in self.nodes), running

    def leader_of(self, queue: str) -> Node:
        """The node that leads the quorum queue ``queue`` now."""
        for node in self.live():
            rows = json.loads(
                node.ctl("list_queues", "name", "leader", "--formatter", "json", timeout=30)
            )
            for row in rows:
                if row["name"] == queue:
                    return next(n for n in self.nodes if n.name == row["leader"])
        raise AssertionError(f"no live node knows queue {queue}")

    def live(self) -> list[Node]:
        return [n for n in self.nodes if (pid := n.os_pid()) is not None and _alive(pid)]

    def nodes_of(self, connection_name: str) -> list[Node]:
        """The nodes that hold a connection whose name starts with ``connection_name``."""
        rows = json.loads(
            self.live()[0].ctl(
                "list_connections", "port", "client_properties", "--formatter", "json"
            )
        )
        ports = set()
        for row in rows:
            props = {p[0]: p[2] for p in row["client_properties"]}
            if str(props.get("connection_name", "")).startswith(connection_name):
                ports.add(row["port"])
        return [n for n in self.nodes if n.port in ports]

    def restart(self, node: Node) -> None:
        """Start a killed node again; it rejoins the cluster."""
        node.start()
        node.ctl("wait", str(node.pid_file), "--timeout", "120", timeout=130)

    def remove(self) -> None:
        for node in self.nodes:
            node.stop()
        for pid in _vms_under(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def rabbit_cluster(size: int = 3) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
