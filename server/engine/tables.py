"""The operation table: each type whose lifecycle has operations, with those operations."""

from __future__ import annotations

from collections.abc import Mapping

from server.engine import instances
from server.engine.runner import Operation
from server.lifecycle import Lifecycle
from server.resources.containers import CONTAINER_LIFECYCLE


def operation_tables() -> dict[str, tuple[Lifecycle, Mapping[str, Operation]]]:
    """Every type whose steps have operations, with them: the one table the runner reads."""
    return {"container": (CONTAINER_LIFECYCLE, instances.OPERATIONS)}
