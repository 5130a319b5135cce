"""Versioned schema migrations, applied in order at start-up and recorded in the database.

Each migration is a function of a synchronous connection inside one transaction. Add new ones at
the end of ``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, inspect, select

from server.store import tables

log = logging.getLogger(__name__)

Migration = Callable[[Connection], None]


def _001_resources(conn: Connection) -> None:
    tables.resource.create(conn)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "resource table", _001_resources),
]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(tables.schema_version.name):
        return 0
    found = conn.execute(select(tables.schema_version.c.version)).scalars().all()
    return max(found, default=0)


def migrate(conn: Connection) -> int:
    """Apply every migration newer than the database's version; return the final version."""
    tables.schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    latest = MIGRATIONS[-1][0]
    if version > latest:
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this Corral ({latest}); "
            "upgrade Corral"
        )
    for number, title, apply in MIGRATIONS:
        if number <= version:
            continue
        log.info("applying database migration %03d: %s", number, title)
        apply(conn)
        conn.execute(tables.schema_version.insert().values(
            version=number, applied=int(time.time() * 1000)))
        version = number
    return version
