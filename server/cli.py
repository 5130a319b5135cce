"""``corral-server``: run the server, or print the registration command of this data dir."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from server.config import Settings
from server.store import StoreUnavailable
from shared.logformat import formatter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral-server",
        description="Run the Corral server (Rancher 1.x API, dashboard, agent endpoint).")
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "registration-command"],
                        help="serve (default), or print the command that registers a host")
    parser.add_argument("--host", help="address to listen on (env CORRAL_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (env CORRAL_PORT, 8080)")
    parser.add_argument("--data-dir", help="where the database and keys live "
                                           "(env CORRAL_DATA_DIR, /var/lib/corral-server)")
    parser.add_argument("--public-url", help="URL hosts reach this server at "
                                             "(env CORRAL_PUBLIC_URL)")
    parser.add_argument("--db", help="database: postgresql://USER:PASSWORD@HOST:PORT/DB or "
                                     "sqlite:///PATH (env CORRAL_DATABASE_URL; default SQLite "
                                     "in the data dir)")
    parser.add_argument("--log-level", default=os.environ.get("CORRAL_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    return parser


def _setup_logging(level: str, kind: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _print_registration(settings: Settings) -> int:
    from server.bootstrap import default_token, public_origin
    from server.resources.credentials import registration_commands, registration_url
    from server.security import ServerKey
    from server.store.sql import SqlStore
    from server.store.urls import sqlite_url

    if not (settings.data_dir / "server.key").exists():
        print(f"corral-server: no server data in {settings.data_dir}", file=sys.stderr)
        return 1
    try:
        store = await SqlStore.open(settings.database_url or sqlite_url(settings.data_dir),
                                    owner=False)
    except StoreUnavailable as exc:
        print(f"corral-server: {exc}", file=sys.stderr)
        return 1
    try:
        token = await default_token(store, ServerKey.load_or_create(settings.data_dir))
    finally:
        await store.close()
    if token is None:
        print("corral-server: the Default environment has no active registration token",
              file=sys.stderr)
        return 1
    print(registration_commands(registration_url(public_origin(settings), token))["command"])
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        _setup_logging(args.log_level, args.log_format)
        settings = Settings.from_sources(
            {"host": args.host, "port": args.port, "data_dir": args.data_dir,
             "public_url": args.public_url, "database_url": args.db}, os.environ)
    except ValueError as exc:
        print(f"corral-server: {exc}", file=sys.stderr)
        sys.exit(2)
    except StoreUnavailable as exc:
        print(f"corral-server: {exc}", file=sys.stderr)
        sys.exit(1)
    if args.command == "registration-command":
        sys.exit(asyncio.run(_print_registration(settings)))
    from server.app import create_app
    from server.edge import serve

    try:
        asyncio.run(serve(create_app(settings), settings))
    except StoreUnavailable as exc:
        print(f"corral-server: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"corral-server: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
