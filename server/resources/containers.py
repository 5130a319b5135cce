"""Containers (base type ``instance``): the v2-beta container fields, Rancher's states and
actions in one lifecycle table. Creating or acting on a container records the transitional
state here; the runner then carries out the step's operation (``server.engine.instances``)
on the container's host."""

from __future__ import annotations

import uuid as uuidlib
from enum import StrEnum
from typing import Any

from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import Unavailable, invalid
from server.api.schema import Action, Field, Schema, Scope
from server.api.types import ResourceType, entered
from server.caller import Caller
from server.lifecycle import Lifecycle, step
from server.resources.container_spec import build_spec, volume_names
from server.resources.volumes import named_volume_hosts, release_mounts
from server.store import Condition, Conflict, NewRecord, Query, Record, Transaction
from shared.ids import format_id, parse_id

_S = "array[string]"
_M = "map[string]"

CONTAINER_FIELDS: dict[str, Field] = {
    "imageUuid": Field(create=True, required=True, nullable=False, max_length=1024),
    "command": Field(type="json", create=True),
    "entryPoint": Field(type="json", create=True),
    "environment": Field(type=_M, create=True, filterable=False),
    "labels": Field(type=_M, create=True, update=True, filterable=False),
    "ports": Field(type=_S, create=True, filterable=False),
    "expose": Field(type=_S, create=True, filterable=False),
    "dataVolumes": Field(type=_S, create=True, filterable=False),
    "volumeDriver": Field(create=True),
    "dataVolumesFrom": Field(type="array[reference[container]]", create=True, filterable=False),
    "networkMode": Field(create=True, default="bridge"),
    "dns": Field(type=_S, create=True, filterable=False),
    "dnsSearch": Field(type=_S, create=True, filterable=False),
    "restartPolicy": Field(type="json", create=True, filterable=False),
    "cpuShares": Field(type="int", create=True),
    "cpuSet": Field(create=True),
    "memory": Field(type="json", create=True),
    "memorySwap": Field(type="json", create=True),
    "memoryReservation": Field(type="json", create=True),
    "milliCpuReservation": Field(type="int", create=True, min=0),
    "privileged": Field(type="boolean", create=True, default=False),
    "capAdd": Field(type=_S, create=True, filterable=False),
    "capDrop": Field(type=_S, create=True, filterable=False),
    "devices": Field(type=_S, create=True, filterable=False),
    "user": Field(create=True),
    "workingDir": Field(create=True),
    "tty": Field(type="boolean", create=True, default=False),
    "stdinOpen": Field(type="boolean", create=True, default=False),
    "logConfig": Field(type="json", create=True, filterable=False),
    "hostname": Field(create=True),
    "domainName": Field(create=True),
    "extraHosts": Field(type=_S, create=True, filterable=False),
    "readOnly": Field(type="boolean", create=True, default=False),
    "pidMode": Field(create=True),
    "ipcMode": Field(create=True),
    "ulimits": Field(type="json", create=True, filterable=False),
    "requestedHostId": Field(type="reference[host]", create=True, filterable=False),
    "startOnCreate": Field(type="boolean", create=True, default=True),
    "healthCheck": Field(type="json", create=True, filterable=False),
    # Set by Corral, not by the user.
    "hostId": Field(type="reference[host]"),
    "externalId": Field(),
    "primaryIpAddress": Field(),
    "exitCode": Field(type="int"),
    "publicEndpoints": Field(type="json", filterable=False),
    "startedAt": Field(filterable=False),
    "native": Field(type="boolean"),
    "dockerPorts": Field(type="json", filterable=False),
}



