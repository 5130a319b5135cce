"""The operations of a stack's steps: ``remove`` (its services go with it) here, the upgrade
steps in ``server.engine.stack_upgrade``."""

from __future__ import annotations

from collections.abc import Mapping

from server import operations
from server.api.errors import ApiError
from server.caller import Caller
from server.engine import stack_upgrade
from server.engine.runner import Operation, Outcome
from server.service_kinds import SERVICE_KINDS
from server.store import Condition, Query, Record
from shared.errors import InstructionError

_SERVICE_TYPES = list(SERVICE_KINDS)


async def remove(caller: Caller, record: Record) -> Outcome:
    project = await caller.store.get(record.project_id) if record.project_id else None
    caller = Caller.system(caller.services, project)
    services = await caller.store.list(Query(
        types=_SERVICE_TYPES, project_id=record.project_id, limit=1000,
        conditions=[Condition("stackId", "eq", record.id, "int"),
                    Condition("removed", "null")]))
    for service in services:
        if service.state in ("removing", "removed"):
            continue
        try:
            await operations.remove(caller, service)
        except ApiError as exc:
            raise InstructionError(f"service {service.name}: {exc.message}") from exc
    return Outcome()


OPERATIONS: Mapping[str, Operation] = {"remove": remove, **stack_upgrade.OPERATIONS}
