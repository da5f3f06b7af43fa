"""Command line: ``python -m service [gateway|migrate|create-api-key|dev|...]`` (``--help``)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

import asyncpg

from service.cli import admin, embedded_s3
from service.core.boot import refuse, settings_or_exit
from service.core.bus import delete_topology
from service.core.db import UNREACHABLE, database_name, drop_database, ensure_database
from service.core.logs import get_logger
from service.core.migrate import migrate
from service.core.s3_access import normalise_prefix
from service.core.settings import Settings
from service.core.store import keys as keys_store
from service.core.store import s3_prefixes

DEMO_KEY = "demo-secret-key"


async def _migrate(settings: Settings) -> None:
    await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def _add_key(settings: Settings, tenant: str, key: str) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await keys_store.add_key(conn, tenant, key)
    finally:
        await conn.close()


async def _s3_prefix(settings: Settings, tenant: str, prefix: str, *, allow: bool) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            tenant_id = await keys_store.ensure_tenant(conn, tenant)
            if allow:
                await s3_prefixes.allow(conn, tenant_id, prefix)
                return True
            return await s3_prefixes.revoke(conn, tenant_id, prefix)
    finally:
        await conn.close()


def gateway_main() -> None:
    from aiohttp import web

    from service.gateway.app import ON_FATAL, create_app

    settings = settings_or_exit()
    app = create_app(settings)
    app[ON_FATAL] = lambda: os.kill(os.getpid(), signal.SIGTERM)
    get_logger("service").info("gateway_starting", host=settings.http_host, port=settings.http_port)
    try:
        web.run_app(
            app,
            host=settings.http_host,
            port=settings.http_port,
            access_log=None,
            print=None,
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        _http_port_taken(settings)


def _http_port_taken(settings: Settings) -> NoReturn:
    refuse(
        f"port {settings.http_port} on {settings.http_host} is taken (HTTP_PORT): stop what"
        " holds it, or set HTTP_PORT to a free port"
    )


def dev(settings: Settings) -> int:
    """``make run``: embedded S3 (unless S3_ENDPOINT_URL is set), migrations, a demo key,
    then the gateway and a consumer as children; Ctrl-C stops them all."""
    log = get_logger("service.dev")
    env = dict(os.environ)
    moto = None
    saved_objects = Path(settings.dev_data_dir) / "s3"
    endpoint = f"http://127.0.0.1:{settings.embedded_s3_port}"
    if embedded_s3.port_open(settings.http_host, settings.http_port):
        _http_port_taken(settings)
    pid_file = Path(settings.dev_data_dir) / "embedded-s3.pid"
    if not settings.s3_endpoint_url:
        if embedded_s3.stop_leftover(pid_file, settings.embedded_s3_port):
            log.warning("embedded_s3_leftover_stopped", port=settings.embedded_s3_port)
        try:
            moto = embedded_s3.start(settings.embedded_s3_port, pid_file=pid_file)
        except RuntimeError as exc:
            refuse(str(exc))
        env["S3_ENDPOINT_URL"] = endpoint
        restored = embedded_s3.restore(endpoint, saved_objects)
        log.info("embedded_s3_started", endpoint=endpoint, objects_restored=restored)
    children: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(_migrate(settings))
        key = settings.demo_api_key or DEMO_KEY
        asyncio.run(_add_key(settings, "demo", key))
        url = f"http://{settings.http_host}:{settings.http_port}"
        log.info("dev_stack_starting", url=url, demo_api_key=key, data_dir=settings.dev_data_dir)
        if sys.stderr.isatty():  # a person at a terminal; logs stay JSON lines
            print(
                f"\nfeedjobs is starting on {url}\n"
                f"demo tenant API key: {key}   (development only)\n"
                f"  curl -H 'x-api-key: {key}' {url}/jobs\n"
                "Ctrl-C stops everything (files are kept in"
                f" {settings.dev_data_dir}/; make clean-data forgets them)\n",
                file=sys.stderr,
                flush=True,
            )
        children.append(subprocess.Popen([sys.executable, "-m", "service", "gateway"], env=env))
        children.append(subprocess.Popen([sys.executable, "-m", "consumer"], env=env))
        stopping = False

        def stop(_sig: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(settings.shutdown_grace_seconds + 5)
            except subprocess.TimeoutExpired:
                child.kill()
        if moto is not None:
            try:
                saved = embedded_s3.save(endpoint, saved_objects)
                log.info("embedded_s3_saved", objects=saved, folder=str(saved_objects))
            finally:
                embedded_s3.stop(moto)
                pid_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("gateway", help="serve the HTTP API (default)")
    sub.add_parser("migrate", help="create the database if missing and apply migrations")
    key = sub.add_parser("create-api-key", help="create an API key for a tenant, print it once")
    key.add_argument("--tenant", required=True)
    key.add_argument("--key", help="use this key instead of a random one (tests, demos)")
    sub.add_parser("dev", help="make run: embedded S3, migrations, demo key, gateway + consumer")
    reset = sub.add_parser(
        "dev-reset", help="make clean-data: drop and recreate the database (demo data)"
    )
    reset.add_argument("--yes", action="store_true", help="really drop DATABASE_URL's database")
    for verb, text in (
        ("allow-s3-prefix", "let a tenant register s3_uri objects under a prefix"),
        ("revoke-s3-prefix", "take such a prefix back (its feeds then fail FILE_NOT_FOUND)"),
    ):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("--tenant", required=True)
        cmd.add_argument("prefix", help="s3://bucket/ or s3://bucket/some/path/")
    operator = admin.add_commands(sub)
    args = parser.parse_args()
    if args.command in (None, "gateway"):
        gateway_main()
        return
    settings = settings_or_exit()
    try:
        _command(args, settings, operator)
    except UNREACHABLE as exc:
        where = urllib.parse.urlsplit(settings.database_url)
        refuse(
            f"cannot reach PostgreSQL at {where.hostname}:{where.port or 5432} (DATABASE_URL,"
            f" read from this shell's environment like every setting): {exc}"
        )


def _command(args: argparse.Namespace, settings: Settings, operator: dict[str, Any]) -> None:
    if args.command in operator:
        raise SystemExit(asyncio.run(operator[args.command](settings, args)))
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "create-api-key":
        asyncio.run(_migrate(settings))
        new = args.key or keys_store.new_key()
        if not asyncio.run(_add_key(settings, args.tenant, new)):
            # Only a given --key can exist already: re-running a set-up step is fine.
            print("that key exists already", file=sys.stderr)
            return
        print(new)
    elif args.command == "dev":
        raise SystemExit(dev(settings))
    elif args.command == "dev-reset":
        if not args.yes:
            print("feedjobs: dev-reset drops DATABASE_URL's database; add --yes", file=sys.stderr)
            raise SystemExit(2)
        asyncio.run(drop_database(settings.database_url))
        asyncio.run(_migrate(settings))
        print(f"database {database_name(settings.database_url)} is empty again")
        try:  # the demo's queues too, dead letters included (declared again at start)
            asyncio.run(delete_topology(settings.amqp_url, settings.amqp_prefix))
            print(f"queues and exchanges of AMQP_PREFIX {settings.amqp_prefix!r} deleted")
        except Exception as exc:
            print(
                f"feedjobs: RabbitMQ not reachable ({exc}); its queues were kept", file=sys.stderr
            )
    elif args.command in ("allow-s3-prefix", "revoke-s3-prefix"):
        try:
            prefix = normalise_prefix(args.prefix)
        except ValueError as exc:
            print(f"feedjobs: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        asyncio.run(_migrate(settings))
        allow = args.command == "allow-s3-prefix"
        if not asyncio.run(_s3_prefix(settings, args.tenant, prefix, allow=allow)):
            print(f"tenant {args.tenant} had no prefix {prefix}", file=sys.stderr)
            raise SystemExit(1)
        print(f"{'allowed' if allow else 'revoked'}: tenant {args.tenant} {prefix}")


if __name__ == "__main__":
    main()