class ContainerState(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    REMOVING = "removing"
    REMOVED = "removed"
    PURGING = "purging"
    PURGED = "purged"
    ERROR = "error"


RUNNING = frozenset({"running"})
RESTING = frozenset({"running", "stopped"})
# action → (valid in) → transitional state → operation → success / error. ``create`` is the
# step a new container starts in; its success state is what Docker reports (running or not).
CONTAINER_LIFECYCLE = Lifecycle(
    states=ContainerState,
    initial="creating",
    steps=(
        step("create", (), "running", via="creating", error="error", passes={"starting"}),
        step("start", {"stopped"}, "running", via="starting", error="stopped"),
        step("stop", {"running", "starting", "restarting"}, "stopped", via="stopping",
             error="running", input="instanceStop"),
        step("restart", RUNNING, "running", via="restarting", error="stopped"),
        step("remove", {"stopped", "error"}, "removed", via="removing", error="error"),
        step("purge", {"removed"}, "purged", via="purging", error="removed"),
    ),
    verbs={
        "update": Action(RESTING),
        "setlabels": Action(RESTING, input="setLabelsInput"),
        "logs": Action(RESTING, input="containerLogs", output="hostAccess"),
        "execute": Action(RUNNING, input="containerExec", output="hostAccess"),
    },
)

CONTAINER = Schema(
    id="container",
    base_type="instance",
    scope=Scope.PROJECT,
    fields=CONTAINER_FIELDS,
    states=CONTAINER_LIFECYCLE.state_names,
    actions=CONTAINER_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
)

INSTANCE_STOP = Schema(id="instanceStop", scope=Scope.PROJECT, embedded=True, fields={
    "timeout": Field(type="int", create=True, default=10, min=0, max=600),
    "remove": Field(type="boolean", create=True, default=False),
})
CONTAINER_LOGS = Schema(id="containerLogs", scope=Scope.PROJECT, embedded=True, fields={
    "follow": Field(type="boolean", create=True, default=True),
    "lines": Field(type="int", create=True, default=100, min=0),
    "timestamps": Field(type="boolean", create=True, default=False),
})
CONTAINER_EXEC = Schema(id="containerExec", scope=Scope.PROJECT, embedded=True, fields={
    "command": Field(type=_S, create=True, required=True, nullable=False),
    "tty": Field(type="boolean", create=True, default=True),
    "attachStdin": Field(type="boolean", create=True, default=True),
    "attachStdout": Field(type="boolean", create=True, default=True),
})
HOST_ACCESS = Schema(id="hostAccess", scope=Scope.PROJECT, embedded=True, fields={
    "url": Field(), "token": Field(),
})
SET_LABELS = Schema(id="setLabelsInput", scope=Scope.PROJECT, embedded=True, fields={
    "labels": Field(type=_M, create=True, required=True),
})

class ContainerType(ResourceType):
    lifecycle = CONTAINER_LIFECYCLE

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        assert project_id is not None
        container_uuid = str(uuidlib.uuid4())
        name = values.get("name")
        spec = build_spec(values, uuid=container_uuid, name=name)
        spec["volumesFrom"] = await self._docker_ids(caller, project_id, spec["volumesFrom"])
        names = volume_names(spec)
        required = await named_volume_hosts(caller.store, project_id, names) \
            if names else None

        claimed = False

        async def record_on(tx: Transaction, host: Record) -> Record:
            nonlocal claimed
            if name is not None:
                await self._check_unique_name(tx, project_id, name)
            placed_spec = {**spec, "ports": [
                {**port, "hostIp": port["hostIp"] or host.data.get("agentIpAddress")}
                for port in spec["ports"]]}
            data = {k: v for k, v in values.items() if k not in ("name", "description")}
            data.update(spec=placed_spec, hostId=host.id)
            try:
                created = await tx.create(NewRecord(
                    type="container", kind="container", state="creating", name=name,
                    description=values.get("description"), project_id=project_id,
                    uuid=container_uuid, transitioning="yes",
                    transitioning_message="In Progress", data=data))
            except Conflict as exc:
                raise ApiConflict(str(exc)) from exc
            claimed = await caller.services.runner.claim_in(tx, created.id, "create")
            return created

        record = await caller.services.placer.place(caller.store, project_id, values, spec,
                                                    required or None, record_on)
        caller.services.runner.submit(record.id, claimed=claimed)
        return record

    async def _check_unique_name(self, tx: Transaction, project_id: int, name: str) -> None:
        same = await tx.list(Query(
            types=["container"], project_id=project_id, limit=1,
            conditions=[Condition("name", "eq", name), Condition("removed", "null")]))
        if same:
            raise invalid("NotUnique", "name", f"a container named {name!r} already exists")

    async def _docker_ids(self, caller: Caller, project_id: int,
                          refs: list[str]) -> list[str]:
        out = []
        for ref in refs:
            number = parse_id(ref, CONTAINER.id_prefix)
            other = await caller.store.get(number) if number is not None else None
            if other is None or other.type != "container" or other.project_id != project_id \
                    or not other.data.get("externalId"):
                raise invalid("InvalidReference", "dataVolumesFrom",
                              f"{ref} is not a created container in this environment")
            out.append(str(other.data["externalId"]))
        return out

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        host_id = record.data.get("hostId")
        requested = record.data.get("requestedHostId")
        return {
            "hostId": format_id("1h", host_id) if isinstance(host_id, int) else None,
            "requestedHostId": requested,
        }

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        host_id = record.data.get("hostId")
        if isinstance(host_id, int):
            return {"host": f"{ctx.base_url}/hosts/{format_id('1h', host_id)}",
                    "stats": f"{self_url}/stats"}
        return {}

    async def follow_link(self, caller: Caller, record: Record,
                          name: str) -> dict[str, Any]:
        if name != "stats":
            return await super().follow_link(caller, record, name)
        if record.state != "running":
            raise invalid("InvalidState", None, "only a running container has stats")
        return await caller.services.instructions.sample(
            record, "instance.stats", {"uuid": record.uuid}, "containerStats")

    async def remove(self, caller: Caller, record: Record) -> Record:
        if record.state == "running":
            # DELETE of a running container stops it on the way, as Rancher did.
            return await self._step(caller, record, "remove", {})
        return await super().remove(caller, record)

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if self.lifecycle.step(name) is not None:
            return await self._step(caller, record, name, values)
        if name == "setlabels":
            return await self.write(caller, record, {}, {"labels": values["labels"]})
        if name == "update":  # Rancher's update process; the fields change through PUT
            return record
        return await self.stream_action(caller, record, name, values)

    async def _step(self, caller: Caller, record: Record, name: str,
                    values: dict[str, Any]) -> Record:
        """A step on the container's host, which must be there, except to remove a container
        whose host is away: that is recorded at once, and the host removes the container
        when it reconnects (see Reconciler.on_inventory)."""
        row = self.lifecycle.step(name)
        assert row is not None
        host_id = record.data.get("hostId")
        if name != "purge" and isinstance(host_id, int) and record.data.get("externalId") \
                and not caller.services.hub.is_live(host_id):
            if name == "remove":
                removed = await self.write(caller, record, entered("removed"))
                await release_mounts(caller.store, removed, volumes_removed=False)
                return removed
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected: its agent is "
                              "not connected, so the container cannot be changed now",
                              code="HostNotConnected")
        timeout = values.get("timeout")
        return await self.take_step(caller, record, row,
                                    {"stopTimeout": timeout} if timeout is not None else None)

    async def stream_action(self, caller: Caller, record: Record, name: str,
                            values: dict[str, Any]) -> dict[str, Any]:
        """A ticket for a websocket to the container's logs or to a command run in it."""
        from server.agents.streams import Ticket

        host_id = record.data.get("hostId")
        if not isinstance(host_id, int) or not record.data.get("externalId"):
            raise invalid("InvalidState", None, "the container was never created on a host")
        if not caller.services.hub.is_live(host_id):
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected",
                              code="HostNotConnected")
        if name == "logs":
            data = {"uuid": record.uuid, "follow": values.get("follow", True),
                    "tail": values.get("lines", 100), "timestamps": values.get("timestamps")}
            instruction = "instance.logs"
        else:
            data = {"uuid": record.uuid, "command": values["command"],
                    "tty": values.get("tty", True),
                    "attachStdin": values.get("attachStdin", True)}
            instruction = "instance.exec"
        token = caller.services.streams.issue(Ticket(
            host_id=host_id, instruction=instruction,
            resource_id=format_id(self.schema.id_prefix, record.id), data=data))
        ws_origin = (caller.origin or caller.public_origin).replace("http", "ws", 1)
        return {"type": "hostAccess", "links": {}, "actions": {},
                "url": f"{ws_origin}/v1/stream?token={token}", "token": token}


def types() -> list[ResourceType]:
    return [ContainerType(CONTAINER)]


EMBEDDED = [INSTANCE_STOP, SET_LABELS, CONTAINER_LOGS, CONTAINER_EXEC, HOST_ACCESS]
