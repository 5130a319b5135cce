"""The domain operations: create, update, act on and remove resources of any type.

Each is a function of a ``Caller`` (actor, environment, services) and the values given, used
alike by the REST handlers and by the server's own loops. Values are checked against the
type's schema here, so a loop can no more store a bad field than a client can.
"""

from __future__ import annotations

from typing import Any

from server.api.errors import NotFound
from server.api.types import ResourceType
from server.api.validation import validate_create, validate_input, validate_update
from server.caller import Caller
from server.store import Record


def resource_type(caller: Caller, type_id: str) -> ResourceType:
    rtype = caller.services.types.get(type_id)
    if rtype is None:
        raise NotFound(f"unknown resource type {type_id!r}")
    return rtype


async def create(caller: Caller, type_id: str, body: Any) -> Record:
    """A new resource of ``type_id`` from ``body`` (the fields a client would POST)."""
    rtype = resource_type(caller, type_id)
    return await rtype.create(caller, validate_create(rtype.schema, body))


async def update(caller: Caller, record: Record, body: Any) -> Record:
    """``record`` with the updatable fields of ``body`` changed (a PUT)."""
    rtype = resource_type(caller, record.type)
    values = validate_update(rtype.schema, body)
    return await rtype.update(caller, record, values) if values else record


async def act(caller: Caller, record: Record, action: str,
              body: Any = None) -> Record | dict[str, Any]:
    """Run ``action`` on ``record`` with ``body`` as its input."""
    rtype = resource_type(caller, record.type)
    spec = rtype.schema.actions.get(action)
    if action == "update" and rtype.update_action_is_put and \
            action in rtype.available_actions(record):
        return await update(caller, record, body)
    input_schema = caller.services.types.schema(spec.input) if spec and spec.input else None
    values = validate_input(input_schema, body)
    return await rtype.run_action(caller, record, action, values)


async def remove(caller: Caller, record: Record) -> Record:
    """Remove ``record`` (a DELETE): its type's remove step."""
    return await resource_type(caller, record.type).remove(caller, record)
