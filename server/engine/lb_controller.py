"""Load balancers, driven from the server: their instances placed on hosts, each host's
balancers pushed to its agent (``lb.apply``), and what the agents report recorded.

For each running balancer (``active`` or ``upgraded``) the controller keeps its instances
where ``server.engine.lb_placement`` says, under the balancer's claim, so that two servers
never place one balancer at once. Each host is sent every balancer instance placed on it,
with its rules' targets resolved (``server.engine.lb_state``), its certificates (keys
decrypted only into the payload) and a digest of it all as its config version: a target
that comes, goes, scales, is drained by an upgrade or fails its health check, or a
certificate that is updated, changes the digest and the agent applies it (through HAProxy's
runtime API where it can, by a hitless reload otherwise). The agent reports each instance's
state as it changes (``lbReport``); the instance records show it, and the balancer's
``currentScale`` and ``healthState`` sum them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server.engine.lb_placement import LbHost, Placed, place
from server.engine.lb_state import Targets, balancer_of
from server.engine.pusher import HostState, Pusher, Target
from server.engine.service_reconcile import host_view
from server.resources.service_lifecycle import RUNNING_STATES
from server.store import Condition, Conflict, NewRecord, Query, Record
from server.store.paging import list_all
from shared import protocol
from shared.errors import ProtocolError
from shared.lb import LbApplied, LbApply
from shared.lb_report import LbResult

if TYPE_CHECKING:
    from server.store import Change

log = logging.getLogger(__name__)

INSTRUCTION = "lb.apply"
GLOBAL_LABEL = "io.rancher.scheduler.global"
PLACE_CLAIM_MS = 30_000
RESYNC_SECONDS = 5.0
_CONTAINER_FIELDS = frozenset({"state", "healthState", "draining", "primaryIpAddress",
                               "removed", "hostId"})
_HOST_FIELDS = frozenset({"state", "agentState", "removed", "agentIpAddress",
                          "agentInstructions"})
# Where a balancer's instances go; in any other state (a step under way) they stay.
STOPPED_STATES = frozenset({"inactive", "deactivating", "removing", "removed"})
_OWN_TYPES = frozenset({"loadBalancerService", "loadBalancerInstance", "certificate"})


def _alive(*types: str) -> Query:
    return Query(types=list(types), conditions=[Condition("removed", "null")])


class LoadBalancerController(Pusher):
    name = "lb"
    instruction = INSTRUCTION
    reply_type = LbApplied

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resync: asyncio.Task[None] | None = None

    def bears_on(self, change: Change) -> bool:
        record = change.record
        if record.type in _OWN_TYPES:
            return True
        if record.type == "host":
            return change.kind == "create" or not _HOST_FIELDS.isdisjoint(change.fields)
        if record.type == "container" and record.data.get("serviceId") is not None:
            return change.kind == "create" or not _CONTAINER_FIELDS.isdisjoint(change.fields)
        if record.type == "service":  # a selector may match its new labels
            return change.kind == "create" or "launchConfig" in change.fields
        return False

    async def on_start(self, project_ids: list[int]) -> None:
        self._resync = asyncio.create_task(self._resync_loop())

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
        await super().stop()

    async def _resync_loop(self) -> None:
        """A host's lost timer runs out without a change to the log: look again now and
        then."""
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                for balancer in await list_all(self._store, _alive("loadBalancerService")):
                    self.mark(balancer.project_id)
            except Exception:
                log.exception("lb: could not list the load balancers to resync")

    # --- placement ----------------------------------------------------------------------

    async def compute(self, project_id: int) -> dict[int, HostState]:
        balancers = await list_all(self._store, Query(
            types=["loadBalancerService"], project_id=project_id,
            conditions=[Condition("removed", "null")]))
        hosts = await list_all(self._store, Query(
            types=["host"], project_id=project_id, conditions=[Condition("removed", "null")]))
        instances = await list_all(self._store, Query(
            types=["loadBalancerInstance"], project_id=project_id,
            conditions=[Condition("removed", "null")]))
        known = {b.id for b in balancers}
        orphans = [i for i in instances if i.data.get("serviceId") not in known]
        for orphan in orphans:  # its balancer was removed
            with contextlib.suppress(Conflict):
                await self._store.update(orphan.id, {"state": "removed",
                                                     "removed": int(time.time() * 1000)})
        instances = [i for i in instances if i.data.get("serviceId") in known]
        for balancer in balancers:
            if await self._place(balancer, hosts, instances):
                instances = await list_all(self._store, Query(
                    types=["loadBalancerInstance"], project_id=project_id,
                    conditions=[Condition("removed", "null")]))
        return await self._payloads(project_id, balancers, hosts, instances)

    async def _place(self, balancer: Record, hosts: list[Record],
                     instances: list[Record]) -> bool:
        """Bring the balancer's instances to where they should be; whether anything moved."""
        mine = [i for i in instances if i.data.get("serviceId") == balancer.id]
        others = [i for i in instances if i.data.get("serviceId") != balancer.id]
        ports = {int(r["sourcePort"]) for r in
                 (balancer.data.get("lbConfig") or {}).get("portRules") or []}
        lost_after = self._services.settings.host_lost_timeout * 1000
        now = time.time() * 1000
        taken: dict[int, set[int]] = {}
        counts: dict[int, int] = {}
        ports_of = await self._ports_by_service([i.data.get("serviceId") for i in others])
        for other in others:
            host_id = other.data.get("hostId")
            if isinstance(host_id, int):
                taken.setdefault(host_id, set()).update(
                    ports_of.get(other.data.get("serviceId"), set()))
                counts[host_id] = counts.get(host_id, 0) + 1
        views = {h.id: LbHost(view=host_view(h, lost_after, now),
                              taking_part=INSTRUCTION in (h.data.get("agentInstructions") or ()),
                              ports=frozenset(taken.get(h.id, ())), balancers=counts.get(h.id, 0))
                 for h in hosts}
        if balancer.state not in RUNNING_STATES and balancer.state not in STOPPED_STATES:
            return False  # a step under way (an upgrade): the instances stay as they are
        labels = (balancer.data.get("launchConfig") or {}).get("labels") or {}
        plan = place(running=balancer.state in RUNNING_STATES,
                     scale=int(balancer.data.get("scale", 1) or 0),
                     global_=str(labels.get(GLOBAL_LABEL, "")).lower() == "true",
                     ports=ports,
                     instances=[Placed(i.id, i.data.get("hostId"),
                                       int(i.data.get("createIndex") or 0)) for i in mine],
                     hosts=views)
        if not plan.create and not plan.remove:
            await self._summarize(balancer, mine, plan.short)
            return False
        owner = self._services.runner.owner
        if not await self._store.claim(balancer.id, owner, "lb-place", PLACE_CLAIM_MS):
            return False  # another server places it, or an operation is under way
        try:
            stack = await self._store.get(balancer.data.get("stackId") or 0)
            by_id = {h.id: h for h in hosts}
            for instance_id in plan.remove:
                with contextlib.suppress(Conflict):
                    await self._store.update(instance_id, {"state": "removed",
                                                           "removed": int(now)})
            for index, host_id in plan.create:
                host = by_id[host_id]
                await self._store.create(NewRecord(
                    type="loadBalancerInstance", kind="loadBalancerInstance",
                    state="starting", project_id=balancer.project_id,
                    name=f"{stack.name if stack else 'lb'}-{balancer.name}-{index}",
                    data={"hostId": host_id, "serviceId": balancer.id,
                          "stackId": balancer.data.get("stackId"), "createIndex": index,
                          "primaryIpAddress": host.data.get("agentIpAddress"),
                          "ports": [f"{p}:{p}/tcp" for p in sorted(ports)],
                          "healthState": "initializing"}))
            log.info("load balancer %s: %d instance(s) placed, %d removed", balancer.name,
                     len(plan.create), len(plan.remove))
        finally:
            with contextlib.suppress(Exception):
                await self._store.release(balancer.id, owner)
        return True

    async def _ports_by_service(self, ids: list[Any]) -> dict[Any, set[int]]:
        out: dict[Any, set[int]] = {}
        for service_id in {i for i in ids if isinstance(i, int)}:
            service = await self._store.get(service_id)
            rules = ((service.data.get("lbConfig") or {}).get("portRules") or []) \
                if service is not None else []
            out[service_id] = {int(r["sourcePort"]) for r in rules}
        return out

    async def _summarize(self, balancer: Record, instances: list[Record], short: int) -> None:
        """currentScale and healthState of the balancer from its instances."""
        running = [i for i in instances if i.state == "running"]
        states = [i.data.get("healthState") for i in instances]
        if not instances:
            health = "healthy" if not short else "initializing"
        elif all(s == "healthy" for s in states):
            health = "healthy"
        elif all(s == "unhealthy" for s in states):
            health = "unhealthy"
        elif "unhealthy" in states:
            health = "degraded"
        else:
            health = "initializing"
        changes = {k: v for k, v in (("currentScale", len(running)), ("healthState", health))
                   if balancer.data.get(k) != v}
        if changes:
            with contextlib.suppress(Conflict):
                await self._store.update(balancer.id, {}, changes)

    # --- payloads -----------------------------------------------------------------------

    async def _payloads(self, project_id: int, balancers: list[Record], hosts: list[Record],
                        instances: list[Record]) -> dict[int, HostState]:
        taking_part = [h for h in hosts if INSTRUCTION in (h.data.get("agentInstructions") or ())]
        if not taking_part:
            return {}
        by_id = {b.id: b for b in balancers}
        services = {s.id: s for s in await list_all(self._store, Query(
            types=["service"], project_id=project_id, conditions=[Condition("removed", "null")]))}
        containers: dict[int, list[Record]] = {}
        for container in await list_all(self._store, Query(
                types=["container"], project_id=project_id,
                conditions=[Condition("removed", "null")])):
            service_id = container.data.get("serviceId")
            if isinstance(service_id, int):
                containers.setdefault(service_id, []).append(container)
        targets = Targets(services, containers)
        certificates = await self._certificates(balancers)
        per_host: dict[int, list[Any]] = {h.id: [] for h in taking_part}
        for instance in sorted(instances, key=lambda i: i.id):
            service = by_id.get(int(instance.data.get("serviceId") or 0))
            host_id = instance.data.get("hostId")
            if service is None or host_id not in per_host or service.state in STOPPED_STATES:
                continue
            balancer = balancer_of(instance.uuid, service.name or "",
                                   service.data.get("lbConfig") or {}, targets, certificates)
            per_host[host_id].append(balancer)
            if instance.data.get("requestedConfigVersion") != balancer.config_version:
                with contextlib.suppress(Conflict):
                    await self._store.update(instance.id, {}, {
                        "requestedConfigVersion": balancer.config_version})
        return {host_id: Target(host_id, LbApply.of(tuple(found)))
                for host_id, found in per_host.items()}

    async def _certificates(self, balancers: list[Record]) -> Mapping[int, tuple[str, str]]:
        from server.certificates import certificate_bundle

        wanted: set[int] = set()
        for balancer in balancers:
            config = balancer.data.get("lbConfig") or {}
            wanted.update(c for c in config.get("certificateIds") or [] if isinstance(c, int))
            if isinstance(config.get("defaultCertificateId"), int):
                wanted.add(config["defaultCertificateId"])
        out: dict[int, tuple[str, str]] = {}
        for certificate_id in sorted(wanted):
            record = await self._store.get(certificate_id)
            if record is None or record.removed is not None:
                continue
            try:
                pem = certificate_bundle(record, self._services.server_key)
            except (ValueError, RuntimeError) as exc:
                log.warning("certificate %s cannot be used: %s", record.name, exc)
                continue
            out[certificate_id] = (f"1c{certificate_id}", pem)
        return out

    # --- reports ------------------------------------------------------------------------

    async def on_report(self, host_id: int, report: protocol.LbReport) -> None:
        for index, obj in enumerate(report.results):
            try:
                result = LbResult.parse(obj, f"lbReport result {index}")
            except ProtocolError as exc:
                log.warning("[host 1h%s] ignored a load balancer result: %s", host_id, exc)
                continue
            await self._record(host_id, result)

    async def _record(self, host_id: int, result: LbResult) -> None:
        instance = await self._store.get_by_uuid(result.uuid)
        if instance is None or instance.type != "loadBalancerInstance" or \
                instance.data.get("hostId") != host_id or instance.removed is not None:
            return  # not this host's to say
        state = str(result.state)
        requested = instance.data.get("requestedConfigVersion")
        health = "unhealthy" if state == "error" else \
            "healthy" if state == "running" and result.config_version == requested else \
            "initializing"
        columns: dict[str, Any] = {}
        if instance.state != state:
            columns["state"] = state
        message = result.message if state == "error" else None
        if instance.transitioning_message != message:
            columns["transitioning_message"] = message
            columns["transitioning"] = "error" if message else "no"
        data = {k: v for k, v in (("configVersion", result.config_version),
                                  ("pid", result.pid), ("healthState", health))
                if instance.data.get(k) != v}
        if columns or data:
            if "state" in columns:
                log.info("load balancer instance %s is %s%s", instance.name, state,
                         f": {message}" if message else "")
            with contextlib.suppress(Conflict):
                await self._store.update(instance.id, columns, data)
