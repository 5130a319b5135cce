"""Containers (base type ``instance``): the v2-beta container fields, Rancher's states and
actions in one lifecycle table. Creating or acting on a container records the transitional
state here; the runner then carries out the step's operation (``server.engine.instances``)
on the container's host."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import Unavailable, invalid
from server.api.render import iso
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType, entered
from server.caller import Caller
from server.engine.overlay_state import lease_container_address
from server.resources.container_fields import CAPABILITY_OPTIONS
from server.resources.container_lifecycle import (
    CONTAINER_LIFECYCLE,
    STOPPABLE,
    lifecycle_step,
    update_step,
)
from server.resources.container_lifecycle import EMBEDDED as ACTION_INPUTS
from server.resources.container_lifecycle import (
    ContainerState as ContainerState,  # re-exported: the states are part of the type
)
from server.resources.container_links import (
    CONTAINER_LINKS,
    container_linked,
    docker_inspect,
    primary_address,
)
from server.resources.container_refs import (
    check_registry_credential,
    placement_hosts,
    valid_host_ids,
    with_volume_mounts,
)
from server.resources.container_spec import (
    MANAGED,
    PID_MODES,
    build_spec,
    volume_names,
    with_discovery,
    with_environment_label,
)
from server.resources.volumes import named_volume_hosts, release_mounts
from server.store import Condition, Conflict, NewRecord, Query, Record, Transaction
from shared.ids import format_id, parse_id

_S = "array[string]"
_M = "map[string]"
_CAPS = "array[enum]"  # checked item by item in container_fields.parse_capabilities

CONTAINER_FIELDS: dict[str, Field] = {
    "imageUuid": Field(create=True, required=True, nullable=False, max_length=1024),
    "command": Field(type="json", create=True),
    "entryPoint": Field(type="json", create=True),
    "environment": Field(type=_M, create=True, nullable=False, filterable=False),
    "labels": Field(type=_M, create=True, update=True, nullable=False, filterable=False),
    "ports": Field(type=_S, create=True, filterable=False, lenient=True),
    "expose": Field(type=_S, create=True, filterable=False, lenient=True),
    "dataVolumes": Field(type=_S, create=True, filterable=False, lenient=True),
    "dataVolumeMounts": Field(type="map[reference[volume]]", create=True, filterable=False),
    "volumeDriver": Field(create=True),
    "dataVolumesFrom": Field(type="array[reference[container]]", create=True, filterable=False),
    "networkMode": Field(create=True, default="managed"),
    "dns": Field(type=_S, create=True, filterable=False, lenient=True),
    "dnsSearch": Field(type=_S, create=True, filterable=False, lenient=True),
    "restartPolicy": Field(type="restartPolicy", create=True, filterable=False),
    "cpuShares": Field(type="int", create=True),
    "cpuSet": Field(create=True),
    "memory": Field(type="json", create=True),
    "memorySwap": Field(type="json", create=True),
    "memoryReservation": Field(type="json", create=True),
    "milliCpuReservation": Field(type="int", create=True, min=0),
    "privileged": Field(type="boolean", create=True, nullable=False, default=False),
    "capAdd": Field(type=_CAPS, create=True, filterable=False, lenient=True,
                    options=CAPABILITY_OPTIONS),
    "capDrop": Field(type=_CAPS, create=True, filterable=False, lenient=True,
                     options=CAPABILITY_OPTIONS),
    "devices": Field(type=_S, create=True, filterable=False, lenient=True),
    "user": Field(create=True),
    "workingDir": Field(create=True),
    "tty": Field(type="boolean", create=True, nullable=False, default=False),
    "stdinOpen": Field(type="boolean", create=True, nullable=False, default=False),
    "logConfig": Field(type="logConfig", create=True, filterable=False),
    "hostname": Field(create=True),
    "domainName": Field(create=True),
    "extraHosts": Field(type=_S, create=True, filterable=False, lenient=True),
    "readOnly": Field(type="boolean", create=True, nullable=False, default=False),
    "pidMode": Field(type="enum", create=True, options=PID_MODES),
    "ipcMode": Field(create=True),
    "ulimits": Field(type="json", create=True, filterable=False),
    "requestedHostId": Field(type="reference[host]", create=True, filterable=False),
    "startOnCreate": Field(type="boolean", create=True, nullable=False, default=True),
    "healthCheck": Field(type="json", create=True, filterable=False),
    "publishAllPorts": Field(type="boolean", create=True, nullable=False, default=False),
    "blkioWeight": Field(type="int", create=True),
    "blkioDeviceOptions": Field(type="map[blkioDeviceOption]", create=True, filterable=False),
    "registryCredentialId": Field(type="reference[registryCredential]", create=True),
    "validHostIds": Field(type="array[reference[host]]", create=True, filterable=False),
    # Accepted as Rancher did; Corral creates one container per request (see docs).
    "count": Field(type="int", create=True, filterable=False),
    # Refused when given: Corral's agents do not build images (container_spec).
    "build": Field(type="dockerBuild", create=True, filterable=False),
    # Set by Corral, not by the user.
    "hostId": Field(type="reference[host]"),
    "externalId": Field(),
    "primaryIpAddress": Field(),
    "exitCode": Field(type="int"),
    "publicEndpoints": Field(type="json", filterable=False),
    "startedAt": Field(filterable=False),
    # The health its host's checks last reported (server.engine.health); None: not checked.
    "healthState": Field(type="enum", options=(
        "healthy", "initializing", "reinitializing", "unhealthy", "updating-healthy",
        "updating-unhealthy")),
    "nativeContainer": Field(type="boolean", nullable=False, filterable=False),
    "dockerPorts": Field(type="json", filterable=False),
    "allocationState": Field(type="enum", options=("inactive", "active")),
    "removeTime": Field(type="date", filterable=False),
    "removeTimeTS": Field(type="int", filterable=False),
    "data": Field(type="json", filterable=False),
}
# Rancher 1.6 filtered containers by its own columns only, none of these.
_UNFILTERED = frozenset({
    "imageUuid", "command", "entryPoint", "volumeDriver", "networkMode", "cpuShares", "cpuSet",
    "memory", "memorySwap", "privileged", "user", "workingDir", "tty", "stdinOpen",
    "domainName", "readOnly", "pidMode", "ipcMode", "startOnCreate", "publishAllPorts",
    "blkioWeight", "primaryIpAddress"})
CONTAINER_FIELDS.update({name: replace(spec, filterable=False)
                         for name, spec in CONTAINER_FIELDS.items() if name in _UNFILTERED})



CONTAINER = Schema(
    id="container",
    base_type="instance",
    scope=Scope.PROJECT,
    fields=CONTAINER_FIELDS,
    states=CONTAINER_LIFECYCLE.state_names,
    actions=CONTAINER_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
    links=CONTAINER_LINKS,
)

INSTANCE_STOP = Schema(id="instanceStop", scope=Scope.PROJECT, embedded=True, fields={
    "timeout": Field(type="int", create=True, nullable=False, default=10, min=0, max=600),
    "remove": Field(type="boolean", create=True, nullable=False, default=False),
})
CONTAINER_LOGS = Schema(id="containerLogs", scope=Scope.PROJECT, embedded=True, fields={
    "follow": Field(type="boolean", create=True, nullable=False, default=True),
    "lines": Field(type="int", create=True, default=100, min=0),
    "timestamps": Field(type="boolean", create=True, default=False),
})
CONTAINER_EXEC = Schema(id="containerExec", scope=Scope.PROJECT, embedded=True, fields={
    "command": Field(type=_S, create=True, required=True, nullable=False),
    "tty": Field(type="boolean", create=True, nullable=False, default=True),
    "attachStdin": Field(type="boolean", create=True, nullable=False, default=True),
    "attachStdout": Field(type="boolean", create=True, nullable=False, default=True),
})
HOST_ACCESS = Schema(id="hostAccess", scope=Scope.PROJECT, embedded=True, fields={
    "url": Field(nullable=False), "token": Field(nullable=False),
})
SET_LABELS = Schema(id="setLabelsInput", scope=Scope.PROJECT, embedded=True, fields={
    "labels": Field(type=_M, create=True, required=True, nullable=False),
})

class ContainerType(ResourceType):
    lifecycle = CONTAINER_LIFECYCLE

    async def create(self, caller: Caller, values: dict[str, Any], *,
                     owned_by: Mapping[str, Any] | None = None) -> Record:
        """Place and record a container. ``owned_by``: the data that makes it a service's
        (``serviceId``, its deployment unit...), stored with it."""
        project_id, _ = self.owner(caller)
        assert project_id is not None
        container_uuid = str(uuidlib.uuid4())
        name = values.get("name")
        assert caller.project is not None
        values = with_environment_label(values, caller.project.uuid)
        spec_values = await with_volume_mounts(caller.store, project_id, values)
        spec = build_spec(spec_values, uuid=container_uuid, name=name)
        spec["volumesFrom"] = await self._docker_ids(caller, project_id, spec["volumesFrom"])
        credential_id = await check_registry_credential(caller.store, project_id, values)
        names = volume_names(spec)
        volume_hosts = await named_volume_hosts(caller.store, project_id, names) \
            if names else None
        required = placement_hosts(volume_hosts or None,
                                   await valid_host_ids(caller.store, project_id, values))

        claimed = False

        async def record_on(tx: Transaction, host: Record) -> Record:
            nonlocal claimed
            if name is not None:
                await self._check_unique_name(tx, project_id, name)
            placed_spec = with_discovery({**spec, "ports": [
                {**port, "hostIp": port["hostIp"] or host.data.get("agentIpAddress")}
                for port in spec["ports"]]}, host, values)
            data = {k: v for k, v in values.items() if k not in ("name", "description")}
            data.update(spec=placed_spec, hostId=host.id, registryCredential=credential_id)
            if owned_by:
                data.update(owned_by)
            try:
                created = await tx.create(NewRecord(
                    type="container", kind="container", state="requested", name=name,
                    description=values.get("description"), project_id=project_id,
                    uuid=container_uuid, transitioning="yes",
                    transitioning_message="In Progress", data=data))
            except Conflict as exc:
                raise ApiConflict(str(exc)) from exc
            if spec["networkMode"] == MANAGED:
                created = await lease_container_address(tx, host, created)
            claimed = await caller.services.runner.claim_in(tx, created.id, "create")
            return created

        record = await caller.services.placer.place(caller.store, project_id, values, spec,
                                                    required, record_on)
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
        spec = record.data.get("spec") or {}
        placed = isinstance(host_id, int) and record.removed is None
        return {
            "hostId": format_id("1h", host_id) if isinstance(host_id, int) else None,
            "requestedHostId": requested,
            # Not nullable, as in Rancher: a container created without them shows {}.
            "environment": record.data.get("environment") or {},
            "labels": record.data.get("labels") or {},
            # Typed as Rancher's restartPolicy and logConfig, however they were sent.
            "restartPolicy": spec.get("restartPolicy"),
            "logConfig": spec.get("logConfig"),
            "allocationState": "active" if placed else "inactive",
            # Started outside Corral and found on its host (stored as ``native``).
            "nativeContainer": bool(record.data.get("native")),
            "removeTime": iso(record.removed),
            "removeTimeTS": record.removed,
            "data": {"dockerInspect": docker_inspect(record)},
            "primaryIpAddress": primary_address(record),
        }

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        host_id = record.data.get("hostId")
        if isinstance(host_id, int):
            return {"host": f"{ctx.base_url}/hosts/{format_id('1h', host_id)}",
                    "stats": f"{self_url}/stats"}
        return {}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        return await container_linked(caller, record, name)

    async def follow_link(self, caller: Caller, record: Record,
                          name: str) -> dict[str, Any]:
        if name != "stats":
            return await super().follow_link(caller, record, name)
        if record.state != "running":
            raise invalid("InvalidState", None, "only a running container has stats")
        return await caller.services.instructions.sample(
            record, "instance.stats", {"uuid": record.uuid}, "containerStats")

    async def run_action(self, caller: Caller, record: Record, name: str,
                         values: dict[str, Any]) -> Record | dict[str, Any]:
        if name == "remove" and record.state in STOPPABLE:
            # Not listed there, as in Rancher, but asked for it stops the container first.
            return await self.remove(caller, record)
        return await super().run_action(caller, record, name, values)

    async def remove(self, caller: Caller, record: Record) -> Record:
        if record.state in STOPPABLE:
            # Rancher stops a running container on its way out: stopping, removing, removed.
            return await self._step(caller, record, "stop", {"remove": True})
        return await super().remove(caller, record)

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name == "update":  # the fields change through PUT; this re-reads the host's view
            return await self._step(caller, record, update_step(record.state).action, {})
        if self.lifecycle.step(name) is not None:
            return await self._step(caller, record, name, values)
        if name in LABEL_ACTIONS:
            return await self.write(caller, record, {},
                                    {"labels": relabelled(record, name, values)})
        if name == "proxy":
            return await self.proxy(caller, record, values)
        return await self.stream_action(caller, record, name, values)

    async def _step(self, caller: Caller, record: Record, name: str,
                    values: dict[str, Any]) -> Record:
        """A step on the container's host, which must be there, except to remove a container
        whose host is away: that is recorded at once, and the host removes the container
        when it reconnects (see Reconciler.on_inventory)."""
        row = lifecycle_step(name)
        removing = name == "remove" or (name == "stop" and bool(values.get("remove")))
        host_id = record.data.get("hostId")
        if name != "purge" and isinstance(host_id, int) and record.data.get("externalId") \
                and not caller.services.hub.is_live(host_id):
            if removing:
                removed = await self.write(caller, record, entered("removed"))
                await release_mounts(caller.store, removed, volumes_removed=False)
                return removed
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected: its agent is "
                              "not connected, so the container cannot be changed now",
                              code="HostNotConnected")
        data: dict[str, Any] = {}
        if values.get("timeout") is not None:
            data["stopTimeout"] = values["timeout"]
        if name == "stop":  # instanceStop.remove: removed once stopped
            data["removeAfterStop"] = removing
        return await self.take_step(caller, record, row, data or None)

    def _live_host(self, caller: Caller, record: Record) -> int:
        host_id = record.data.get("hostId")
        if not isinstance(host_id, int) or not record.data.get("externalId"):
            raise invalid("InvalidState", None, "the container was never created on a host")
        if not caller.services.hub.is_live(host_id):
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected",
                              code="HostNotConnected")
        return host_id

    async def stream_action(self, caller: Caller, record: Record, name: str,
                            values: dict[str, Any]) -> dict[str, Any]:
        """A ticket for a websocket to the container's logs or to a command run in it."""
        from server.agents.streams import Ticket
        from server.tokens import TokenTooLong

        host_id = self._live_host(caller, record)
        if name == "logs":
            data = {"uuid": record.uuid, "follow": values.get("follow", True),
                    "tail": values.get("lines", 100), "timestamps": values.get("timestamps")}
            instruction = "instance.logs"
        else:
            data = {"uuid": record.uuid, "command": values["command"],
                    "tty": values.get("tty", True),
                    "attachStdin": values.get("attachStdin", True)}
            instruction = "instance.exec"
        try:
            token = caller.services.streams.issue(Ticket(
                host_id=host_id, instruction=instruction,
                resource_id=format_id(self.schema.id_prefix, record.id), data=data))
        except TokenTooLong:  # the command travels in the token
            raise invalid("MaxLengthExceeded", "command",
                          "the command is too long to run through a stream") from None
        ws_origin = (caller.origin or caller.public_origin).replace("http", "ws", 1)
        return host_access(f"{ws_origin}/v1/stream?token={token}", token)

    async def proxy(self, caller: Caller, record: Record,
                    values: dict[str, Any]) -> dict[str, Any]:
        """Rancher's ``proxy``: a token for HTTP requests to one of the container's ports,
        carried through its host's agent session (``server.agents.proxy``). The container's
        ``io.rancher.websocket.proxy.*`` labels override the port and scheme asked for."""
        from server.agents.proxy import PROXY_PATH, PROXY_SECONDS
        from server.agents.streams import Ticket

        host_id = self._live_host(caller, record)
        port, scheme = proxy_target(record, values)
        token = caller.services.streams.issue(Ticket(
            host_id=host_id, instruction="instance.proxy",
            resource_id=format_id(self.schema.id_prefix, record.id),
            data={"uuid": record.uuid, "port": port, "scheme": scheme},
            expires=time.time() + PROXY_SECONDS))
        origin = caller.origin or caller.public_origin
        return host_access(f"{origin}{PROXY_PATH}/{token}/", token)


