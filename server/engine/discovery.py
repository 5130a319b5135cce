"""Service discovery, driven from the server: every agent's DNS responder answers from the
environment's discovery table (``server.engine.discovery_state``), sent as ``dns.apply``
whenever it changes (a container starts, stops, turns healthy or unhealthy, drains; a
service, link or stack changes) and to every new session. Answers live one second, so a
change reaches the containers' lookups within the push and a second: the 2 s Rancher users
were promised by nothing.

Agents that do not list ``dns.apply`` among their instructions are not sent it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from server.engine.discovery_state import build_table, payloads
from server.engine.pusher import HostState, Pusher, Target
from server.service_kinds import SERVICE_KINDS
from server.store import Condition, Conflict, Query
from server.store.paging import list_all
from shared.discovery import DnsApplied

if TYPE_CHECKING:
    from server.store import Change

log = logging.getLogger(__name__)

INSTRUCTION = "dns.apply"
SERVICE_TYPES = list(SERVICE_KINDS)
_CONTAINER_FIELDS = frozenset({"primaryIpAddress", "state", "removed", "healthState",
                               "draining", "name", "hostId", "linkedServices"})
_HOST_FIELDS = frozenset({"removed", "agentInstructions"})


class DiscoveryController(Pusher):
    name = "discovery"
    instruction = INSTRUCTION
    reply_type = DnsApplied

    def bears_on(self, change: Change) -> bool:
        record = change.record
        if record.type == "container":
            return change.kind == "create" or not _CONTAINER_FIELDS.isdisjoint(change.fields)
        if record.type == "host":
            return change.kind == "create" or not _HOST_FIELDS.isdisjoint(change.fields)
        return record.type == "stack" or record.type in SERVICE_TYPES

    async def compute(self, project_id: int) -> dict[int, HostState]:
        def alive(types: list[str]) -> Query:
            return Query(types=types, project_id=project_id,
                         conditions=[Condition("removed", "null")])

        hosts = await self.hosts_taking_part(project_id)
        if not hosts:
            return {}
        table = build_table(await list_all(self._store, alive(["stack"])),
                            await list_all(self._store, alive(SERVICE_TYPES)),
                            await list_all(self._store, alive(["container"])))
        return {host_id: Target(host_id, payload)
                for host_id, payload in payloads(table, [h.id for h in hosts]).items()}

    async def on_outcome(self, host_id: int, version: str | None, error: str | None) -> None:
        current = await self._store.get(host_id)
        if current is None or current.removed is not None:
            return
        changes: dict[str, Any] = {}
        if current.data.get("dnsError") != error:
            changes["dnsError"] = error
        if version is not None and current.data.get("dnsVersion") != version:
            changes["dnsVersion"] = version
        if changes:
            with contextlib.suppress(Conflict):
                await self._store.update(host_id, {}, changes)
