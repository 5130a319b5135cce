"""Hosts: registered by their agents, described by the facts the agents report.

A host's ``state`` is its lifecycle (``inactive`` after deactivate, ``removed``...) while it is
not active; an active host shows its agent's liveness there too (``reconnecting``,
``disconnected``), and always in ``agentState``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from server.agents.instructions import api_error
from server.agents.liveness import AgentState
from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import NotFound, Unavailable
from server.api.schema import Action, Field, Schema, Scope
from server.api.types import Linked, ResourceType, entered, now_ms
from server.caller import Caller
from server.engine import ipam
from server.lifecycle import Lifecycle, step
from server.resources.containers import host_access
from server.resources.host_stats import host_container_stats
from server.store import Condition, Conflict, Query, Record, Store, Transaction
from shared.errors import InstructionError
from shared.ids import format_id

LIVE_STATES = frozenset({"active", "reconnecting", "disconnected"})
MIB = 1024 * 1024
HOST_LINKS = ("agent", "physicalHost", "storagePools", "ipAddresses", "hostLabels",
              "instances", "volumes", "containerStats")
# Links answered with one sample from the host's agent; Rancher's stats links streamed them.
STATS_LINKS = ("stats", "hostStats")
# The containers (or volumes) listed by a host's instances (volumes) link (Rancher paginated
# them; Corral cuts them).
INSTANCES_LIMIT = 1000


class HostState(StrEnum):
    REGISTERING = "registering"
    ACTIVE = "active"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"
    INACTIVE = "inactive"
    REMOVED = "removed"
    PURGED = "purged"


HOST_LIFECYCLE = Lifecycle(
    states=HostState,
    initial="registering",
    steps=(
        # The target of activate is the agent's liveness, known only then (see perform).
        step("activate", {"inactive"}, "active"),
        step("deactivate", LIVE_STATES, "inactive"),
        step("remove", {"inactive", "registering"}, "removed"),
        step("purge", {"removed"}, "purged"),
    ),
    verbs={"inspect": Action(frozenset({"active"}), output="hostInspection"),
           # Rancher's: offered on an active or inactive host (deactivate only stops
           # scheduling); it needs the host's agent connected.
           "dockersocket": Action(frozenset({"active", "inactive"}), output="hostAccess")},
)

HOST = Schema(
    id="host",
    scope=Scope.PROJECT,
    fields={
        "hostname": Field(filterable=False),
        "agentIpAddress": Field(filterable=False),
        # Rancher declares a string; the values are those of AgentState.
        "agentState": Field(),
        "agentVersion": Field(),
        "labels": Field(type="map[string]", update=True, filterable=False),
        "info": Field(type="json", filterable=False),
        "memory": Field(type="int"),
        "milliCpu": Field(type="int"),
        "localStorageMb": Field(type="int"),
    },
    states=HOST_LIFECYCLE.state_names,
    actions=HOST_LIFECYCLE.actions(),
    collection_methods=("GET",),
    resource_methods=("GET", "PUT", "DELETE"),
    links=HOST_LINKS,
)

HOST_INSPECTION = Schema(
    id="hostInspection",
    scope=Scope.PROJECT,
    embedded=True,
    fields={"hostId": Field(type="reference[host]"), "facts": Field(type="json"),
            "docker": Field(type="json"), "durationMs": Field(type="int")},
)


# The states Rancher's schemas give an agent and an IP address; Corral's values are among them.
AGENT_STATES = ("activating", "active", "deactivating", "disconnected", "disconnecting",
                "inactive", "purged", "purging", "reconnecting", "registering", "removed",
                "removing", "requested", "restoring", "updating-active", "updating-inactive")
IP_ADDRESS_STATES = ("activating", "active", "associated", "associating", "deactivating",
                     "disassociating", "inactive", "purged", "purging", "registering",
                     "removed", "removing", "requested", "restoring", "updating-active",
                     "updating-inactive")

# What a host's links lead to that Corral keeps on the host itself.
AGENT = Schema(id="agent", scope=Scope.PROJECT, embedded=True, fields={
    "hostId": Field(type="reference[host]"),
    "state": Field(type="enum", nullable=False, options=AGENT_STATES),
    "version": Field(), "ipAddress": Field()})
PHYSICAL_HOST = Schema(id="physicalHost", scope=Scope.PROJECT, embedded=True, fields={
    "hostId": Field(type="reference[host]"), "name": Field(), "kind": Field(),
    "info": Field(type="json")})
IP_ADDRESS = Schema(id="ipAddress", scope=Scope.PROJECT, embedded=True, fields={
    "hostId": Field(type="reference[host]"), "address": Field(), "kind": Field(),
    "state": Field(type="enum", nullable=False, options=IP_ADDRESS_STATES)})
EMBEDDED = [AGENT, PHYSICAL_HOST, IP_ADDRESS]


def host_labels(host_id: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": value, "kind": "host", "hostId": host_id}
            for key, value in sorted(labels.items())]


def facts_fields(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Host fields derived from the facts an agent reports (hello, or changed sections)."""
    out: dict[str, Any] = {}
    if isinstance(facts.get("hostname"), str):
        out["hostname"] = facts["hostname"]
    if isinstance(facts.get("instructions"), list):  # what the agent can carry out
        out["agentInstructions"] = sorted(str(name) for name in facts["instructions"])
    if isinstance(facts.get("labels"), dict):
        out["reportedLabels"] = {str(k): str(v) for k, v in facts["labels"].items()}
    info = facts.get("info")
    if isinstance(info, dict):
        out["info"] = info
        memory = info.get("memoryInfo", {}).get("memTotal") if isinstance(
            info.get("memoryInfo"), dict) else None
        if isinstance(memory, int | float):
            out["memory"] = int(memory * MIB)
        cpus = info.get("cpuInfo", {}).get("count") if isinstance(
            info.get("cpuInfo"), dict) else None
        if isinstance(cpus, int):
            out["milliCpu"] = cpus * 1000
        mounts = info.get("diskInfo", {}).get("mountPoints") if isinstance(
            info.get("diskInfo"), dict) else None
        if isinstance(mounts, dict) and isinstance(mounts.get("/"), dict):
            total = mounts["/"].get("total")
            if isinstance(total, int | float):
                out["localStorageMb"] = int(total)
    return out