LABEL_ACTIONS = frozenset({"setlabels", "addlabel", "removelabel"})
PROXY_PORT_LABEL = "io.rancher.websocket.proxy.port"
PROXY_SCHEME_LABEL = "io.rancher.websocket.proxy.scheme"


def relabelled(record: Record, action: str, values: Mapping[str, Any]) -> dict[str, str]:
    """The container's labels after ``setlabels``, ``addlabel`` or ``removelabel``."""
    if action == "setlabels":
        return dict(values["labels"] or {})
    labels = dict(record.data.get("labels") or {})
    if action == "addlabel":
        labels[str(values["key"])] = str(values.get("value") or "")
    else:
        labels.pop(str(values["key"]), None)
    return labels


def proxy_target(record: Record, values: Mapping[str, Any]) -> tuple[int, str]:
    """The port and scheme a proxy token leads to: the labels', else the ones asked for."""
    labels = record.data.get("labels") or {}
    port: int = values.get("port") or 80
    label_port = str(labels.get(PROXY_PORT_LABEL) or "")
    if label_port.isdigit() and 0 < int(label_port) < 65536:
        port = int(label_port)
    scheme = str(labels.get(PROXY_SCHEME_LABEL) or "")
    if scheme not in ("http", "https"):
        scheme = str(values.get("scheme") or "http")
    return port, scheme


def host_access(url: str, token: str) -> dict[str, Any]:
    return {"type": "hostAccess", "links": {}, "actions": {}, "url": url, "token": token}


def types() -> list[ResourceType]:
    return [ContainerType(CONTAINER)]


EMBEDDED = [INSTANCE_STOP, SET_LABELS, CONTAINER_LOGS, CONTAINER_EXEC, HOST_ACCESS,
            *ACTION_INPUTS]
