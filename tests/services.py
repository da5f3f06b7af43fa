"""Which PostgreSQL, RabbitMQ and S3 the suite talks to (``TEST_SERVICES``).

- ``local`` (default): the services of this machine, at DATABASE_URL / AMQP_URL (defaults
  127.0.0.1), and the embedded moto S3 server (or S3_ENDPOINT_URL).
- ``containers``: PostgreSQL 15, RabbitMQ 3.13 and MinIO started with testcontainers for the
  session; needs a Docker engine, and refuses clearly without one (never a silent skip).
"""

from __future__ import annotations

import atexit
import urllib.parse
from collections.abc import Mapping, MutableMapping
from pathlib import Path

CHOICES = ("local", "containers")


def selected(environ: Mapping[str, str]) -> str:
    choice = environ.get("TEST_SERVICES", "") or "local"
    if choice not in CHOICES:
        raise ValueError(f"TEST_SERVICES must be one of {', '.join(CHOICES)}, not {choice!r}")
    return choice


def docker_available(environ: Mapping[str, str]) -> bool:
    """Whether a Docker engine answers where testcontainers would look for one."""
    host = environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return True  # a TCP engine: let testcontainers find out
    socket_path = Path(urllib.parse.urlsplit(host).path if host else "/var/run/docker.sock")
    if not socket_path.exists():
        return False
    try:
        import docker

        docker.DockerClient(base_url=f"unix://{socket_path}").ping()
    except Exception:
        return False
    return True


def start_containers() -> dict[str, str]:
    """Start the three services; the environment the suite's settings are read from."""
    from testcontainers.community.minio import MinioContainer
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    postgres = PostgresContainer("postgres:15", username="postgres", dbname="feedjobs").start()
    rabbit = RabbitMqContainer("rabbitmq:3.13").start()
    minio = MinioContainer().start()
    for container in (postgres, rabbit, minio):
        atexit.register(container.stop)
    params = rabbit.get_connection_params()
    creds = params.credentials
    minio_cfg = minio.get_config()
    return {
        "DATABASE_URL": postgres.get_connection_url(driver=None),
        "AMQP_URL": f"amqp://{creds.username}:{creds.password}@{params.host}:{params.port}/",
        "S3_ENDPOINT_URL": f"http://{minio_cfg['endpoint']}",
        "AWS_ACCESS_KEY_ID": minio_cfg["access_key"],
        "AWS_SECRET_ACCESS_KEY": minio_cfg["secret_key"],
    }


def prepare(environ: MutableMapping[str, str]) -> str:
    """Called once before the suite reads its settings: starts containers when asked."""
    choice = selected(environ)
    if choice == "containers":
        if not docker_available(environ):
            raise RuntimeError(
                "TEST_SERVICES=containers needs a Docker engine, and none answers here"
                " (DOCKER_HOST or /var/run/docker.sock); run without it to use local services"
            )
        environ.update(start_containers())
    return choice
