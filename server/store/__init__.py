"""Persistence behind one interface (``Store``): SQLite or PostgreSQL through the same code."""

from server.store.interface import (
    SYSTEM,
    Actor,
    ActorKind,
    Change,
    Condition,
    Conflict,
    NewRecord,
    Query,
    Record,
    Store,
    StoreError,
    StoreUnavailable,
    Transaction,
)

__all__ = ["SYSTEM", "Actor", "ActorKind", "Change", "Condition", "Conflict", "NewRecord",
           "Query", "Record", "Store", "StoreError", "StoreUnavailable", "Transaction"]
