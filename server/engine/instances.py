"""Container operations on hosts: the operations of the container lifecycle's steps.

An API request (or a loop) only records the transitional state a step asks for
(``creating``, ``stopping``, ...); the runner (``server.engine.runner``) then calls the
operation named here, one at a time per container, and records the outcome. Because the state
itself says what is left to do, every unfinished operation resumes after a server restart or
when a host comes back, and the agent's idempotent handlers make a re-sent instruction
harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.caller import Caller
from server.engine.runner import Operation, Outcome
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


def _settled(state: ContainerState, resting: str | None = None) -> Outcome:
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
    services = caller.services
    auth = await services.registries.auth_for(record)
    request = CreateRequest(container=stored_spec(record), registry_auth=None if auth is None
                            else RegistryAuth(auth.get("username"), auth.get("password"),
                                              auth.get("serveraddress")))
    state = await services.instructions.send(record, "instance.create", request, ContainerState,
                                             timeout=CREATE_TIMEOUT, track=True)
    await record_mounts(caller.store, record, [m.dump() for m in state.mounts])
    if record.data.get("startOnCreate", True):
        await caller.store.update(record.id, {"state": "starting"}, summary_fields(state))
        state = await services.instructions.send(record, "instance.start",
                                                 ContainerRef(record.uuid), ContainerState,
                                                 timeout=OP_TIMEOUT, track=True)
    return _settled(state)


async def start(caller: Caller, record: Record) -> Outcome:
    return _settled(await caller.services.instructions.send(
        record, "instance.start", ContainerRef(record.uuid), ContainerState,
        timeout=OP_TIMEOUT, track=True))


async def stop(caller: Caller, record: Record) -> Outcome:
    timeout = _stop_timeout(record)
    state = await caller.services.instructions.send(
        record, "instance.stop", StopRequest(record.uuid, timeout), ContainerState,
        timeout=OP_TIMEOUT + timeout, track=True)
    return _settled(state, "stopped")


async def restart(caller: Caller, record: Record) -> Outcome:
    timeout = _stop_timeout(record)
    return _settled(await caller.services.instructions.send(
        record, "instance.restart", StopRequest(record.uuid, timeout), ContainerState,
        timeout=OP_TIMEOUT + timeout, track=True))


async def remove(caller: Caller, record: Record) -> Outcome:
    if record.data.get("externalId") or record.data.get("hostId") is not None:
        try:
            await caller.services.instructions.send(
                record, "instance.remove", RemoveRequest(record.uuid, remove_volumes=True),
                NoData, timeout=OP_TIMEOUT, track=True)
        except HostNotConnected:
            if record.data.get("externalId"):
                raise
    await release_mounts(caller.store, record, volumes_removed=True)
    return Outcome("removed")


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
    "remove": remove,
    "purge": purge,
}
