"""Container operations on hosts: the operations of the container lifecycle's steps.

An API request (or a loop) only records the transitional state a step asks for
(``creating``, ``stopping``, ...); the runner (``server.engine.runner``) then calls the
operation named here, one at a time per container, and records the outcome. Because the state
itself says what is left to do, every unfinished operation resumes after a server restart or
when a host comes back, and the agent's idempotent handlers make a re-sent instruction
harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from server.api.types import entered
from server.caller import Caller
from server.engine.runner import Operation, Outcome
from server.lifecycle import Step
from server.resources.container_lifecycle import lifecycle_step
from server.resources.volumes import record_mounts, release_mounts
from server.store import Record
from shared.containers import ContainerSpec, ContainerState, ContainerStatus
from shared.errors import ErrorCode, HostNotConnected, InstructionError
from shared.fields import Fields
from shared.instructions import (
    ContainerRef,
    CreateRequest,
    NoData,
    RegistryAuth,
    RemoveRequest,
    StopRequest,
)

log = logging.getLogger(__name__)
CREATE_TIMEOUT = 900.0  # a pull of a large image may take minutes
OP_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 10

# Docker's container status → the container's resting state.
RESTING: Mapping[ContainerStatus, str] = {
    ContainerStatus.RUNNING: "running", ContainerStatus.RESTARTING: "running",
    ContainerStatus.PAUSED: "running", ContainerStatus.CREATED: "stopped",
    ContainerStatus.EXITED: "stopped", ContainerStatus.DEAD: "stopped",
    ContainerStatus.REMOVING: "stopped", ContainerStatus.REMOVED: "removed"}


def resting_state(state: ContainerState) -> str:
    return "stopped" if state.status is None else RESTING.get(state.status, "stopped")


def summary_fields(state: ContainerState) -> dict[str, Any]:
    """What a container's state summary changes on its record."""
    return {
        "externalId": state.docker_id,
        "primaryIpAddress": state.ip_address or None,
        "exitCode": state.exit_code,
        "startedAt": state.started_at,
        "dockerPorts": [p.dump() for p in state.ports],
        "publicEndpoints": [{"ipAddress": p.host_ip, "port": p.host_port,
                             "privatePort": p.container_port, "protocol": p.protocol}
                            for p in state.ports if p.host_port],
    }


def settled(state: ContainerState, resting: str | None = None) -> Outcome:
    """The outcome of an operation that left the container as ``state`` says."""
    return Outcome(state=resting or resting_state(state), data=summary_fields(state))


def stored_spec(record: Record) -> ContainerSpec:
    """The spec kept (as JSON) in the record's data, typed; a broken one fails the step."""
    return ContainerSpec.read(Fields(record.data.get("spec"), f"container {record.uuid}'s spec",
                                     lambda message: InstructionError(message,
                                                                      ErrorCode.INVALID_DATA)))


def _stop_timeout(record: Record) -> int:
    timeout = record.data.get("stopTimeout")
    return timeout if isinstance(timeout, int) and timeout > 0 else DEFAULT_STOP_TIMEOUT


async def create(caller: Caller, record: Record) -> Outcome:
    """``requested`` → ``creating`` (→ ``starting``): the container made, and started, on the
    host it was placed on."""
    if record.state == "requested":
        record = await caller.store.update(record.id, {"state": "creating"})
    try:
        return settled(await create_on_host(caller, record))
    except HostNotConnected:
        raise
    except InstructionError as exc:
        return await failing(caller, record, exc)


async def create_on_host(caller: Caller, record: Record, *,
                         as_new: bool = True) -> ContainerState:
    """Create the container on the host its record names, and start it unless it is a new
    one made with ``startOnCreate: false``; what Docker says of it then."""
    services = caller.services
    auth = await services.registries.auth_for(record)
    request = CreateRequest(container=stored_spec(record), registry_auth=None if auth is None
                            else RegistryAuth(auth.get("username"), auth.get("password"),
                                              auth.get("serveraddress")))
    state = await services.instructions.send(record, "instance.create", request, ContainerState,
                                             timeout=CREATE_TIMEOUT, track=True)
    await record_mounts(caller.store, record, [m.dump() for m in state.mounts])
    if record.data.get("startOnCreate", True) or not as_new:
        # A migration keeps its own state; a new container shows that it starts.
        await caller.store.update(record.id, {"state": "starting"} if as_new else {},
                                  summary_fields(state))
        state = await services.instructions.send(record, "instance.start",
                                                 ContainerRef(record.uuid), ContainerState,
                                                 timeout=OP_TIMEOUT, track=True)
    return state


