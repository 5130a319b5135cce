"""The operation table: each type whose lifecycle has operations, with those operations."""

from __future__ import annotations

from collections.abc import Mapping

from server.engine import (
    instances,
    migration,
    registering,
    service_operations,
    stack_operations,
)
from server.engine.runner import Operation
from server.lifecycle import Lifecycle
from server.resources.container_lifecycle import CONTAINER_LIFECYCLE
from server.resources.registered import REGISTERED
from server.resources.service_lifecycle import SERVICE_LIFECYCLE, STACK_LIFECYCLE
from server.service_kinds import SERVICE_KINDS


def operation_tables() -> dict[str, tuple[Lifecycle, Mapping[str, Operation]]]:
    """Every type whose steps have operations, with them: the one table the runner reads."""
    return {"container": (CONTAINER_LIFECYCLE,
                          {**instances.OPERATIONS, "migrate": migration.migrate}),
            **{type_id: (REGISTERED, registering.OPERATIONS)
               for type_id in ("account", "apiKey", "registrationToken", "network")},
            **{type_id: (SERVICE_LIFECYCLE, service_operations.OPERATIONS)
               for type_id in SERVICE_KINDS},
            "stack": (STACK_LIFECYCLE, stack_operations.OPERATIONS)}
