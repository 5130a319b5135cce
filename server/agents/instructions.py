"""Run an instruction for a resource on its host, keeping the resource's transitioning fields
right: ``yes`` with the agent's progress while it runs, ``no`` or ``error`` when it ends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from server.store import Record
from shared import protocol
from shared.errors import InstructionError
from shared.ids import format_id

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)


def host_of(record: Record) -> int:
    if record.type == "host":
        return record.id
    host_id = record.data.get("hostId")
    if not isinstance(host_id, int):
        raise InstructionError(f"{record.type} {record.id} is not placed on a host")
    return host_id


async def run_instruction(services: Services, record: Record, name: str,
                          data: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Send ``name`` about ``record`` to its host's agent and return the reply's data.

    Raises HostNotConnected at once when the host's agent is not connected, and
    InstructionError (with the agent's message) when the instruction fails.
    """
    store = services.store
    rtype = services.types.get(record.type)
    public_id = format_id(rtype.schema.id_prefix, record.id) if rtype else str(record.id)

    async def on_progress(progress: protocol.Progress) -> None:
        await store.update(record.id, {"transitioning": "yes",
                                       "transitioning_message": progress.message,
                                       "transitioning_progress": progress.progress})

    host_id = host_of(record)
    try:
        result = await services.hub.call(host_id, name, record.type, public_id, data,
                                         timeout=timeout, on_progress=on_progress)
    except InstructionError as exc:
        log.info("%s on %s %s failed: %s", name, record.type, public_id, exc)
        if record.transitioning == "yes" or await _was_transitioning(services, record.id):
            await store.update(record.id, {"transitioning": "error",
                                           "transitioning_message": str(exc),
                                           "transitioning_progress": None})
        raise
    if await _was_transitioning(services, record.id):
        await store.update(record.id, {"transitioning": "no", "transitioning_message": None,
                                       "transitioning_progress": None})
    return result


async def _was_transitioning(services: Services, record_id: int) -> bool:
    current = await services.store.get(record_id)
    return current is not None and current.transitioning == "yes"


async def sample(services: Services, record: Record, name: str, data: dict[str, Any],
                 output_type: str) -> dict[str, Any]:
    """A read-only instruction's answer as an API object (stats and the like); no state
    changes on the record. Raises the API's errors for a host that is away or a failure."""
    from server.api.errors import Unavailable, invalid
    from shared.errors import HostNotConnected

    rtype = services.types.get(record.type)
    public_id = format_id(rtype.schema.id_prefix, record.id) if rtype else str(record.id)
    try:
        result = await services.hub.call(host_of(record), name, record.type, public_id, data,
                                         timeout=30)
    except HostNotConnected as exc:
        raise Unavailable(str(exc), code="HostNotConnected") from exc
    except InstructionError as exc:
        raise invalid("InstructionFailed", None, str(exc)) from exc
    return {"type": output_type, "id": public_id, "links": {}, "actions": {}, **result}