async def start(caller: Caller, record: Record) -> Outcome:
    return settled(await caller.services.instructions.send(
        record, "instance.start", ContainerRef(record.uuid), ContainerState,
        timeout=OP_TIMEOUT, track=True))


async def stop_on_host(caller: Caller, record: Record) -> ContainerState:
    timeout = _stop_timeout(record)
    return await caller.services.instructions.send(
        record, "instance.stop", StopRequest(record.uuid, timeout), ContainerState,
        timeout=OP_TIMEOUT + timeout, track=True)


async def stop(caller: Caller, record: Record) -> Outcome:
    """Stop the container; asked with ``remove`` (a DELETE of a running container), go on to
    remove it: ``stopping`` → ``removing`` → ``removed``."""
    removing = bool(record.data.get("removeAfterStop"))
    try:
        state = await stop_on_host(caller, record)
    except InstructionError:
        if removing:  # the removal is off: a later stop must not remove the container
            await caller.store.update(record.id, {}, {"removeAfterStop": False})
        raise
    if removing:
        await enter(caller, record.id, lifecycle_step("remove"),
                    {**summary_fields(state), "removeAfterStop": False})
    return settled(state, "stopped")


async def restart(caller: Caller, record: Record) -> Outcome:
    timeout = _stop_timeout(record)
    return settled(await caller.services.instructions.send(
        record, "instance.restart", StopRequest(record.uuid, timeout), ContainerState,
        timeout=OP_TIMEOUT + timeout, track=True))


async def update(caller: Caller, record: Record) -> Outcome:
    """Rancher's ``instance.update``: the record brought back in line with what the host says
    of the container (``updating-running`` or ``updating-stopped``, then where Docker has it)."""
    return settled(await caller.services.instructions.send(
        record, "instance.inspect", ContainerRef(_uuid(record)), ContainerState,
        timeout=OP_TIMEOUT, track=True))


async def remove_from_host(caller: Caller, record: Record) -> None:
    """Remove the container and its anonymous volumes from its host, if it got there."""
    if record.data.get("externalId") or record.data.get("hostId") is not None:
        try:
            await caller.services.instructions.send(
                record, "instance.remove", RemoveRequest(record.uuid, remove_volumes=True),
                NoData, timeout=OP_TIMEOUT, track=True)
        except HostNotConnected:
            if record.data.get("externalId"):
                raise
    await release_mounts(caller.store, record, volumes_removed=True)


async def remove(caller: Caller, record: Record) -> Outcome:
    try:
        await remove_from_host(caller, record)
    except HostNotConnected:
        raise
    except InstructionError as exc:
        return await failing(caller, record, exc)
    return Outcome("removed")


async def failing(caller: Caller, record: Record, exc: InstructionError) -> Outcome:
    """An operation failed into ``error``: pass ``erroring`` first, as Rancher's
    ``instance.error`` does. The step's outcome is then the error step's (see ``error``)."""
    await enter(caller, record.id, lifecycle_step("error"), {"errorMessage": str(exc)},
                message=str(exc))
    return Outcome()


async def error(caller: Caller, record: Record) -> Outcome:
    """``erroring``: stop what is left of the container on its host (if the host is there to
    ask), then fail with the message of the operation that failed: the container is ``error``
    with that message."""
    host_id = record.data.get("hostId")
    if record.data.get("externalId") and isinstance(host_id, int) \
            and caller.services.hub.is_live(host_id):
        try:
            await stop_on_host(caller, record)
        except HostNotConnected:
            pass
        except InstructionError as exc:
            log.info("container %s: could not stop it after a failure: %s", record.uuid, exc)
    message = record.data.get("errorMessage")
    raise InstructionError(str(message) if message else "the container failed")


async def enter(caller: Caller, record_id: int, row: Step,
                data: Mapping[str, Any] | None = None, message: str = "In Progress") -> None:
    """From within an operation, hand the container on to the next step: its transitional
    state is recorded, and the runner carries it out once the current operation is done
    (whose own outcome then keeps only its data)."""
    assert row.transitional is not None
    columns = {**entered(row.transitional, transitional=True),
               "transitioning_message": message}
    await caller.store.update(record_id, columns, data)
    caller.services.runner.submit(record_id)


def _uuid(record: Record) -> str:
    if not record.uuid:
        raise InstructionError(f"container {record.id} has no uuid to find it by on its host",
                               ErrorCode.INVALID_DATA)
    return record.uuid


async def purge(caller: Caller, record: Record) -> Outcome:
    return Outcome("purged")


OPERATIONS: Mapping[str, Operation] = {
    "create": create,
    "start": start,
    "stop": stop,
    "restart": restart,
    "update": update,
    "remove": remove,
    "error": error,
    "purge": purge,
}
