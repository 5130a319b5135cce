"""One reconcile pass of a service: read what it has, plan (``service_units.plan``), and carry
the plan out through the same domain operations a client uses (placement, the container
lifecycle), as Corral itself.

A pass never waits for containers to come up: creating one records it and hands it to the
runner. What went wrong (no host fits, a bad image) is returned as the pass's problem, which
the controller shows as the service's transitioning error and tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server import operations
from server.api.errors import ApiError
from server.api.validation import validate_create
from server.caller import Caller
from server.engine.service_units import (
    GLOBAL_LABEL,
    PRIMARY,
    HostView,
    Member,
    Plan,
    Wish,
    container_name,
    drain_seconds,
    health_of,
    plan,
    service_labels,
)
from server.resources.containers import CONTAINER, ContainerType
from server.store import Condition, Query, Record
from server.store import Conflict as StoreConflict
from server.store.paging import list_all
from shared.ids import format_id

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    plan: Plan
    problem: str | None = None
    health: str | None = None


def launch_version(service: Record) -> str:
    """A digest of the launch configs: containers made from another one are outdated."""
    configs = [service.data.get("launchConfig") or {},
               *(service.data.get("secondaryLaunchConfigs") or [])]
    text = json.dumps(configs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wish_of(service: Record) -> Wish:
    config = service.data.get("launchConfig") or {}
    labels = config.get("labels") or {}
    sidekicks = tuple(str(c.get("name")) for c in service.data.get("secondaryLaunchConfigs")
                      or [])
    check = config.get("healthCheck") or {}
    strategy = check.get("strategy") or "recreate"
    quorum = (check.get("recreateOnQuorumStrategyConfig") or {}).get("quorum")
    return Wish(scale=int(service.data.get("scale", 1) or 0),
                launch_configs=(PRIMARY, *sidekicks),
                global_=str(labels.get(GLOBAL_LABEL, "")).lower() == "true",
                recreate_unhealthy=strategy != "none",
                quorum=int(quorum) if strategy == "recreateOnQuorum" and
                isinstance(quorum, int) else None,
                version=launch_version(service))


def member_of(container: Record) -> Member | None:
    unit = container.data.get("deploymentUnitUuid")
    index = container.data.get("createIndex")
    if not isinstance(unit, str) or not isinstance(index, int):
        return None
    host_id = container.data.get("hostId")
    return Member(id=container.id, unit=unit, index=index,
                  launch_config=str(container.data.get("launchConfigName") or PRIMARY),
                  state=container.state, host_id=host_id if isinstance(host_id, int) else None,
                  health=container.data.get("healthState"),
                  version=container.data.get("launchVersion"),
                  draining=bool(container.data.get("draining")))


def host_view(host: Record, lost_after_ms: float, now_ms: float) -> HostView:
    agent = host.data.get("agentState")
    active = host.state == "active" and agent == "active"
    changed = host.data.get("agentStateChangedAt")
    lost = agent == "disconnected" and host.state != "inactive" and \
        isinstance(changed, int | float) and now_ms - changed >= lost_after_ms
    return HostView(id=host.id, active=active, lost=lost)


async def service_containers(store: Any, service: Record) -> list[Record]:
    return await list_all(store, Query(types=["container"], project_id=service.project_id,
                                       conditions=[Condition("serviceId", "eq", service.id,
                                                             "int"),
                                                   Condition("removed", "null")]))


class ServicePass:
    """Carries out reconcile passes for one server."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @property
    def lost_after_ms(self) -> float:
        return self._services.settings.host_lost_timeout * 1000

    async def hosts(self, project_id: int | None) -> dict[int, HostView]:
        hosts = await list_all(self._services.store, Query(
            types=["host"], project_id=project_id, conditions=[Condition("removed", "null")]))
        now = time.time() * 1000
        return {h.id: host_view(h, self.lost_after_ms, now) for h in hosts}

    async def run(self, service: Record) -> PassResult:
        store = self._services.store
        project = await store.get(service.project_id) if service.project_id else None
        stack = await store.get(service.data.get("stackId", 0))
        if project is None or stack is None:
            return PassResult(Plan(), "the service's stack or environment is gone")
        containers = await service_containers(store, service)
        members = [m for c in containers if (m := member_of(c)) is not None]
        wish = wish_of(service)
        aside: list[Member] = []
        if service.state == "upgraded":
            # The old units wait, stopped, for finishupgrade or rollback: not ours to judge.
            aside = [m for m in members if m.version != wish.version]
            members = [m for m in members if m.version == wish.version]
        hosts = await self.hosts(service.project_id)
        health = health_of(members, wish.scale if not wish.global_ else 0)
        result = plan(wish, members, hosts, aside=aside)
        caller = Caller.system(self._services, project)
        by_id = {c.id: c for c in containers}
        for container_id in result.remove:
            container = by_id.get(container_id)
            if container is not None:
                await self._retire(caller, service, container, hosts)
        problem = None
        for new in result.create:
            try:
                await self.create_unit(caller, service, stack, new.index, new.host_id)
            except ApiError as exc:
                problem = exc.message or exc.code
                log.info("service %s: could not create unit %s: %s", service.id, new.index,
                         problem)
                break
        return PassResult(result, problem, health)

    async def _retire(self, caller: Caller, service: Record, container: Record,
                      hosts: Mapping[int, HostView]) -> None:
        """A container the service no longer wants: one that still serves clients is drained
        first (out of discovery and load balancers at once, removed a drain later, by a pass
        this one asks for), so a scale-down fails no request; any other goes at once."""
        host_id = container.data.get("hostId")
        host = hosts.get(host_id) if isinstance(host_id, int) else None
        serving = container.state == "running" and host is not None and host.active and \
            container.data.get("healthState") != "unhealthy"
        if serving:
            drain = drain_seconds(service.data.get("launchConfig") or {})
            since = container.data.get("drainingAt")
            now = time.time()
            if not container.data.get("draining") or not isinstance(since, int | float):
                with contextlib.suppress(StoreConflict):
                    await self._services.store.update(container.id, {}, {
                        "draining": True, "drainingAt": now})
                self._again(service.id, drain)
                return
            if now - since < drain:
                self._again(service.id, drain - (now - since))
                return
        await self._remove(caller, container)

    def _again(self, service_id: int, delay: float) -> None:
        """Another pass of the service ``delay`` seconds from now."""
        controller = self._services.service_controller
        asyncio.get_running_loop().call_later(delay + 0.05, controller.queue, service_id)

    async def _remove(self, caller: Caller, container: Record) -> None:
        current = await caller.store.get(container.id)
        if current is None or current.removed is not None or current.state == "removing" or \
                (current.state == "stopping" and current.data.get("removeAfterStop")):
            return  # on its way out already
        try:
            await operations.remove(caller, current)
        except ApiError as exc:  # mid-operation: the next pass tries again
            log.info("service container %s: not removed yet: %s", container.id, exc.message)

    async def create_unit(self, caller: Caller, service: Record, stack: Record, index: int,
                          host_id: int | None, *, version: str | None = None,
                          configs: list[Mapping[str, Any]] | None = None) -> list[Record]:
        """A deployment unit: the primary container placed, then its sidekicks beside it."""
        rtype = caller.services.types.get("container")
        assert isinstance(rtype, ContainerType)
        unit = str(uuidlib.uuid4())
        if configs is None:
            configs = [service.data.get("launchConfig") or {},
                       *(service.data.get("secondaryLaunchConfigs") or [])]
        made: list[Record] = []
        target = host_id
        for position, config in enumerate(configs):
            launch_config = PRIMARY if position == 0 else str(config.get("name"))
            name = container_name(stack.name or "", service.name or "", launch_config, index)
            body = {k: v for k, v in config.items() if k not in ("name", "count")}
            labels = {**(body.get("labels") or {}),
                      **service_labels(stack.name or "", service.name or "", unit,
                                       launch_config)}
            body.update(name=name, labels=labels, startOnCreate=True)
            if target is not None:
                body["requestedHostId"] = format_id("1h", target)
            values = validate_create(CONTAINER, body)
            owned = {"serviceId": service.id, "stackId": stack.id, "deploymentUnitUuid": unit,
                     "createIndex": index,
                     "launchConfigName": None if position == 0 else launch_config,
                     "launchVersion": version or launch_version(service)}
            if (config.get("healthCheck") or {}).get("port"):
                owned["healthState"] = "initializing"
            record = await rtype.create(caller, values, owned_by=owned)
            made.append(record)
            target = record.data.get("hostId") if isinstance(record.data.get("hostId"),
                                                             int) else target
        return made
