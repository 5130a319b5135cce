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
from shared.errors import HostNotConnected

CREATE_TIMEOUT = 900.0  # a pull of a large image may take minutes
OP_TIMEOUT = 120.0

# Docker's container status → the container's resting state.
RESTING = {"running": "running", "restarting": "running", "paused": "running",
           "created": "stopped", "exited": "stopped", "dead": "stopped", "removed": "removed"}


def resting_state(summary: Mapping[str, Any]) -> str:
    return RESTING.get(str(summary.get("status")), "stopped")


def summary_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a container's state summary changes on its record."""
    ports = summary.get("ports") or []
    return {
        "externalId": summary.get("dockerId"),
        "primaryIpAddress": summary.get("ipAddress") or None,
        "exitCode": summary.get("exitCode"),
        "startedAt": summary.get("startedAt"),
        "dockerPorts": ports,
        "publicEndpoints": [{"ipAddress": p.get("hostIp"), "port": p.get("hostPort"),
                             "privatePort": p.get("containerPort"),
                             "protocol": p.get("protocol")} for p in ports if p.get("hostPort")],
    }


def _settled(summary: Mapping[str, Any], state: str | None = None) -> Outcome:
    return Outcome(state=state or resting_state(summary), data=summary_fields(summary))


async def create(caller: Caller, record: Record) -> Outcome:
    services = caller.services
    auth = await services.registries.auth_for(record)
    summary = await services.instructions.call(
        record, "instance.create", {"container": record.data["spec"], "registryAuth": auth},
        timeout=CREATE_TIMEOUT, track=True)
    await record_mounts(caller.store, record, summary.get("mounts") or [])
    if record.data.get("startOnCreate", True):
        await caller.store.update(record.id, {"state": "starting"}, summary_fields(summary))
        summary = await services.instructions.call(record, "instance.start",
                                                   {"uuid": record.uuid}, timeout=OP_TIMEOUT,
                                                   track=True)
    return _settled(summary)


async def start(caller: Caller, record: Record) -> Outcome:
    return _settled(await caller.services.instructions.call(
        record, "instance.start", {"uuid": record.uuid}, timeout=OP_TIMEOUT, track=True))


async def stop(caller: Caller, record: Record) -> Outcome:
    timeout = record.data.get("stopTimeout") or 10
    summary = await caller.services.instructions.call(
        record, "instance.stop", {"uuid": record.uuid, "timeout": timeout},
        timeout=OP_TIMEOUT + timeout, track=True)
    return _settled(summary, "stopped")


async def restart(caller: Caller, record: Record) -> Outcome:
    timeout = record.data.get("stopTimeout") or 10
    return _settled(await caller.services.instructions.call(
        record, "instance.restart", {"uuid": record.uuid, "timeout": timeout},
        timeout=OP_TIMEOUT + timeout, track=True))


async def remove(caller: Caller, record: Record) -> Outcome:
    if record.data.get("externalId") or record.data.get("hostId") is not None:
        try:
            await caller.services.instructions.call(
                record, "instance.remove", {"uuid": record.uuid, "removeVolumes": True},
                timeout=OP_TIMEOUT, track=True)
        except HostNotConnected:
            if record.data.get("externalId"):
                raise
    await release_mounts(caller.store, record, volumes_removed=True)
    return Outcome("removed")


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
