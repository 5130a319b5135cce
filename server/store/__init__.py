"""Persistence behind one interface (``Store``); SQLite now, PostgreSQL through the same code."""

from server.store.interface import (
    Condition,
    Conflict,
    NewRecord,
    Query,
    Record,
    Store,
    StoreError,
)

__all__ = ["Condition", "Conflict", "NewRecord", "Query", "Record", "Store", "StoreError"]
