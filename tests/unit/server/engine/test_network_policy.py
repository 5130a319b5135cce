"""Rancher's network policy evaluated for one host (server/engine/network_policy.py)."""

from __future__ import annotations

import pytest

from server.engine.network_policy import (
    SERVICE_LABEL,
    STACK_LABEL,
    Member,
    host_policy,
    parse_port,
    parse_selector,
)
from shared.overlay import PolicyEntry, PortMatch

A = Member(1, "10.42.1.2", 1, {STACK_LABEL: "shop", SERVICE_LABEL: "web", "tier": "front"})
B = Member(2, "10.42.2.2", 2, {STACK_LABEL: "shop", SERVICE_LABEL: "db", "tier": "back"})
C = Member(3, "10.42.2.3", 2, {STACK_LABEL: "blog", SERVICE_LABEL: "web", "tier": "front"})
D = Member(4, "10.42.1.3", 1, {}, links=frozenset({2}))
EVERYONE = [A, B, C, D]


def entries(rules: list[dict[str, object]], host_id: int) -> tuple[PolicyEntry, ...]:
    return host_policy("deny", rules, EVERYONE, host_id).entries


def test_within_a_stack_allows_each_stack_to_its_own_members_on_this_host() -> None:
    assert entries([{"within": "stack", "action": "allow"}], 2) == (
        PolicyEntry("allow", (C.ip,), (C.ip,)),               # blog
        PolicyEntry("allow", (A.ip, B.ip), (B.ip,)))          # shop
    # Host 1 holds only shop's A (D belongs to no stack).
    assert entries([{"within": "stack", "action": "allow"}], 1) == (
        PolicyEntry("allow", (A.ip, B.ip), (A.ip,)),)


def test_within_a_service_is_within_the_services_stack() -> None:
    # web of shop and web of blog are different services.
    assert entries([{"within": "service", "action": "allow"}], 2) == (
        PolicyEntry("allow", (C.ip,), (C.ip,)), PolicyEntry("allow", (B.ip,), (B.ip,)))


def test_linked_pairs_a_container_with_what_it_links_to_both_ways() -> None:
    assert entries([{"within": "linked", "action": "allow"}], 2) == (
        PolicyEntry("allow", (D.ip,), (B.ip,)),)
    assert entries([{"within": "linked", "action": "allow"}], 1) == (
        PolicyEntry("allow", (B.ip,), (D.ip,)),)


def test_between_groups_by_a_label_or_takes_a_selectors_members() -> None:
    assert entries([{"between": {"groupBy": "tier"}, "action": "allow"}], 2) == (
        PolicyEntry("allow", (B.ip,), (B.ip,)), PolicyEntry("allow", (A.ip, C.ip), (C.ip,)))
    assert entries([{"between": {"selector": "tier=front"}, "action": "deny"}], 1) == (
        PolicyEntry("deny", (A.ip, C.ip), (A.ip,)),)


def test_from_and_to_with_ports_in_rule_order() -> None:
    rules: list[dict[str, object]] = [
        {"from": {"selector": "tier=front"}, "to": {"selector": "tier=back"},
         "ports": ["5432/tcp", "53/udp"], "action": "allow"},
        {"to": {"selector": "tier=back"}, "action": "deny"}]
    assert entries(rules, 2) == (
        PolicyEntry("allow", (A.ip, C.ip), (B.ip,),
                    (PortMatch(5432, "tcp"), PortMatch(53, "udp"))),
        PolicyEntry("deny", (A.ip, B.ip, C.ip, D.ip), (B.ip,)))
    assert entries(rules, 1) == ()  # host 1 has no tier=back container


def test_a_host_without_containers_gets_the_default_alone() -> None:
    policy = host_policy("deny", [{"within": "stack", "action": "allow"}], EVERYONE, 9)
    assert (policy.default_action, policy.entries) == ("deny", ())
    assert host_policy("allow", None, EVERYONE, 1).open


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ("tier=front", {"tier": "front"}, True),
    ("tier==front", {"tier": "front"}, True),
    ("tier!=front", {"tier": "front"}, False),
    ("tier!=front", {}, True),
    ("tier", {"tier": ""}, True),
    ("tier", {}, False),
    ("tier in (front, back), zone", {"tier": "back", "zone": "a"}, True),
    ("tier notin (front,back)", {"tier": "back"}, False),
    ("a=b, c=d", {"a": "b"}, False),
])
def test_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(selector)(labels) is matches


@pytest.mark.parametrize("selector", ["", "a=b,,", "(x)", "a in x", "a=b c=d"])
def test_selectors_that_cannot_be_read_are_value_errors(selector: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(selector)


def test_ports() -> None:
    assert parse_port("80") == PortMatch(80, "tcp")
    assert parse_port("53/udp") == PortMatch(53, "udp")
    for bad in ("0", "65536", "80/sctp", "http", "80/x"):
        with pytest.raises(ValueError):
            parse_port(bad)
