"""SQLAlchemy Core table definitions, dialect-neutral (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

resource = Table(
    "resource",
    metadata,
    # AUTOINCREMENT on SQLite: an id is never reused after a row is deleted.
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
)

schema_version = Table(
    "corral_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied", BigInteger, nullable=False),
)
