"""Rancher's network policy, evaluated for one host's containers. Pure.

A managed network has a ``defaultPolicyAction`` and an ordered ``policy``: rules such as
``{"within": "stack", "action": "allow"}``, ``{"between": {"groupBy": "tier"}, ...}``,
``{"between": {"selector": "tier=web"}, ...}`` or ``{"from": {"selector": ...}, "to":
{"selector": ...}, "ports": ["80/tcp"], ...}``. The agent enforces what reaches its own
containers, so :func:`host_policy` turns the rules into the entries that name this host's
containers as destinations: sources and destinations are addresses, in rule order, and the
first entry that matches a packet decides; the default action covers the rest.

A container's stack and service are Rancher's labels (``io.rancher.stack.name``,
``io.rancher.stack_service.name``); ``linked`` pairs a container with the containers it links
to (``instanceLinks``: link name → container id), both ways.

Selectors are Rancher's label selectors, terms separated by commas: ``key=value``,
``key!=value``, ``key`` (has the label) and ``key in (a, b)`` / ``key notin (a, b)``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.overlay import OverlayPolicy, PolicyEntry, PortMatch

STACK_LABEL = "io.rancher.stack.name"
SERVICE_LABEL = "io.rancher.stack_service.name"


@dataclass(frozen=True)
class Member:
    """A container on the managed network, as the policy sees it."""

    id: int
    ip: str
    host_id: int
    labels: Mapping[str, str] = field(default_factory=dict)
    links: frozenset[int] = frozenset()

    @property
    def stack(self) -> str | None:
        return self.labels.get(STACK_LABEL)

    @property
    def service(self) -> str | None:
        stack, service = self.stack, self.labels.get(SERVICE_LABEL)
        # A service's name is unique within its stack only.
        return None if service is None else f"{stack or ''}/{service}"


Selector = Callable[[Mapping[str, str]], bool]
_TERM = re.compile(r"\s*([^=!,\s()]+)(?:\s*(==|=|!=)\s*([^,\s()]*)|\s+(in|notin)\s*"
                   r"\(([^)]*)\))?\s*")


def parse_selector(text: str) -> Selector:
    """A label selector; ValueError names the term it cannot read."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read the selector {text!r} at {text[position:]!r}")
        key, op, value, set_op, values = match.groups()
        if op is not None:
            tests.append(_equals(key, value, op == "!="))
        elif set_op is not None:
            members = frozenset(v.strip() for v in values.split(",") if v.strip())
            tests.append(_member_of(key, members, set_op == "notin"))
        else:
            tests.append(_has(key))
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise ValueError(f"cannot read the selector {text!r} at {text[position:]!r}")
            position += 1
    if not tests:
        raise ValueError("a selector needs at least one term, such as tier=web")
    return lambda labels: all(test(labels) for test in tests)


def _equals(key: str, value: str, negate: bool) -> Selector:
    return lambda labels: (labels.get(key) == value) != negate


def _member_of(key: str, values: frozenset[str], negate: bool) -> Selector:
    return lambda labels: (labels.get(key) in values) != negate


def _has(key: str) -> Selector:
    return lambda labels: key in labels


def parse_port(text: str) -> PortMatch:
    """``80``, ``80/tcp`` or ``53/udp``; ValueError otherwise."""
    number, _, protocol = text.partition("/")
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"{text!r} is not a port such as 80/tcp")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"{text!r}: the protocol must be tcp or udp")
    return PortMatch(int(number), protocol)


def host_policy(default_action: str, rules: Sequence[Mapping[str, object]] | None,
                members: Iterable[Member], host_id: int) -> OverlayPolicy:
    """What may reach ``host_id``'s containers: the entries of ``rules`` whose destinations
    are among them, in rule order, and ``default_action`` for everything else."""
    everyone = sorted(members, key=lambda m: m.id)
    local = [m for m in everyone if m.host_id == host_id]
    entries: list[PolicyEntry] = []
    if local:
        for rule in rules or ():
            entries += _entries(rule, everyone, local)
    return OverlayPolicy(default_action=default_action, entries=tuple(entries))


def _entries(rule: Mapping[str, object], everyone: list[Member],
             local: list[Member]) -> list[PolicyEntry]:
    action = str(rule.get("action"))
    given = rule.get("ports")
    ports = tuple(parse_port(str(p)) for p in given) if isinstance(given, list) else ()
    pairs: list[tuple[list[Member], list[Member]]] = []
    within, between = rule.get("within"), rule.get("between")
    if within in ("stack", "service"):
        key: Callable[[Member], str | None] = \
            (lambda m: m.stack) if within == "stack" else (lambda m: m.service)
        pairs = [(group, group) for group in _groups(everyone, key)]
    elif within == "linked":
        by_id = {m.id: m for m in everyone}
        for member in local:
            peers = [by_id[i] for i in sorted(member.links) if i in by_id]
            peers += [m for m in everyone if member.id in m.links and m.id not in member.links]
            pairs.append((peers, [member]))
    elif isinstance(between, Mapping):
        if between.get("groupBy"):
            label = str(between["groupBy"])
            pairs = [(group, group) for group in _groups(everyone, lambda m: m.labels.get(label))]
        elif between.get("selector"):
            chosen = _select(everyone, str(between["selector"]))
            pairs = [(chosen, chosen)]
    else:
        sources = _select(everyone, _selector_of(rule.get("from")))
        destinations = _select(everyone, _selector_of(rule.get("to")))
        pairs = [(sources, destinations)]
    local_ids = {m.id for m in local}
    out = []
    for sources, destinations in pairs:
        here = [m.ip for m in destinations if m.id in local_ids]
        if sources and here:
            out.append(PolicyEntry(action=action, sources=tuple(m.ip for m in sources),
                                   destinations=tuple(here), ports=ports))
    return out


def _groups(members: list[Member], key: Callable[[Member], str | None]) -> list[list[Member]]:
    groups: dict[str, list[Member]] = defaultdict(list)
    for member in members:
        value = key(member)
        if value is not None:
            groups[value].append(member)
    return [groups[k] for k in sorted(groups)]


def _selector_of(part: object) -> str | None:
    if isinstance(part, Mapping) and part.get("selector"):
        return str(part["selector"])
    return None


def _select(members: list[Member], selector: str | None) -> list[Member]:
    """Members matching ``selector``; every member when there is none (a rule without
    ``from`` applies to any source)."""
    if selector is None:
        return members
    test = parse_selector(selector)
    return [m for m in members if test(m.labels)]
