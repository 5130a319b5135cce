"""Database URLs: what ``--db`` accepts, the SQLAlchemy URL behind it, and a printable form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from server.store.interface import StoreUnavailable

SQLITE_FILE = "corral.db"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE}"


def engine_url(raw: str) -> str:
    """The SQLAlchemy async URL for a ``--db`` value, or StoreUnavailable saying what is wrong.

    Accepted: ``postgresql://user:password@host:port/database`` (also ``postgres://`` and
    ``postgresql+asyncpg://``) and ``sqlite:///path`` (also ``sqlite+aiosqlite:///path``).
    """
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreUnavailable(
            f"--db {printable(raw)!r} is not a database URL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:///PATH") from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise StoreUnavailable(f"--db: driver {driver!r} is not supported for PostgreSQL; "
                                   "use postgresql://...")
        if not url.database:
            raise StoreUnavailable("--db: the PostgreSQL URL names no database "
                                   "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)")
        return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if driver not in ("", "aiosqlite"):
            raise StoreUnavailable(f"--db: driver {driver!r} is not supported for SQLite; "
                                   "use sqlite:///PATH")
        if not url.database or url.database == ":memory:":
            raise StoreUnavailable("--db: a SQLite URL needs a file path (sqlite:///PATH)")
        return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise StoreUnavailable(f"--db: {backend!r} databases are not supported; use "
                           "postgresql://... or sqlite:///...")


_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def connect_options(url: str) -> tuple[str, dict[str, Any], str | None]:
    """Split our own ``schema=NAME`` parameter off a PostgreSQL URL: the URL the driver gets,
    its connect arguments, and the schema (created on open) that Corral's tables live in."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return url, {}, None
    schema = parsed.query.get("schema")
    args: dict[str, Any] = {}
    if isinstance(schema, str):
        if not _SCHEMA.match(schema):
            raise StoreUnavailable(f"--db: schema {schema!r} is not a plain lowercase SQL name")
        parsed = parsed.difference_update_query(["schema"])
        args["server_settings"] = {"search_path": schema}
    return parsed.render_as_string(hide_password=False), args, schema \
        if isinstance(schema, str) else None


def printable(raw: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):
        return "<unparseable URL>" if "@" in str(raw) else str(raw)
    return url.render_as_string(hide_password=True)
