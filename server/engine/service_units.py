"""What a service's containers should be, against what they are (pure).

A service runs in **deployment units**: its primary container and one of each sidekick
(``secondaryLaunchConfigs``), on one host, sharing ``io.rancher.service.deployment.unit``. A
scaled service wants ``scale`` live units; a global one (``io.rancher.scheduler.global``)
one per eligible host. :func:`plan` compares the wish with the units found and says which
units to create (and where, for a global service) and which containers to remove.

A unit is live while all its containers exist and none stopped or failed behind Corral's
back, and while its host has not been lost: a host that stops answering is ``disconnected``
first, and its containers count as live until the **lost timer** has run out since it was last
heard from (peers learned the hard way that replacing on the first blip kills healthy
workloads). When such a host comes back after its units were replaced, the surplus goes at
once: units on hosts that are not active first, then unhealthy ones, then the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

PRIMARY = "io.rancher.service.primary.launch.config"
STACK_LABEL = "io.rancher.stack.name"
SERVICE_LABEL = "io.rancher.stack_service.name"
UNIT_LABEL = "io.rancher.service.deployment.unit"
LAUNCH_CONFIG_LABEL = "io.rancher.service.launch.config"
GLOBAL_LABEL = "io.rancher.scheduler.global"
# Labels that mark a container as a service's: one found on a host without its record is a
# leftover of Corral's, never a native container to import.
OWNED_LABELS = frozenset({UNIT_LABEL, SERVICE_LABEL})

LIVE_STATES = frozenset({"requested", "creating", "starting", "running", "restarting",
                         "updating-running", "migrating"})
GONE_STATES = frozenset({"removing", "removed", "purging", "purged"})
DRAIN_SECONDS = 2.5
"""How long a container leaves discovery and load balancers before it stops: DNS answers live
1 s, pushes take less."""


def drain_seconds(launch_config: Mapping[str, Any]) -> float:
    """The drain of a service's containers: ``DRAIN_SECONDS``, or its ``drainTimeoutMs``."""
    timeout = launch_config.get("drainTimeoutMs")
    return max(DRAIN_SECONDS, timeout / 1000 if isinstance(timeout, int) and
               not isinstance(timeout, bool) else 0)


@dataclass(frozen=True)
class Member:
    """One container of a unit, as the plan needs it."""

    id: int
    unit: str
    index: int
    launch_config: str           # PRIMARY or the sidekick's name
    state: str
    host_id: int | None
    health: str | None = None    # healthState, when the container has a health check
    version: str | None = None   # the launch config version it was made from
    draining: bool = False       # on its way out: out of discovery and load balancers

    @property
    def gone(self) -> bool:
        return self.state in GONE_STATES


@dataclass(frozen=True)
class HostView:
    """A host as placement of services sees it."""

    id: int
    active: bool                 # state active and its agent connected
    lost: bool                   # disconnected for longer than the lost timer
    eligible: bool = True        # fits the service's global scheduling rules


@dataclass(frozen=True)
class Wish:
    """What the service asks for."""

    scale: int
    launch_configs: tuple[str, ...]   # PRIMARY first, then the sidekicks' names
    global_: bool = False
    recreate_unhealthy: bool = True
    quorum: int | None = None         # recreateOnQuorum: only while this many are healthy
    version: str | None = None        # the launch config version new units get


@dataclass(frozen=True)
class NewUnit:
    index: int
    host_id: int | None = None        # a global service's unit goes to this host


@dataclass
class Plan:
    create: list[NewUnit] = field(default_factory=list)
    remove: list[int] = field(default_factory=list)    # container ids
    live: int = 0                                      # live units after the plan

    @property
    def empty(self) -> bool:
        return not self.create and not self.remove


@dataclass(frozen=True)
class Unit:
    uuid: str
    index: int
    members: tuple[Member, ...]

    @property
    def host_id(self) -> int | None:
        primary = next((m for m in self.members if m.launch_config == PRIMARY), None)
        return (primary or self.members[0]).host_id

    def present(self) -> list[Member]:
        return [m for m in self.members if not m.gone]


def units_of(members: Iterable[Member]) -> list[Unit]:
    grouped: dict[str, list[Member]] = {}
    for member in members:
        grouped.setdefault(member.unit, []).append(member)
    return sorted((Unit(uuid, min(m.index for m in ms), tuple(ms))
                   for uuid, ms in grouped.items()), key=lambda u: (u.index, u.uuid))


