"""SQLAlchemy Core table definitions, dialect-neutral (SQLite and PostgreSQL).

These describe the schema as the latest migration leaves it; the migrations themselves
(``migrations.py``) build it step by step.
"""

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
    # Mirrors of data.hostId and data.externalId (migration 2), kept by the store.
    Column("host_id", Integer),
    Column("external_id", String(255)),
    UniqueConstraint("type", "lookup_key", name="uq_resource_type_lookup"),
    Index("ix_resource_type_project", "type", "project_id"),
    Index("ix_resource_type_account", "type", "account_id"),
    Index("ix_resource_host", "host_id", "type"),
    Index("ix_resource_external", "external_id"),
    Index("ix_resource_type_state", "type", "state"),
    Index("ix_resource_type_project_name", "type", "project_id", "name"),
    Index("ix_resource_transitioning", "transitioning", "type"),
    sqlite_autoincrement=True,
)

# One row per record written by a transaction, in commit order.
change_log = Table(
    "change_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("resource_id", Integer, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("project_id", Integer),
    Column("fields", JSON, nullable=False),
    Column("record", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("time", BigInteger, nullable=False),
    Index("ix_change_log_resource", "resource_id"),
    Index("ix_change_log_time", "time"),  # the pruner's age cut-off
    sqlite_autoincrement=True,
)

# Who is carrying out an operation on a record, until when (epoch ms).
claim = Table(
    "claim",
    metadata,
    Column("resource_id", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(128), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("expires", BigInteger, nullable=False),
)

# Small facts about the database itself (how far the change log was pruned).
meta = Table(
    "corral_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

schema_version = Table(
    "corral_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied", BigInteger, nullable=False),
)
