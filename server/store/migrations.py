"""Versioned schema migrations, applied in order at start-up and recorded in the database.

Each migration is a function of a synchronous connection inside one transaction, taken under
a lock (PostgreSQL: an advisory lock; SQLite: the database's write lock, taken at BEGIN), so
that two server processes starting at once never apply the same migration twice. Add new ones
at the end of ``MIGRATIONS``; never edit one that has shipped: a migration that creates a
table creates it as it was then, and later ones change it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from server.store import tables

log = logging.getLogger(__name__)

Migration = Callable[[Connection], None]
# Any constant: the key of the advisory lock that migrations run under on PostgreSQL.
MIGRATION_LOCK = 0x636F7272616C  # "corral"


def _001_resources(conn: Connection) -> None:
    v1 = MetaData()
    Table(
        "resource", v1,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("type", String(64), nullable=False),
        Column("kind", String(64), nullable=False),
        Column("uuid", String(64), nullable=False, unique=True),
        Column("name", String(255)),
        Column("description", Text),
        Column("state", String(64), nullable=False),
        Column("project_id", Integer),
        Column("account_id", Integer),
        Column("created", BigInteger, nullable=False),
        Column("removed", BigInteger),
        Column("transitioning", String(8), nullable=False),
        Column("transitioning_message", Text),
        Column("transitioning_progress", Integer),
        Column("lookup_key", String(255)),
        Column("data", JSON, nullable=False),
        Column("version", Integer, nullable=False),
        UniqueConstraint("type", "lookup_key", name="uq_resource_type_lookup"),
        Index("ix_resource_type_project", "type", "project_id"),
        Index("ix_resource_type_account", "type", "account_id"),
        sqlite_autoincrement=True,
    ).create(conn)


def _002_change_log_claims_indexes(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE resource ADD COLUMN host_id INTEGER"))
    conn.execute(text("ALTER TABLE resource ADD COLUMN external_id VARCHAR(255)"))
    r = tables.resource
    rows = conn.execute(select(r.c.id, r.c.data)).all()
    for row in rows:
        data = row.data or {}
        host = data.get("hostId")
        host_id = host if isinstance(host, int) and not isinstance(host, bool) else None
        external = data.get("externalId") if isinstance(data.get("externalId"), str) else None
        if host_id is not None or external is not None:
            conn.execute(r.update().where(r.c.id == row.id)
                         .values(host_id=host_id, external_id=external))
    for name in ("ix_resource_host", "ix_resource_external", "ix_resource_type_state",
                 "ix_resource_type_project_name", "ix_resource_transitioning"):
        next(i for i in r.indexes if i.name == name).create(conn)
    tables.change_log.create(conn)
    tables.claim.create(conn)
    tables.meta.create(conn)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "resource table", _001_resources),
    (2, "change log, claims, indexed host and external id", _002_change_log_claims_indexes),
]


def latest_version() -> int:
    return MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(tables.schema_version.name):
        return 0
    found = conn.execute(select(tables.schema_version.c.version)).scalars().all()
    return max(found, default=0)


def migrate(conn: Connection) -> int:
    """Apply every migration newer than the database's version; return the final version."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    tables.schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    latest = latest_version()
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