def _live(unit: Unit, wish: Wish, hosts: Mapping[int, HostView]) -> bool:
    present = unit.present()
    if {m.launch_config for m in present} != set(wish.launch_configs):
        return False
    for member in present:
        if member.state not in LIVE_STATES or member.draining:
            return False
        if wish.recreate_unhealthy and member.health == "unhealthy":
            return False
        host = hosts.get(member.host_id) if member.host_id is not None else None
        if member.host_id is not None and (host is None or host.lost):
            return False
    return True


def _surplus_order(unit: Unit, hosts: Mapping[int, HostView]) -> tuple[int, int, int]:
    """Sort key: the units to remove first come first."""
    host = hosts.get(unit.host_id) if unit.host_id is not None else None
    healthy = all(m.health in (None, "healthy") for m in unit.present())
    return (0 if host is None or not host.active else 1, 1 if healthy else 0, -unit.index)


def free_indexes(taken: Iterable[int], count: int) -> list[int]:
    """The ``count`` lowest indexes (from 1) not in ``taken``."""
    used, candidate = set(taken), 1
    out: list[int] = []
    while len(out) < count:
        if candidate not in used:
            out.append(candidate)
        candidate += 1
    return out


def _named(members: Iterable[Member]) -> set[int]:
    """Indexes whose names are taken: a container keeps its name until it is removed."""
    return {m.index for m in members if m.state not in ("removed", "purging", "purged")}


def plan(wish: Wish, members: Sequence[Member], hosts: Mapping[int, HostView], *,
         aside: Sequence[Member] = ()) -> Plan:
    """The creates and removes that bring the service's units to its wish. ``aside`` are
    members the plan does not judge (an upgrade's old units), whose names stay taken."""
    result = Plan()
    named = _named([*members, *aside])
    units = units_of(members)
    if wish.recreate_unhealthy and wish.quorum is not None:
        healthy = sum(1 for u in units if u.present() and
                      all(m.health == "healthy" for m in u.present()))
        if healthy < wish.quorum:  # too few left to risk recreating any
            wish = replace(wish, recreate_unhealthy=False)
    live: list[Unit] = []
    for unit in units:
        if _live(unit, wish, hosts):
            live.append(unit)
        else:
            result.remove.extend(m.id for m in unit.present())
    keep: list[Unit]
    if wish.global_:
        keep, by_host = [], {}
        for unit in sorted(live, key=lambda u: _surplus_order(u, hosts), reverse=True):
            host = hosts.get(unit.host_id) if unit.host_id is not None else None
            if host is None or not host.eligible or unit.host_id in by_host:
                result.remove.extend(m.id for m in unit.present())
            else:
                by_host[unit.host_id] = unit
                keep.append(unit)
        wanted = [h.id for h in sorted(hosts.values(), key=lambda h: h.id)
                  if h.eligible and h.active and h.id not in by_host]
        indexes = free_indexes(named, len(wanted))
        result.create = [NewUnit(i, h) for i, h in zip(indexes, wanted, strict=True)]
    else:
        ordered = sorted(live, key=lambda u: _surplus_order(u, hosts))
        surplus = max(0, len(live) - wish.scale)
        for unit in ordered[:surplus]:
            result.remove.extend(m.id for m in unit.present())
        keep = ordered[surplus:]
        missing = max(0, wish.scale - len(keep))
        result.create = [NewUnit(i) for i in free_indexes(named, missing)]
    result.live = len(keep)
    return result


def health_of(members: Sequence[Member], scale: int) -> str:
    """A service's healthState from its containers': Rancher's healthy, degraded (some
    unhealthy), unhealthy (all) and initializing. A container without a health check counts
    as healthy once running."""
    present = [m for m in members if not m.gone and m.state in LIVE_STATES]
    states = [m.health or ("healthy" if m.state == "running" else "initializing")
              for m in present]
    if scale == 0 and not states:
        return "healthy"
    if states and all(s == "unhealthy" for s in states):
        return "unhealthy"
    if "unhealthy" in states:
        return "degraded"
    if states and all(s == "healthy" for s in states) and \
            len({m.unit for m in present}) >= scale:
        return "healthy"
    return "initializing"


def container_name(stack: str, service: str, launch_config: str, index: int) -> str:
    """Rancher's names: ``<stack>-<service>-<n>``; a sidekick's has its name before ``<n>``."""
    if launch_config == PRIMARY:
        return f"{stack}-{service}-{index}"
    return f"{stack}-{service}-{launch_config}-{index}"


def service_labels(stack: str, service: str, unit: str, launch_config: str) -> dict[str, str]:
    """The labels Rancher put on a service's containers."""
    return {STACK_LABEL: stack, SERVICE_LABEL: f"{stack}/{service}", UNIT_LABEL: unit,
            LAUNCH_CONFIG_LABEL: launch_config}
