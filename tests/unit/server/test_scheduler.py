"""Placing one container: hard rules exclude hosts with a reason; soft rules and spread rank."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from server.scheduler import (
    HostCandidate,
    NoHostAvailable,
    PlacedContainer,
    Placement,
    Request,
    Rule,
    RuleField,
    parse_rules,
    place,
)

MIB = 1024 * 1024
A = "io.rancher.scheduler.affinity:"
Port = tuple[str | None, int | None, str]


def host(
    id: str,
    name: str | None = None,
    *,
    active: bool = True,
    labels: Mapping[str, str] | None = None,
    memory: int | None = 4096 * MIB,
    milli_cpu: int | None = 4000,
    used_ports: Sequence[tuple[str, int, str]] = (),
    reserved_memory: int = 0,
    reserved_milli_cpu: int = 0,
    containers: Sequence[PlacedContainer] = (),
    pinned: bool = False,
) -> HostCandidate:
    return HostCandidate(
        id=id,
        name=name if name is not None else f"node-{id}",
        active=active,
        labels=labels or {},
        memory=memory,
        milli_cpu=milli_cpu,
        ip="10.0.0.1",
        used_ports=frozenset(used_ports),
        reserved_memory=reserved_memory,
        reserved_milli_cpu=reserved_milli_cpu,
        containers=tuple(containers),
        pinned=pinned,
    )


def request(
    *,
    host_id: str | None = None,
    ports: Sequence[Port] = (),
    memory: int | None = None,
    milli_cpu: int | None = None,
    labels: Mapping[str, str] | None = None,
    required: frozenset[str] | None = None,
) -> Request:
    return Request(
        requested_host_id=host_id,
        ports=tuple(ports),
        memory_reservation=memory,
        milli_cpu_reservation=milli_cpu,
        labels=labels or {},
        required_host_ids=required,
    )


def refused(req: Request, hosts: Sequence[HostCandidate]) -> NoHostAvailable:
    with pytest.raises(NoHostAvailable) as caught:
        place(req, hosts)
    return caught.value


def c(name: str | None = None, **labels: str) -> PlacedContainer:
    return PlacedContainer(name=name, labels=labels)


# Active hosts, requested, required and pinned hosts


def test_no_hosts_at_all_says_no_active_hosts() -> None:
    error = refused(request(), [])
    assert str(error) == "no active hosts in this environment"
    assert error.exclusions == {}


def test_only_inactive_hosts_says_no_active_hosts_and_records_each() -> None:
    error = refused(request(), [host("1h1", active=False), host("1h2", active=False)])
    assert str(error) == "no active hosts in this environment"
    assert error.exclusions == {"1h1": "is not active", "1h2": "is not active"}


def test_inactive_host_is_skipped_even_when_emptier() -> None:
    busy = host("1h1", containers=[c("a"), c("b")])
    assert place(request(), [busy, host("1h2", active=False)]).host_id == "1h1"


def test_requested_host_is_chosen_over_emptier_hosts() -> None:
    hosts = [host("1h1"), host("1h2", containers=[c("a"), c("b")])]
    assert place(request(host_id="1h2"), hosts) == Placement("1h2", ())


def test_requested_host_not_among_candidates_is_named_in_error() -> None:
    error = refused(request(host_id="1h9"), [host("1h1"), host("1h2")])
    assert str(error) == (
        "no host can run this container: requested host 1h9 is not an available host"
        " in this environment"
    )
    assert error.exclusions == {
        "1h1": "is not the requested host 1h9",
        "1h2": "is not the requested host 1h9",
    }


def test_requested_host_excluded_by_port_conflict_names_host_and_port() -> None:
    hosts = [host("1h1"), host("1h2", "node-b", used_ports=[("0.0.0.0", 8080, "tcp")])]
    error = refused(request(host_id="1h2", ports=[(None, 8080, "tcp")]), hosts)
    assert str(error) == (
        "no host can run this container: requested host 1h2 (node-b): port 8080/tcp is already used"
    )


def test_requested_inactive_host_is_refused_with_reason() -> None:
    error = refused(request(host_id="1h2"), [host("1h1"), host("1h2", "node-b", active=False)])
    assert (
        str(error) == "no host can run this container: requested host 1h2 (node-b): is not active"
    )


def test_required_host_ids_restrict_the_candidates() -> None:
    hosts = [host("1h1"), host("1h2", containers=[c("a")]), host("1h3", containers=[c("b")])]
    assert place(request(required=frozenset({"1h2", "1h3"})), hosts).host_id == "1h2"


def test_required_host_ids_that_match_no_host_list_the_required_ids() -> None:
    error = refused(request(required=frozenset({"1h10", "1h9"})), [host("1h1")])
    assert error.exclusions == {
        "1h1": "is not one of the hosts this container is restricted to (1h9, 1h10)"
    }


def test_empty_required_host_ids_refuse_every_host() -> None:
    error = refused(request(required=frozenset()), [host("1h1")])
    assert error.exclusions["1h1"].endswith("restricted to (none)")


def test_pinned_host_must_be_picked_even_when_busier() -> None:
    hosts = [host("1h1"), host("1h2", containers=[c("a"), c("b")], pinned=True)]
    assert place(request(), hosts).host_id == "1h2"


def test_pinned_host_that_is_inactive_leaves_no_host() -> None:
    error = refused(request(), [host("1h1"), host("1h2", active=False, pinned=True)])
    assert error.exclusions == {
        "1h1": "is not the host this container is pinned to (1h2)",
        "1h2": "is not active",
    }


# Host ports

PORT_CASES: list[tuple[str, Port, tuple[str, int, str], bool]] = [
    ("same port same ip", ("10.0.0.1", 80, "tcp"), ("10.0.0.1", 80, "tcp"), True),
    ("request any ip vs used specific ip", ("0.0.0.0", 80, "tcp"), ("10.0.0.1", 80, "tcp"), True),
    ("request no ip vs used specific ip", (None, 80, "tcp"), ("10.0.0.1", 80, "tcp"), True),
    ("request specific ip vs used any ip", ("10.0.0.1", 80, "tcp"), ("0.0.0.0", 80, "tcp"), True),
    ("request no ip vs used any ip", (None, 80, "tcp"), ("0.0.0.0", 80, "tcp"), True),
    ("protocol compared case-insensitively", (None, 80, "TCP"), ("0.0.0.0", 80, "tcp"), True),
    ("different specific ips", ("10.0.0.2", 80, "tcp"), ("10.0.0.1", 80, "tcp"), False),
    ("udp vs tcp on same port", (None, 53, "udp"), ("0.0.0.0", 53, "tcp"), False),
    ("different port", (None, 81, "tcp"), ("0.0.0.0", 80, "tcp"), False),
    ("random host port", (None, None, "tcp"), ("0.0.0.0", 80, "tcp"), False),
]


@pytest.mark.parametrize(
    ("wanted", "used", "conflicts"),
    [case[1:] for case in PORT_CASES],
    ids=[case[0] for case in PORT_CASES],
)
def test_host_port_conflicts(wanted: Port, used: tuple[str, int, str], conflicts: bool) -> None:
    hosts = [host("1h1", used_ports=[used])]
    if conflicts:
        assert "is already used" in refused(request(ports=[wanted]), hosts).exclusions["1h1"]
    else:
        assert place(request(ports=[wanted]), hosts).host_id == "1h1"


@pytest.mark.parametrize(
    ("wanted", "reason"),
    [
        ((None, 8080, "tcp"), "port 8080/tcp is already used"),
        (("0.0.0.0", 8080, "tcp"), "port 8080/tcp is already used"),
        (("10.0.0.1", 8080, "tcp"), "port 10.0.0.1:8080/tcp is already used"),
    ],
)
def test_port_conflict_reason_names_port_protocol_and_specific_ip(
    wanted: Port, reason: str
) -> None:
    hosts = [host("1h1", used_ports=[("0.0.0.0", 8080, "tcp")])]
    assert refused(request(ports=[wanted]), hosts).exclusions == {"1h1": reason}


def test_port_conflict_sends_container_to_host_with_port_free() -> None:
    hosts = [host("1h1", used_ports=[("0.0.0.0", 80, "tcp")]), host("1h2", containers=[c("a")])]
    assert place(request(ports=[(None, 80, "tcp"), (None, None, "tcp")]), hosts).host_id == "1h2"


# Memory and CPU reservations


@pytest.mark.parametrize(
    ("capacity", "reserved", "wanted", "fits"),
    [
        (1024 * MIB, 512 * MIB, 512 * MIB, True),
        (1024 * MIB, 512 * MIB, 513 * MIB, False),
        (None, 10**15, 512 * MIB, True),
        (1024 * MIB, 1024 * MIB, None, True),
        (1024 * MIB, 1024 * MIB, 0, True),
    ],
    ids=["exactly full", "over capacity", "unknown capacity", "no reservation", "zero reservation"],
)
def test_memory_reservation_must_fit_known_capacity(
    capacity: int | None, reserved: int, wanted: int | None, fits: bool
) -> None:
    hosts = [host("1h1", memory=capacity, reserved_memory=reserved)]
    if fits:
        assert place(request(memory=wanted), hosts).host_id == "1h1"
    else:
        assert "of memory" in refused(request(memory=wanted), hosts).exclusions["1h1"]


@pytest.mark.parametrize(
    ("capacity", "reserved", "wanted", "fits"),
    [
        (2000, 1500, 500, True),
        (2000, 1500, 501, False),
        (None, 10**9, 500, True),
        (2000, 2000, None, True),
    ],
    ids=["exactly full", "over capacity", "unknown capacity", "no reservation"],
)
def test_cpu_reservation_must_fit_known_capacity(
    capacity: int | None, reserved: int, wanted: int | None, fits: bool
) -> None:
    hosts = [host("1h1", milli_cpu=capacity, reserved_milli_cpu=reserved)]
    if fits:
        assert place(request(milli_cpu=wanted), hosts).host_id == "1h1"
    else:
        assert "milli-CPU" in refused(request(milli_cpu=wanted), hosts).exclusions["1h1"]


def test_resource_shortfall_reasons_state_need_free_and_capacity() -> None:
    low_memory = host("1h1", memory=2048 * MIB, reserved_memory=1792 * MIB)
    low_cpu = host("1h2", milli_cpu=2000, reserved_milli_cpu=1500)
    error = refused(request(memory=512 * MIB, milli_cpu=1000), [low_memory, low_cpu])
    assert error.exclusions == {
        "1h1": "needs 512 MiB of memory but has 256 MiB of 2048 MiB unreserved",
        "1h2": "needs 1000 milli-CPU but has 500 of 2000 unreserved",
    }


def test_memory_reservation_picks_host_with_room() -> None:
    hosts = [host("1h1", reserved_memory=4000 * MIB), host("1h2", containers=[c("a"), c("b")])]
    assert place(request(memory=512 * MIB), hosts).host_id == "1h2"


# Hard affinity rules

EAST = {"zone": "east", "disk": "ssd"}
WEST = {"zone": "west"}
HARD_RULE_CASES: list[tuple[str, dict[str, str], str | None]] = [
    ("host_label met", {A + "host_label": "zone=east"}, None),
    ("host_label all of several", {A + "host_label": "zone=east,disk=ssd"}, None),
    ("host_label lacked", {A + "host_label": "zone=east,disk=nvme"}, "lacks host label disk=nvme"),
    ("host_label other value", {A + "host_label": "zone=north"}, "lacks host label zone=north"),
    ("host_label_ne absent", {A + "host_label_ne": "zone=west"}, None),
    ("host_label_ne any present", {A + "host_label_ne": "x=y,disk=ssd"}, "has host label disk=ssd"),
    ("container_label met", {A + "container_label": "app=db"}, None),
    (
        "container_label items on different containers",
        {A + "container_label": "app=db,tier=cache"},
        None,
    ),
    (
        "container_label lacked",
        {A + "container_label": "app=web"},
        "runs no container with label app=web",
    ),
    ("container_label_ne absent", {A + "container_label_ne": "app=web"}, None),
    (
        "container_label_ne present",
        {A + "container_label_ne": "app=web,app=db"},
        "runs a container with label app=db",
    ),
    ("container met", {A + "container": "db1"}, None),
    ("container named with slash", {A + "container": "/db1"}, None),
    ("container lacked", {A + "container": "web1"}, "runs no container named web1"),
    ("container_ne absent", {A + "container_ne": "web1"}, None),
    ("container_ne present", {A + "container_ne": "web1,cache1"}, "runs a container named cache1"),
]


@pytest.mark.parametrize(
    ("labels", "reason"),
    [case[1:] for case in HARD_RULE_CASES],
    ids=[case[0] for case in HARD_RULE_CASES],
)
def test_hard_affinity_rules_include_or_exclude_a_host(
    labels: dict[str, str], reason: str | None
) -> None:
    containers = [c("/db1", app="db"), c("cache1", tier="cache")]
    hosts = [host("1h1", labels=EAST, containers=containers)]
    if reason is None:
        assert place(request(labels=labels), hosts) == Placement("1h1", ())
    else:
        assert refused(request(labels=labels), hosts).exclusions == {"1h1": reason}


def test_host_label_rule_picks_the_matching_host_over_an_emptier_one() -> None:
    hosts = [host("1h1", labels=WEST), host("1h2", labels=EAST, containers=[c("a"), c("b")])]
    assert place(request(labels={A + "host_label": "zone=east"}), hosts).host_id == "1h2"


def test_container_affinity_follows_the_named_container() -> None:
    hosts = [host("1h1"), host("1h2", containers=[c("db"), c("x")]), host("1h3")]
    assert place(request(labels={A + "container": "db"}), hosts).host_id == "1h2"
    assert place(request(labels={A + "container_ne": "db"}), hosts).host_id == "1h1"


def test_non_scheduling_labels_are_ignored() -> None:
    labels = {"io.rancher.scheduler.global": "true", "zone": "nowhere", "io.rancher.x": "a"}
    assert place(request(labels=labels), [host("1h1")]).host_id == "1h1"


def test_stack_and_service_placeholders_are_kept_literally() -> None:
    labels = {A + "container_label": "io.rancher.stack.name=$${stack_name}"}
    literal = host("1h2", containers=[c(**{"io.rancher.stack.name": "$${stack_name}"})])
    assert place(request(labels=labels), [host("1h1"), literal]).host_id == "1h2"


# Soft rules and spread

SOFT_CASES: list[tuple[str, dict[str, str], str]] = [
    ("host_label_soft", {A + "host_label_soft": "zone=east"}, "1h2"),
    ("host_label_soft_ne", {A + "host_label_soft_ne": "zone=west"}, "1h2"),
    ("container_label_soft", {A + "container_label_soft": "app=db"}, "1h2"),
    ("container_label_soft_ne", {A + "container_label_soft_ne": "app=web"}, "1h2"),
    ("container_soft", {A + "container_soft": "db1"}, "1h2"),
    ("container_soft_ne", {A + "container_soft_ne": "web1"}, "1h2"),
]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [case[1:] for case in SOFT_CASES],
    ids=[case[0] for case in SOFT_CASES],
)
def test_soft_rules_win_over_spread(labels: dict[str, str], expected: str) -> None:
    empty_west = host("1h1", labels=WEST, containers=[c("web1", app="web")])
    busy_east = host("1h2", labels=EAST, containers=[c("db1", app="db"), c("x"), c("y")])
    assert place(request(labels=labels), [empty_west, busy_east]) == Placement(expected, ())


def test_host_meeting_more_soft_rules_is_preferred() -> None:
    labels = {A + "host_label_soft": "zone=east,disk=ssd"}
    hosts = [host("1h1", labels={"zone": "east"}), host("1h2", labels=EAST, containers=[c("a")])]
    assert place(request(labels=labels), hosts).host_id == "1h2"


def test_soft_rule_no_host_meets_still_places_with_a_note() -> None:
    labels = {A + "host_label_soft": "zone=mars", A + "container_soft_ne": "web1"}
    hosts = [host("1h1", containers=[c("web1")]), host("1h2", containers=[c("web1")])]
    assert place(request(labels=labels), hosts) == Placement(
        "1h1",
        (
            "soft rule not met on 1h1: runs a container named web1",
            "soft rule not met on 1h1: lacks host label zone=mars",
        ),
    )


def test_soft_rules_never_exclude_the_requested_host() -> None:
    labels = {A + "host_label_soft": "zone=east"}
    placement = place(
        request(host_id="1h1", labels=labels), [host("1h1"), host("1h2", labels=EAST)]
    )
    assert placement == Placement("1h1", ("soft rule not met on 1h1: lacks host label zone=east",))


def test_spread_over_three_hosts_for_ten_placements_gives_4_3_3() -> None:
    hosts = {id: host(id, name="") for id in ("1h1", "1h2", "1h3")}
    for n in range(10):
        chosen = hosts[place(request(memory=64 * MIB), list(hosts.values())).host_id]
        hosts[chosen.id] = replace(
            chosen,
            containers=(*chosen.containers, c(f"c{n}")),
            reserved_memory=chosen.reserved_memory + 64 * MIB,
        )
    assert [len(h.containers) for h in hosts.values()] == [4, 3, 3]


def test_spread_ties_broken_by_reserved_memory_fraction() -> None:
    hosts = [
        host("1h1", memory=1000 * MIB, reserved_memory=500 * MIB, containers=[c("a")]),
        host("1h2", memory=8000 * MIB, reserved_memory=1000 * MIB, containers=[c("b")]),
    ]
    assert place(request(), hosts).host_id == "1h2"


def test_spread_full_tie_goes_to_lowest_id_in_natural_order() -> None:
    hosts = [host("1h10"), host("1h9"), host("1h11")]
    assert place(request(), hosts).host_id == "1h9"


def test_placement_does_not_depend_on_host_order() -> None:
    hosts = [
        host("1h1", containers=[c("a")]),
        host("1h2", memory=None),
        host("1h3", reserved_memory=10 * MIB),
        host("1h4", labels=EAST, containers=[c("a"), c("b")]),
    ]
    for labels, expected in [({}, "1h2"), ({A + "host_label_soft": "zone=east"}, "1h4")]:
        results = {place(request(labels=labels), list(p)) for p in itertools.permutations(hosts)}
        assert results == {Placement(expected, ())}


def test_error_lists_hosts_in_id_order_whatever_the_input_order() -> None:
    hosts = [host("1h10"), host("1h2", active=False), host("1h9")]
    messages = {
        str(refused(request(host_id="1h5"), list(p))) for p in itertools.permutations(hosts)
    }
    assert len(messages) == 1
    error = refused(request(labels={A + "host_label": "a=b"}), hosts)
    assert str(error) == (
        "no host can run this container: 1h2 (node-1h2): is not active;"
        " 1h9 (node-1h9): lacks host label a=b; 1h10 (node-1h10): lacks host label a=b"
    )


# Rules combined


def test_combined_rules_error_names_the_first_hard_rule_each_host_fails() -> None:
    hosts = [
        host("1h1", "node-a", labels={"zone": "east"}, used_ports=[("0.0.0.0", 8080, "tcp")]),
        host("1h2", "node-b", labels=WEST),
        host("1h3", "node-c", active=False, labels={"zone": "east"}),
        host("1h4", "node-d", labels={"zone": "east"}, containers=[c("db", app="db")]),
    ]
    labels = {A + "host_label": "zone=east", A + "container_label_ne": "app=db"}
    error = refused(request(ports=[(None, 8080, "tcp")], labels=labels), hosts)
    assert str(error) == (
        "no host can run this container: 1h1 (node-a): port 8080/tcp is already used;"
        " 1h2 (node-b): lacks host label zone=east; 1h3 (node-c): is not active;"
        " 1h4 (node-d): runs a container with label app=db"
    )


def test_combined_hard_and_soft_rules_pick_the_one_fitting_host() -> None:
    hosts = [
        host("1h1", labels=EAST, used_ports=[("10.0.0.1", 443, "tcp")]),
        host("1h2", labels=EAST, reserved_memory=4000 * MIB),
        host("1h3", labels=WEST),
        host("1h4", labels={"zone": "east"}, containers=[c("a"), c("b")]),
        host("1h5", labels=EAST, containers=[c("a"), c("b"), c("c")]),
    ]
    labels = {A + "host_label": "zone=east", A + "host_label_soft": "disk=ssd"}
    req = request(ports=[(None, 443, "tcp")], memory=512 * MIB, labels=labels)
    assert place(req, hosts) == Placement("1h5", ())


# Parsing scheduling labels


def test_rules_are_parsed_per_item_with_whitespace_and_empty_items_dropped() -> None:
    labels = {A + "host_label_soft_ne": " zone=west , ,disk = hdd,", A + "container": "/db, web"}
    assert parse_rules(labels) == (
        Rule(A + "container", RuleField.CONTAINER, False, False, "db"),
        Rule(A + "container", RuleField.CONTAINER, False, False, "web"),
        Rule(A + "host_label_soft_ne", RuleField.HOST_LABEL, True, True, "zone", "west"),
        Rule(A + "host_label_soft_ne", RuleField.HOST_LABEL, True, True, "disk", "hdd"),
    )


def test_label_value_may_contain_equals_signs() -> None:
    (rule,) = parse_rules({A + "host_label": "expr=a=b"})
    assert (rule.key, rule.value) == ("expr", "a=b")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({A + "host_label": "zone"}, f"scheduling label {A}host_label: 'zone' is not key=value"),
        (
            {A + "container_label_soft": "app=db,tier"},
            f"scheduling label {A}container_label_soft: 'tier' is not key=value",
        ),
        (
            {A + "host_label_ne": "=east"},
            f"scheduling label {A}host_label_ne: '=east' is not key=value",
        ),
        (
            {A + "container_ne": "web,/"},
            f"scheduling label {A}container_ne: '/' is not a container name",
        ),
        ({A + "host_labels": "zone=east"}, f"unknown scheduling label {A}host_labels"),
    ],
    ids=[
        "host_label without =",
        "container_label without =",
        "empty key",
        "empty container name",
        "unknown rule",
    ],
)
def test_malformed_rule_raises_value_error_naming_the_label(
    labels: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        place(request(labels=labels), [host("1h1")])
    assert str(caught.value) == message
    assert "\n" not in message


def test_malformed_rule_raises_value_error_even_without_hosts() -> None:
    with pytest.raises(ValueError, match="host_label"):
        place(request(labels={A + "host_label": "zone"}), [])


def test_scheduler_module_is_pure() -> None:
    """Importing it pulls in no event loop, web framework, store or docker client."""
    code = (
        "import sys, server.scheduler; "
        "print(sorted(m for m in ('asyncio', 'aiohttp', 'docker', 'server.store', 'sqlalchemy')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
