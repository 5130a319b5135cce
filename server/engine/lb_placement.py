"""Where a load balancer's instances run (pure): one HAProxy a host, ``scale`` hosts (or every
eligible host for ``io.rancher.scheduler.global``), never on a host where another balancer of
the environment answers on one of its source ports.

An instance stays while its host is there and not lost (a disconnected host keeps its
instance until the lost timer runs out, as a service's containers do); a second instance on
one host, or one more than ``scale``, goes (those on hosts that are not active first, then
the newest). New instances go to the active hosts with the fewest balancers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from server.engine.service_units import HostView, free_indexes


@dataclass(frozen=True)
class Placed:
    """One instance of the balancer, as the plan sees it."""

    id: int
    host_id: int | None
    index: int


@dataclass(frozen=True)
class LbHost:
    """A host, with what balancers already hold on it."""

    view: HostView
    taking_part: bool                  # its agent carries out lb.apply
    ports: frozenset[int] = frozenset()  # source ports other balancers answer on here
    balancers: int = 0                 # how many balancer instances run here


@dataclass
class Placement:
    create: list[tuple[int, int]] = field(default_factory=list)  # (index, host id)
    remove: list[int] = field(default_factory=list)
    short: int = 0                      # instances wanted that no host can take


def place(*, running: bool, scale: int, global_: bool, ports: Iterable[int],
          instances: Sequence[Placed], hosts: Mapping[int, LbHost]) -> Placement:
    result = Placement()
    if not running:
        result.remove = [i.id for i in instances]
        return result
    wanted_ports = frozenset(ports)
    kept: dict[int, Placed] = {}
    for instance in sorted(instances, key=lambda i: i.id):
        host = hosts.get(instance.host_id) if instance.host_id is not None else None
        if host is None or host.view.lost or instance.host_id in kept:
            result.remove.append(instance.id)
        else:
            kept[host.view.id] = instance

    def can_take(host: LbHost) -> bool:
        return host.view.active and host.view.eligible and host.taking_part and \
            host.view.id not in kept and not (host.ports & wanted_ports)

    free = sorted((h for h in hosts.values() if can_take(h)),
                  key=lambda h: (h.balancers, h.view.id))
    taken = [i.index for i in instances if i.id not in result.remove]
    if global_:
        indexes = free_indexes(taken, len(free))
        result.create = [(index, host.view.id) for index, host in zip(indexes, free,
                                                                      strict=True)]
        return result
    if len(kept) > scale:
        ordered = sorted(kept.values(), key=lambda i: (hosts[i.host_id or 0].view.active,
                                                       -i.index))
        result.remove += [i.id for i in ordered[:len(kept) - scale]]
        return result
    missing = scale - len(kept)
    chosen = free[:missing]
    result.short = missing - len(chosen)
    indexes = free_indexes(taken, len(chosen))
    result.create = [(index, host.view.id) for index, host in zip(indexes, chosen, strict=True)]
    return result
