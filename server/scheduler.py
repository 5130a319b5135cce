"""Where a new container runs: Rancher 1.x's allocator as one pure function.

``place(request, hosts)`` drops every host that fails a hard rule, then ranks the rest.

Hard rules, checked in this order (the first one a host fails is its reason):
    active · the requested host · the required hosts · a pinned host · free host ports ·
    unreserved memory · unreserved CPU · ``io.rancher.scheduler.affinity:*`` must / must-not rules.
Ranking: one point per soft rule met, then spread: fewest containers, lowest reserved-memory
fraction, host id (natural order, so 1h9 before 1h10).

Scheduling labels, as in Rancher 1.x: the key is ``io.rancher.scheduler.affinity:<field><op>``,
field ``host_label``, ``container_label`` or ``container``, op ``""`` (must), ``_ne`` (must not),
``_soft`` (should), ``_soft_ne`` (should not). The value is a comma-separated list and each item is
a rule of its own, as in Cattle's ``ContainerLabelAffinityConstraint``: ``container_label: a=1,b=2``
is met by a host running one container labelled a=1 and another labelled b=2. Values are compared
exactly. ``$${stack_name}`` and ``$${service_name}`` are kept as written until services exist, so
such an item only matches a literal label value.

Errors::

    ValueError          a malformed or unknown scheduling label (the API answers 422)
    NoHostAvailable     no host passes the hard rules; ``exclusions`` maps host id -> reason
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

AFFINITY_PREFIX = "io.rancher.scheduler.affinity:"
ANY_IP = "0.0.0.0"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class PlacedContainer:
    """A container already on a host, as container and container_label rules see it."""

    name: str | None
    labels: Mapping[str, str]


@dataclass(frozen=True)
class HostCandidate:
    """A host as the scheduler sees it; the caller gathers these from the store."""

    id: str
    name: str
    active: bool
    labels: Mapping[str, str]
    memory: int | None
    milli_cpu: int | None
    ip: str
    used_ports: frozenset[tuple[str, int, str]]
    reserved_memory: int
    reserved_milli_cpu: int
    containers: Sequence[PlacedContainer]
    pinned: bool = False


@dataclass(frozen=True)
class Request:
    """What the container to place needs."""

    requested_host_id: str | None
    ports: Sequence[tuple[str | None, int | None, str]]
    memory_reservation: int | None
    milli_cpu_reservation: int | None
    labels: Mapping[str, str]
    required_host_ids: frozenset[str] | None = None


@dataclass(frozen=True)
class Placement:
    """The chosen host; ``reasons`` notes the soft rules it does not meet."""

    host_id: str
    reasons: tuple[str, ...]


class NoHostAvailable(Exception):
    """No host passes the hard rules; ``str()`` names each host and the rule that excluded it."""

    def __init__(self, message: str, exclusions: Mapping[str, str]) -> None:
        super().__init__(message)
        self.exclusions: Mapping[str, str] = dict(exclusions)


class RuleField(StrEnum):
    HOST_LABEL = "host_label"
    CONTAINER_LABEL = "container_label"
    CONTAINER = "container"


# Label suffix -> (soft, negated).
_OPS: dict[str, tuple[bool, bool]] = {
    "": (False, False),
    "_ne": (False, True),
    "_soft": (True, False),
    "_soft_ne": (True, True),
}
_KINDS: dict[str, tuple[RuleField, bool, bool]] = {
    AFFINITY_PREFIX + field + op: (field, soft, negated)
    for field in RuleField
    for op, (soft, negated) in _OPS.items()
}
# What a host that breaks a rule does: (breaks a must rule, breaks a must-not rule).
_VIOLATIONS: dict[RuleField, tuple[str, str]] = {
    RuleField.HOST_LABEL: ("lacks host label {}", "has host label {}"),
    RuleField.CONTAINER_LABEL: (
        "runs no container with label {}",
        "runs a container with label {}",
    ),
    RuleField.CONTAINER: ("runs no container named {}", "runs a container named {}"),
}


@dataclass(frozen=True)
class Rule:
    """One item of a scheduling label: a ``key=value`` label, or a name for ``container`` rules."""

    label: str
    field: RuleField
    soft: bool
    negated: bool
    key: str
    value: str | None = None

    def met_by(self, host: HostCandidate) -> bool:
        return self._present_on(host) != self.negated

    def violation(self) -> str:
        """What a host failing this rule has or lacks, e.g. 'lacks host label a=b'."""
        item = self.key if self.value is None else f"{self.key}={self.value}"
        return _VIOLATIONS[self.field][self.negated].format(item)

    def _present_on(self, host: HostCandidate) -> bool:
        match self.field:
            case RuleField.HOST_LABEL:
                return host.labels.get(self.key) == self.value
            case RuleField.CONTAINER_LABEL:
                return any(c.labels.get(self.key) == self.value for c in host.containers)
            case RuleField.CONTAINER:
                return any(_bare(c.name) == self.key for c in host.containers)
            case _:
                assert_never(self.field)


def parse_rules(labels: Mapping[str, str]) -> tuple[Rule, ...]:
    """The scheduling rules in a container's labels, in label-key order.

    Raises ValueError, naming the label, for an unknown ``io.rancher.scheduler.affinity:`` key or
    a label item that is not ``key=value``; other labels are ignored.
    """
    rules: list[Rule] = []
    for label in sorted(labels):
        if not label.startswith(AFFINITY_PREFIX):
            continue
        kind = _KINDS.get(label)
        if kind is None:
            raise ValueError(f"unknown scheduling label {label}")
        field, soft, negated = kind
        for raw in labels[label].split(","):
            item = raw.strip()
            if not item:
                continue
            if field is RuleField.CONTAINER:
                if not _bare(item):
                    raise ValueError(f"scheduling label {label}: {item!r} is not a container name")
                rules.append(Rule(label, field, soft, negated, _bare(item)))
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"scheduling label {label}: {item!r} is not key=value")
            rules.append(Rule(label, field, soft, negated, key.strip(), value.strip()))
    return tuple(rules)


def place(request: Request, hosts: Sequence[HostCandidate]) -> Placement:
    """Pick the host for one container, or raise NoHostAvailable saying why each host was refused.

    Raises ValueError for malformed scheduling labels, whatever the hosts.
    """
    rules = parse_rules(request.labels)
    pinned = tuple(_natural_sorted(h.id for h in hosts if h.pinned))
    exclusions: dict[str, str] = {}
    eligible: list[HostCandidate] = []
    for host in hosts:
        reason = _exclusion(host, request, rules, pinned)
        if reason is None:
            eligible.append(host)
        else:
            exclusions[host.id] = reason
    if not eligible:
        raise NoHostAvailable(_no_host_message(request, hosts, exclusions), exclusions)

    soft = [rule for rule in rules if rule.soft]
    best = min(eligible, key=lambda host: _rank(host, soft))
    notes = tuple(
        f"soft rule not met on {best.id}: {rule.violation()}"
        for rule in soft
        if not rule.met_by(best)
    )
    return Placement(best.id, notes)


def spread_key(host: HostCandidate) -> tuple[int, float, list[str | int]]:
    """Where a host stands in the spread order when no soft rule applies (see ``_rank``)."""
    fraction = host.reserved_memory / host.memory if host.memory else 0.0
    return (len(host.containers), fraction, _natural_key(host.id))


def place_in_order(request: Request, ordered: Iterable[HostCandidate]) -> Placement | None:
    """What ``place`` would choose, found without ranking every host: the first host of
    ``ordered`` (already in ``spread_key`` order) that passes every hard rule.

    Applies only to requests without soft rules and hosts without a pin (where ranking is
    the spread order alone); returns None when it does not apply or no host passes, and the
    caller falls back to ``place`` (which also says why no host fits). Raises ValueError for
    malformed scheduling labels.
    """
    rules = parse_rules(request.labels)
    if any(rule.soft for rule in rules):
        return None
    for host in ordered:
        if host.pinned:
            return None
        if _exclusion(host, request, rules, ()) is None:
            return Placement(host.id, ())
    return None


def _exclusion(
    host: HostCandidate, request: Request, rules: Sequence[Rule], pinned: Sequence[str]
) -> str | None:
    """The first hard rule the host fails, as a phrase following 'host (name):'; None if none."""
    if not host.active:
        return "is not active"
    wanted = request.requested_host_id
    if wanted is not None and host.id != wanted:
        return f"is not the requested host {wanted}"
    required = request.required_host_ids
    if required is not None and host.id not in required:
        listed = ", ".join(_natural_sorted(required)) or "none"
        return f"is not one of the hosts this container is restricted to ({listed})"
    if pinned and not host.pinned:
        return f"is not the host this container is pinned to ({', '.join(pinned)})"
    reason = _port_conflict(host, request.ports) or _resource_shortfall(host, request)
    if reason is not None:
        return reason
    for rule in rules:
        if not rule.soft and not rule.met_by(host):
            return rule.violation()
    return None


def _port_conflict(
    host: HostCandidate, ports: Sequence[tuple[str | None, int | None, str]]
) -> str | None:
    # Docker refuses to bind a port on an address that already has it, and 0.0.0.0 covers every
    # address; so a conflict needs the same port and protocol and an overlapping address.
    if not any(port is not None for _, port, _ in ports):
        return None
    used = [(ip or ANY_IP, port, protocol.lower()) for ip, port, protocol in host.used_ports]
    for ip, port, protocol in ports:
        if port is None:
            continue
        want_ip, want_protocol = ip or ANY_IP, (protocol or "tcp").lower()
        for used_ip, used_port, used_protocol in used:
            if (used_port, used_protocol) != (port, want_protocol):
                continue
            if ANY_IP in (want_ip, used_ip) or want_ip == used_ip:
                where = "" if want_ip == ANY_IP else f"{want_ip}:"
                return f"port {where}{port}/{want_protocol} is already used"
    return None


def _resource_shortfall(host: HostCandidate, request: Request) -> str | None:
    memory = request.memory_reservation
    if memory and host.memory is not None and host.reserved_memory + memory > host.memory:
        free = max(host.memory - host.reserved_memory, 0)
        return (
            f"needs {_mib(memory)} of memory but has {_mib(free)} of {_mib(host.memory)} unreserved"
        )
    cpu = request.milli_cpu_reservation
    if cpu and host.milli_cpu is not None and host.reserved_milli_cpu + cpu > host.milli_cpu:
        free = max(host.milli_cpu - host.reserved_milli_cpu, 0)
        return f"needs {cpu} milli-CPU but has {free} of {host.milli_cpu} unreserved"
    return None


def _rank(host: HostCandidate, soft: Sequence[Rule]) -> tuple[int, int, float, list[str | int]]:
    """Sort key, smallest first: most soft rules met, then spread, then id for determinism."""
    met = sum(1 for rule in soft if rule.met_by(host))
    # Unknown capacity counts as unloaded: nothing says the host is busy.
    fraction = host.reserved_memory / host.memory if host.memory else 0.0
    return (-met, len(host.containers), fraction, _natural_key(host.id))


def _no_host_message(
    request: Request, hosts: Sequence[HostCandidate], exclusions: Mapping[str, str]
) -> str:
    if not any(host.active for host in hosts):
        return "no active hosts in this environment"
    prefix = "no host can run this container: "
    wanted = request.requested_host_id
    if wanted is not None:
        target = next((host for host in hosts if host.id == wanted), None)
        if target is None:
            return f"{prefix}requested host {wanted} is not an available host in this environment"
        return f"{prefix}requested host {_describe(target)}: {exclusions[target.id]}"
    ordered = sorted(hosts, key=lambda host: _natural_key(host.id))
    return prefix + "; ".join(f"{_describe(host)}: {exclusions[host.id]}" for host in ordered)


def _describe(host: HostCandidate) -> str:
    return f"{host.id} ({host.name})" if host.name else host.id


def _bare(name: str | None) -> str:
    # Docker reports names with a leading slash; Rancher users write them without.
    return (name or "").lstrip("/")


def _mib(size: int) -> str:
    return f"{size // _MIB} MiB" if size % _MIB == 0 else f"{size / _MIB:.1f} MiB"


def _natural_key(text: str) -> list[str | int]:
    # re.split with a group alternates text and digits, so equal positions hold equal types.
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _natural_sorted(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=_natural_key)