def merged_info(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Facts after a ``facts`` report: changed info sections replace the stored ones."""
    merged = dict(changes)
    if isinstance(changes.get("info"), dict):
        info = dict(current.get("info") or {})
        info.update(changes["info"])
        merged["info"] = info
    return merged


async def apply_hello(store: Store, host: Record, facts: Mapping[str, Any], agent_ip: str,
                      agent_version: str) -> Record:
    """Record what a (re)connecting agent says about its host: one write per connection."""
    data = facts_fields(facts)
    data.update(agentIpAddress=agent_ip, agentVersion=agent_version,
                agentState=AgentState.ACTIVE.value)
    if host.data.get("agentState") != AgentState.ACTIVE.value:
        data["agentStateChangedAt"] = now_ms()
    columns: dict[str, Any] = {}
    if host.state in LIVE_STATES or host.state == "registering":
        columns["state"] = "active"
    if host.name is None and "hostname" in data:
        columns["name"] = data["hostname"]
    return await store.update(host.id, columns, data)


async def apply_facts(store: Store, host_id: int, changes: Mapping[str, Any]) -> Record | None:
    """Write the sections that changed, and nothing when nothing did."""
    host = await store.get(host_id)
    if host is None:
        return None
    data = facts_fields(merged_info(host.data, changes))
    changed = {k: v for k, v in data.items() if host.data.get(k) != v}
    if not changed:
        return host
    return await store.update(host_id, {}, changed)


async def set_agent_states(store: Store, states: Mapping[int, AgentState]) -> None:
    """Persist liveness transitions (rare: not once per ping), all in one transaction."""

    async def write(tx: Transaction) -> None:
        for host_id, state in states.items():
            host = await tx.lock(host_id)
            if host is None or host.state in ("removed", "purged"):
                continue
            if host.data.get("agentState") == state.value and \
                    (host.state not in LIVE_STATES or host.state == state.value):
                continue
            columns = {"state": state.value} if host.state in LIVE_STATES else {}
            # When it changed: a service's containers on a host away for longer than the
            # lost timer are replaced (server.engine.service_units), by whichever server.
            changed: dict[str, Any] = {"agentState": state.value}
            if host.data.get("agentState") != state.value:
                changed["agentStateChangedAt"] = now_ms()
            await tx.update(host_id, columns, changed)

    if states:
        await store.transact(write)


async def hosts_with_live_agents(store: Store) -> list[Record]:
    """Hosts whose stored agent state says an agent was connected (for the start-up pass)."""
    live = [AgentState.ACTIVE.value, AgentState.REGISTERING.value]
    out: list[Record] = []
    offset = 0
    while True:
        page = await store.list(Query(types=["host"], limit=500, offset=offset))
        out.extend(r for r in page if r.data.get("agentState") in live and r.removed is None)
        if len(page) < 500:
            return out
        offset += 500


class HostType(ResourceType):
    lifecycle = HOST_LIFECYCLE

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.labels_of(record)}
        error = record.data.get("networkError")
        if error and record.transitioning != "yes" and record.removed is None:
            # Rancher's way of showing a resource that is up but not well: an error message
            # beside its state. The host keeps working; its overlay is retried.
            out.update(transitioning="error", transitioningMessage=str(error))
        return out

    @staticmethod
    def labels_of(record: Record) -> dict[str, str]:
        labels = dict(record.data.get("reportedLabels") or {})
        labels.update(record.data.get("userLabels") or {})
        return labels

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        host_id = format_id(HOST.id_prefix, record.id)
        on_host = [Condition("hostId", "eq", record.id, "int"), Condition("removed", "null")]
        match name:
            case "agent":
                return Linked("agent", one=True, objects=[{
                    "hostId": host_id, "state": record.data.get("agentState"),
                    "version": record.data.get("agentVersion"),
                    "ipAddress": record.data.get("agentIpAddress")}])
            case "physicalHost":
                return Linked("physicalHost", one=True, objects=[{
                    "hostId": host_id, "name": record.data.get("hostname") or record.name,
                    "kind": "physicalHost", "info": record.data.get("info")}])
            case "storagePools":
                return Linked("storagePool", records=await caller.store.list(Query(
                    types=["storagePool"], project_id=record.project_id, limit=100,
                    conditions=on_host)))
            case "ipAddresses":
                address = record.data.get("agentIpAddress")
                return Linked("ipAddress", objects=[
                    {"hostId": host_id, "address": address, "kind": "docker",
                     "state": "active"}] if address else [])
            case "hostLabels":
                return Linked("label", objects=host_labels(host_id, self.labels_of(record)))
            case "containerStats":
                return await host_container_stats(caller, record)
            case "instances" | "volumes":
                kind = "container" if name == "instances" else "volume"
                placed = await caller.store.list(Query(
                    types=[kind], project_id=record.project_id,
                    limit=INSTANCES_LIMIT + 1, conditions=on_host))
                return Linked(kind, records=placed[:INSTANCES_LIMIT],
                              partial=len(placed) > INSTANCES_LIMIT)
        raise NotFound(f"host has no link {name!r}")

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        return {**{name: f"{self_url}/{name}" for name in STATS_LINKS},
                "containers": f"{ctx.base_url}/containers?hostId={format_id('1h', record.id)}"}

    async def follow_link(self, caller: Caller, record: Record,
                          name: str) -> dict[str, Any]:
        if name not in STATS_LINKS:
            return await super().follow_link(caller, record, name)
        return await caller.services.instructions.sample(record, "host.stats", {}, "hostStats")

    async def update(self, caller: Caller, record: Record,
                     values: dict[str, Any]) -> Record:
        if "labels" in values:
            values["userLabels"] = values.pop("labels") or {}
        return await super().update(caller, record, values)

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        row = self.lifecycle.step(name)
        if name == "activate" and row is not None:
            state = caller.services.hub.agent_state(record.id) or AgentState.DISCONNECTED
            target = "active" if state is AgentState.ACTIVE else state.value
            return await self.take_step(caller, record, row, target=target)
        if name == "remove":
            return await self.remove_host(caller, record)
        if name == "inspect":
            return await self.inspect(caller, record)
        if name == "dockersocket":
            return self.docker_socket(caller, record)
        return await super().perform(caller, record, name, values)

    async def remove_host(self, caller: Caller, record: Record) -> Record:
        """Remove the host, revoke its agent's keys and remove what was placed on it, in one
        transaction; then send its agent away."""

        async def cascade(tx: Transaction) -> Record:
            current = await tx.lock(record.id)
            # Corral's own writes (liveness, the overlay's outcome) change a host all the
            # time; what matters is that it may still be removed.
            if current is None or (current.version != record.version
                                   and current.state != record.state):
                raise Conflict(f"host {record.id} was changed by someone else")
            # Free the host key so that registering again makes a new host.
            removed = await tx.update(record.id, {**entered("removed"), "lookup_key": None},
                                      {"agentState": AgentState.DISCONNECTED.value})
            await revoke_agent_keys(tx, record)
            await remove_placed(tx, record)
            # Its subnet and its containers' addresses are free again; the other hosts'
            # agents drop it from their peers (server.engine.overlay follows the change).
            await ipam.release_host(tx, record.id)
            return removed

        try:
            removed = await caller.store.transact(cascade)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc
        await caller.services.hub.host_removed(record.id)
        return removed

    async def inspect(self, caller: Caller, record: Record) -> dict[str, Any]:
        """Run the ``host.inspect`` instruction on the host's agent and return what it saw."""
        try:
            result = await caller.services.instructions.call(record, "host.inspect", {})
        except InstructionError as exc:
            raise api_error(exc) from exc
        return {"type": "hostInspection", "links": {}, "actions": {},
                "hostId": format_id(HOST.id_prefix, record.id), **result}

    def docker_socket(self, caller: Caller, record: Record) -> dict[str, Any]:
        """Rancher's ``dockersocket``: a ticket for websockets to the host's Docker socket,
        relayed by its agent (``server.agents.docker_socket``). The URL is without the token,
        which clients add as ``?token=``, as Rancher's did."""
        from server.agents.docker_socket import (
            DOCKER_SOCKET_PATH,
            DOCKER_SOCKET_SECONDS,
            INSTRUCTION,
        )
        from server.agents.streams import Ticket

        if not caller.services.hub.is_live(record.id):
            raise Unavailable(f"host {format_id(HOST.id_prefix, record.id)} is disconnected: "
                              "its agent is not connected, so its Docker socket cannot be "
                              "reached now", code="HostNotConnected")
        token = caller.services.streams.issue(Ticket(
            host_id=record.id, instruction=INSTRUCTION,
            resource_id=format_id(HOST.id_prefix, record.id), data={},
            expires=time.time() + DOCKER_SOCKET_SECONDS))
        ws_origin = (caller.origin or caller.public_origin).replace("http", "ws", 1)
        return host_access(f"{ws_origin}{DOCKER_SOCKET_PATH}/", token)


async def remove_placed(tx: Transaction, host: Record) -> None:
    """Containers and volumes of a removed host go with it (the host is not touched: its
    agent is gone)."""
    placed = await tx.list(Query(types=["container", "volume", "storagePool"],
                                 project_id=host.project_id, limit=100_000,
                                 conditions=[Condition("hostId", "eq", host.id, "int"),
                                             Condition("removed", "null")]))
    for record in placed:
        await tx.update(record.id, entered("removed"))


async def revoke_agent_keys(tx: Transaction, host: Record) -> None:
    keys = await tx.list(Query(types=["agentApiKey"], limit=1000, conditions=[
        Condition("hostId", "eq", host.id, "int"), Condition("state", "eq", "active")]))
    for key in keys:
        await tx.update(key.id, entered("removed"))


def types() -> list[ResourceType]:
    return [HostType(HOST)]
