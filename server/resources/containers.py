"""Containers (base type ``instance``): the v2-beta container fields, Rancher's states and
actions. Creating or acting on a container records the transitional state here; the instance
engine (``server.engine.instances``) then carries it out on the container's host."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from server.agents.instructions import sample
from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.api.schema import Action, Field, Schema, Scope
from server.api.types import ResourceType
from server.engine.placement import place_container
from server.resources.container_spec import build_spec, volume_names
from server.resources.volumes import named_volume_hosts
from server.store import Condition, Conflict, NewRecord, Query, Record
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

RUNNING_ACTIONS = frozenset({"running"})
CONTAINER = Schema(
    id="container",
    base_type="instance",
    scope=Scope.PROJECT,
    fields=CONTAINER_FIELDS,
    states=("creating", "starting", "running", "stopping", "stopped", "restarting",
            "removing", "removed", "purging", "purged", "error"),
    actions={
        "start": Action(frozenset({"stopped"})),
        "stop": Action(frozenset({"running", "starting", "restarting"}), input="instanceStop"),
        "restart": Action(RUNNING_ACTIONS),
        "remove": Action(frozenset({"stopped", "error"})),
        "purge": Action(frozenset({"removed"})),
        "update": Action(frozenset({"running", "stopped"})),
        "setlabels": Action(frozenset({"running", "stopped"}), input="setLabelsInput"),
        "logs": Action(frozenset({"running", "stopped"}), input="containerLogs",
                       output="hostAccess"),
        "execute": Action(RUNNING_ACTIONS, input="containerExec", output="hostAccess"),
    },
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

# Transitional state entered by each action; the engine carries it out.
ACTION_STATES = {"start": "starting", "stop": "stopping", "restart": "restarting",
                 "remove": "removing", "purge": "purging"}


class ContainerType(ResourceType):
    async def create(self, ctx: RequestContext, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(ctx)
        assert project_id is not None
        container_uuid = str(uuidlib.uuid4())
        name = values.get("name")
        if name is not None:
            await self._check_unique_name(ctx, project_id, name)
        spec = build_spec(values, uuid=container_uuid, name=name)
        spec["volumesFrom"] = await self._docker_ids(ctx, project_id, spec["volumesFrom"])
        names = volume_names(spec)
        required = await named_volume_hosts(ctx.services.store, project_id, names) \
            if names else None
        host = await place_container(ctx.services, project_id, values, spec,
                                     required_host_ids=required or None)
        for port in spec["ports"]:
            port["hostIp"] = port["hostIp"] or host.data.get("agentIpAddress")
        data = {k: v for k, v in values.items() if k not in ("name", "description")}
        data.update(spec=spec, hostId=host.id)
        try:
            record = await ctx.services.store.create(NewRecord(
                type="container", kind="container", state="creating", name=name,
                description=values.get("description"), project_id=project_id,
                uuid=container_uuid, transitioning="yes", transitioning_message="In Progress",
                data=data))
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc
        ctx.services.instances.submit(record.id)
        return record

    async def _check_unique_name(self, ctx: RequestContext, project_id: int, name: str) -> None:
        same = await ctx.services.store.list(Query(
            types=["container"], project_id=project_id, limit=1,
            conditions=[Condition("name", "eq", name), Condition("removed", "null")]))
        if same:
            raise invalid("NotUnique", "name", f"a container named {name!r} already exists")

    async def _docker_ids(self, ctx: RequestContext, project_id: int,
                          refs: list[str]) -> list[str]:
        out = []
        for ref in refs:
            number = parse_id(ref, CONTAINER.id_prefix)
            other = await ctx.services.store.get(number) if number is not None else None
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

    async def follow_link(self, ctx: RequestContext, record: Record,
                          name: str) -> dict[str, Any]:
        if name != "stats":
            return await super().follow_link(ctx, record, name)
        if record.state != "running":
            raise invalid("InvalidState", None, "only a running container has stats")
        return await sample(ctx.services, record, "instance.stats", {"uuid": record.uuid},
                            "containerStats")

    async def remove(self, ctx: RequestContext, record: Record) -> Record:
        if record.state == "running":
            # DELETE of a running container stops it on the way, as Rancher did.
            return await ctx.services.instances.request(record, "removing")
        return await super().remove(ctx, record)

    async def perform(self, ctx: RequestContext, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name in ACTION_STATES:
            return await ctx.services.instances.request(record, ACTION_STATES[name],
                                                        timeout=values.get("timeout"))
        if name == "setlabels":
            return await self.write(ctx, record, {}, {"labels": values["labels"]})
        if name == "update":  # Rancher's update process; the fields change through PUT
            return record
        return await ctx.services.instances.stream_action(ctx, record, name, values)


def types() -> list[ResourceType]:
    return [ContainerType(CONTAINER)]


EMBEDDED = [INSTANCE_STOP, SET_LABELS, CONTAINER_LOGS, CONTAINER_EXEC, HOST_ACCESS]
