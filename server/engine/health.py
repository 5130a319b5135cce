"""Health checks, driven from the server: which agent checks which container, and what the
reports they send change.

**The container's own host checks it.** Its agent reaches the container's managed address over
the local bridge, whatever the network policy between hosts or a partition says; a check from
another host would fail with the network and recreate healthy containers (Rancher's checkers
on other hosts did just that on flaky links). A dead host cannot hide its own failures
behind this: its agent stops answering, the host turns ``disconnected``, and once the lost
timer has run out its containers are replaced whatever their last health was
(``server.engine.service_units``); while it is away, its containers keep the health last
reported, and discovery on other hosts keeps answering with them only as long as they are
reported healthy.

Each host is sent ``health.apply`` with every check of its containers (the whole list, by
version, as every pusher does); its agent reports each container's state as it changes
(``healthReport``), which is written to the container's ``healthState`` when it differs.
A service's health (and its stack's) is summed up by the service controller.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.engine.discovery_state import address_of
from server.engine.pusher import HostState, Pusher, Target
from server.store import Condition, Conflict, Query, Record
from server.store.paging import list_all
from shared import protocol
from shared.errors import ProtocolError
from shared.health import HealthApplied, HealthApply, HealthCheck, HealthResult

if TYPE_CHECKING:
    from server.store import Change

log = logging.getLogger(__name__)

INSTRUCTION = "health.apply"
_CONTAINER_FIELDS = frozenset({"primaryIpAddress", "state", "removed", "hostId", "startedAt",
                               "healthCheck"})
_HOST_FIELDS = frozenset({"removed", "agentInstructions"})
_CHECKED_STATES = frozenset({"running", "starting", "restarting", "updating-running"})


def started_at(container: Record) -> float | None:
    """Docker's start time (RFC 3339, nanoseconds) as epoch seconds."""
    text = container.data.get("startedAt")
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    try:
        head, _, rest = text.partition(".")
        stamp = datetime.fromisoformat(head.rstrip("Z") + "+00:00")
        fraction = rest.rstrip("Z").split("+")[0].split("-")[0]
        return stamp.timestamp() + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def check_of(container: Record) -> HealthCheck | None:
    """The check a container asks for, where it can be run (a managed address)."""
    spec = container.data.get("healthCheck")
    address = address_of(container)
    if not isinstance(spec, Mapping) or not spec.get("port") or address is None or \
            container.state not in _CHECKED_STATES:
        return None

    def number(key: str) -> int | None:
        value = spec.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and \
            value > 0 else None

    return HealthCheck(
        uuid=container.uuid, address=address, port=int(spec["port"]),
        request_line=str(spec.get("requestLine") or "") or None,
        interval_ms=number("interval") or 2000,
        response_timeout_ms=number("responseTimeout") or 2000,
        healthy_threshold=number("healthyThreshold") or 2,
        unhealthy_threshold=number("unhealthyThreshold") or 3,
        initializing_timeout_ms=number("initializingTimeout"),
        reinitializing_timeout_ms=number("reinitializingTimeout"),
        started_at=started_at(container))


def payloads(containers: Iterable[Record], host_ids: Iterable[int]) -> dict[int, HealthApply]:
    per_host: dict[int, list[HealthCheck]] = {h: [] for h in host_ids}
    for container in containers:
        host_id = container.data.get("hostId")
        if container.removed is None and isinstance(host_id, int) and host_id in per_host \
                and (check := check_of(container)) is not None:
            per_host[host_id].append(check)
    out: dict[int, HealthApply] = {}
    for host_id, checks in per_host.items():
        checks.sort(key=lambda c: c.uuid)
        text = json.dumps([c.dump() for c in checks], sort_keys=True)
        out[host_id] = HealthApply(version=hashlib.sha256(text.encode()).hexdigest()[:16],
                                   checks=tuple(checks))
    return out


class HealthController(Pusher):
    name = "health"
    instruction = INSTRUCTION
    reply_type = HealthApplied

    def bears_on(self, change: Change) -> bool:
        record = change.record
        if record.type == "container":
            return bool(record.data.get("healthCheck")) and (
                change.kind == "create" or not _CONTAINER_FIELDS.isdisjoint(change.fields))
        if record.type == "host":
            return change.kind == "create" or not _HOST_FIELDS.isdisjoint(change.fields)
        return False

    async def compute(self, project_id: int) -> dict[int, HostState]:
        hosts = await self.hosts_taking_part(project_id)
        if not hosts:
            return {}
        containers = await list_all(self._store, Query(
            types=["container"], project_id=project_id,
            conditions=[Condition("removed", "null")]))
        return {host_id: Target(host_id, payload)
                for host_id, payload in payloads(containers, [h.id for h in hosts]).items()}

    async def on_report(self, host_id: int, report: protocol.HealthReport) -> None:
        """A host's agent says how its containers are: written where it changed."""
        for index, obj in enumerate(report.results):
            try:
                result = HealthResult.parse(obj, f"healthReport result {index}")
            except ProtocolError as exc:
                log.warning("[host 1h%s] ignored a health result: %s", host_id, exc)
                continue
            await self._record(host_id, result)

    async def _record(self, host_id: int, result: HealthResult) -> None:
        container = await self._store.get_by_uuid(result.uuid)
        if container is None or container.type != "container" or \
                container.data.get("hostId") != host_id or container.removed is not None:
            return  # not this host's to say (moved, removed, or a stale report)
        state = str(result.state)
        changes: dict[str, Any] = {}
        if container.data.get("healthState") != state:
            changes["healthState"] = state
        if container.data.get("healthMessage") != result.message:
            changes["healthMessage"] = result.message
        if changes:
            if "healthState" in changes:
                log.info("container %s (%s) is %s%s", container.name, container.uuid, state,
                         f": {result.message}" if result.message else "")
            with contextlib.suppress(Conflict):
                await self._store.update(container.id, {}, changes)
