"""The overlay planner: golden command lists for each change (peers, chains, the policy), and
convergence in one plan (applying a plan and planning again gives nothing), checked on a
simulated host."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.network.config import OverlayConfig, Peer, Policy, PolicyRule, check_peers, vtep_mac
from agent.network.errors import CommandFailed, OverlayError
from agent.network.plan import Command, plan, plan_teardown
from agent.network.state import (
    Observed,
    parse_fdb,
    parse_links,
    parse_neighbours,
    parse_network,
    parse_routes,
    parse_table,
)
from shared.overlay import PolicyEntry, PortMatch

CONFIG = OverlayConfig.of("10.99.0.1", "10.42.1.0/24")
P2 = Peer.of("10.42.2.0/24", "10.99.0.2")
P3 = Peer.of("10.42.3.0/24", "10.99.0.3")
IPT_F = ("iptables", "-w", "-t", "filter")
IPT_N = ("iptables", "-w", "-t", "nat")
CREATE_NETWORK = (
    "docker", "network", "create", "--driver", "bridge", "--subnet", "10.42.1.0/24",
    "--gateway", "10.42.1.1", "--opt", "com.docker.network.bridge.name=corral0",
    "--opt", "com.docker.network.driver.mtu=1450",
    "--opt", "com.docker.network.bridge.enable_ip_masquerade=false",
    "--label", "io.corral.network=managed", "corral-managed")
ADD_RESOLVER = ("ip", "addr", "add", "169.254.169.250/32", "dev", "corral0")


def cmd(line: str) -> Command:
    return tuple(shlex.split(line))


FRESH_PLAN = [
    cmd("ip link add corral-vx address 0e:42:0a:2a:01:00 mtu 1450 type vxlan id 42 "
        "dstport 4789 local 10.99.0.1 dev eth0 nolearning"),
    cmd("ip addr add 10.42.1.0/32 dev corral-vx"),
    cmd("ip link set dev corral-vx up"),
    cmd("ip route replace 10.42.2.0/24 via 10.42.2.0 dev corral-vx onlink"),
    cmd("ip neigh replace 10.42.2.0 lladdr 0e:42:0a:2a:02:00 dev corral-vx nud permanent"),
    cmd("bridge fdb replace 0e:42:0a:2a:02:00 dev corral-vx dst 10.99.0.2 self permanent"),
    cmd("ip route replace 10.42.3.0/24 via 10.42.3.0 dev corral-vx onlink"),
    cmd("ip neigh replace 10.42.3.0 lladdr 0e:42:0a:2a:03:00 dev corral-vx nud permanent"),
    cmd("bridge fdb replace 0e:42:0a:2a:03:00 dev corral-vx dst 10.99.0.3 self permanent"),
    (*IPT_F, "-N", "CORRAL-FORWARD"),
    (*IPT_F, "-A", "CORRAL-FORWARD", "-i", "corral-vx", "-o", "corral0", "-j", "ACCEPT"),
    (*IPT_F, "-A", "CORRAL-FORWARD", "-i", "corral0", "-o", "corral-vx", "-j", "ACCEPT"),
    (*IPT_F, "-I", "DOCKER-USER", "1", "-j", "CORRAL-FORWARD"),
    (*IPT_N, "-N", "CORRAL-NAT"),
    (*IPT_N, "-A", "CORRAL-NAT", "-s", "10.42.1.0/24", "!", "-d", "10.42.0.0/16", "-j",
     "MASQUERADE"),
    (*IPT_N, "-I", "POSTROUTING", "1", "-j", "CORRAL-NAT"),
    CREATE_NETWORK,
    ADD_RESOLVER,
]


@dataclass
class FakeHost:
    """A simulated host that runs the planner's commands and prints what ``ip -j``, ``bridge
    -j``, ``iptables -S`` and ``docker network`` print. Starts as a stock Docker 20.10 host:
    eth0 with the underlay address, DOCKER-USER ending in RETURN, Docker's masquerade. As
    Docker does, creating a network creates its bridge (with the gateway's address) and
    removing it removes the bridge."""

    links: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "lo": {"kind": None, "mac": "00:00:00:00:00:00", "mtu": 65536, "up": True,
               "addrs": {"127.0.0.1/8"}, "vxlan": None},
        "eth0": {"kind": "veth", "mac": "aa:bb:cc:00:00:01", "mtu": 1500, "up": True,
                 "addrs": {"10.99.0.1/24"}, "vxlan": None}})
    routes: dict[str, str] = field(default_factory=dict)            # dst -> gateway
    neighbours: dict[str, tuple[str, bool]] = field(default_factory=dict)
    fdb: set[tuple[str, str]] = field(default_factory=set)
    tables: dict[str, dict[str, list[tuple[str, ...]]]] = field(default_factory=lambda: {
        "filter": {"INPUT": [], "FORWARD": [("-j", "DOCKER-USER")], "OUTPUT": [],
                   "DOCKER-USER": [("-j", "RETURN")]},
        "nat": {"PREROUTING": [], "INPUT": [], "OUTPUT": [],
                "POSTROUTING": [("-s", "172.17.0.0/16", "!", "-o", "docker0", "-j",
                                 "MASQUERADE")]}})
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[Command] = field(default_factory=list)

    def observed(self) -> Observed:
        """What ``agent.network.overlay.observe`` would read, through the real parsers."""
        has_device = "corral-vx" in self.links
        return Observed(
            links=parse_links(self.print_links()),
            routes=parse_routes(self.print_routes()) if has_device else (),
            neighbours=parse_neighbours(self.print_neighbours()) if has_device else (),
            fdb=parse_fdb(self.print_fdb()) if has_device else (),
            filter=parse_table(self.print_table("filter")),
            nat=parse_table(self.print_table("nat")),
            network=(parse_network(self.print_network("corral-managed"))
                     if "corral-managed" in self.networks else None))

    def apply(self, commands: Sequence[Command]) -> None:
        for command in commands:
            self.execute(command)

    async def run(self, argv: Sequence[str]) -> str:
        """The Runner interface (``agent.network.overlay.Runner``)."""
        argv = tuple(argv)
        match argv:
            case ("ip", "-j", "-d", "addr", "show"):
                return self.print_links()
            case ("ip", "-4", "-j", "route", "show", "dev", "corral-vx"):
                return self.print_routes()
            case ("ip", "-4", "-j", "neigh", "show", "dev", "corral-vx"):
                return self.print_neighbours()
            case ("bridge", "-j", "fdb", "show", "dev", "corral-vx"):
                return self.print_fdb()
            case ("iptables", "-w", "-t", table, "-S"):
                return self.print_table(table)
            case ("docker", "network", "ls", "--no-trunc", "--format", "{{json .}}"):
                return "".join(json.dumps({"Name": name, "ID": f"id-{name}"}) + "\n"
                               for name in self.networks)
            case ("docker", "network", "inspect", name):
                return self.print_network(name)
        self.execute(argv)
        return ""

    def execute(self, c: Command) -> None:
        self.ran.append(c)
        fail = CommandFailed(c, 2, "RTNETLINK answers: the fake host refuses this")
        match c:
            case ("ip", "link", "add", name, "address", mac, "mtu", mtu, "type", "vxlan", "id",
                  vni, "dstport", port, "local", local, "dev", dev, "nolearning"):
                if name in self.links or dev not in self.links:
                    raise fail
                self.links[name] = {"kind": "vxlan", "mac": mac, "mtu": int(mtu), "up": False,
                                    "addrs": set(), "vxlan": {
                                        "id": int(vni), "port": int(port), "local": local,
                                        "link": dev, "learning": False}}
            case ("ip", "link", "del", name):
                if self.links.pop(name, None) is None:
                    raise fail
                self.routes, self.neighbours, self.fdb = {}, {}, set()
            case ("ip", "link", "set", "dev", name, "address", mac):
                self.links[name]["mac"] = mac
            case ("ip", "link", "set", "dev", name, "mtu", mtu):
                self.links[name]["mtu"] = int(mtu)
            case ("ip", "link", "set", "dev", name, "up"):
                self.links[name]["up"] = True
            case ("ip", "addr", "add", address, "dev", name):
                if address in self.links[name]["addrs"]:
                    raise fail
                self.links[name]["addrs"].add(address)
            case ("ip", "addr", "del", address, "dev", name):
                self.links[name]["addrs"].remove(address)
            case ("ip", "route", "replace", dst, "via", via, "dev", "corral-vx", "onlink"):
                self.routes[dst] = via
            case ("ip", "route", "del", dst, "dev", "corral-vx"):
                if self.routes.pop(dst, None) is None:
                    raise fail
            case ("ip", "neigh", "replace", dst, "lladdr", mac, "dev", "corral-vx", "nud",
                  "permanent"):
                self.neighbours[dst] = (mac, True)
            case ("ip", "neigh", "del", dst, "dev", "corral-vx"):
                if self.neighbours.pop(dst, None) is None:
                    raise fail
            case ("bridge", "fdb", "replace", mac, "dev", "corral-vx", "dst", dst, "self",
                  "permanent"):
                # The kernel replaces the MAC's first destination.
                self.fdb = {e for e in self.fdb if e[0] != mac} | {(mac, dst)}
            case ("bridge", "fdb", "del", mac, "dev", "corral-vx", "dst", dst, "self"):
                if (mac, dst) not in self.fdb:
                    raise fail
                self.fdb.discard((mac, dst))
            case ("iptables", "-w", "-t", table, op, chain, *rule):
                self._iptables(self.tables[table], op, chain, tuple(rule), fail)
            case ("docker", "network", "create", *_, name):
                if name in self.networks:
                    raise fail
                options = dict(c[i + 1].split("=", 1) for i, w in enumerate(c) if w == "--opt")
                subnet, gateway = c[c.index("--subnet") + 1], c[c.index("--gateway") + 1]
                self.networks[name] = {"subnet": subnet, "gateway": gateway,
                                       "options": options, "driver": c[c.index("--driver") + 1]}
                self.links[options["com.docker.network.bridge.name"]] = {
                    "kind": "bridge", "mac": "02:42:0a:2a:01:01", "mtu": 1500, "up": True,
                    "addrs": {f"{gateway}/{subnet.split('/')[1]}"}, "vxlan": None}
            case ("docker", "network", "rm", name):
                network = self.networks.pop(name, None)
                if network is None:
                    raise fail
                self.links.pop(network["options"]["com.docker.network.bridge.name"], None)
            case _:
                raise AssertionError(f"the fake host does not know {shlex.join(c)}")

    @staticmethod
    def _iptables(chains: dict[str, list[tuple[str, ...]]], op: str, chain: str,
                  rule: tuple[str, ...], fail: CommandFailed) -> None:
        if op == "-N":
            if chain in chains:
                raise fail
            chains[chain] = []
            return
        if chain not in chains:
            raise fail
        match op:
            case "-A":
                chains[chain].append(rule)
            case "-I":
                chains[chain].insert(int(rule[0]) - 1, rule[1:])
            case "-D":
                if rule not in chains[chain]:
                    raise fail
                chains[chain].remove(rule)
            case "-F":
                chains[chain] = []
            case "-X":
                if chains[chain] or any(("-j", chain) == r for rs in chains.values() for r in rs):
                    raise fail
                del chains[chain]
            case _:
                raise AssertionError(f"the fake host does not know iptables {op}")

    def print_links(self) -> str:
        out = []
        for name, link in self.links.items():
            item: dict[str, Any] = {
                "ifname": name, "mtu": link["mtu"], "address": link["mac"],
                "flags": ["BROADCAST", "UP"] if link["up"] else ["BROADCAST"],
                "addr_info": [{"family": "inet", "local": a.split("/")[0],
                               "prefixlen": int(a.split("/")[1])} for a in sorted(link["addrs"])]
                + [{"family": "inet6", "local": "fe80::1", "prefixlen": 64}]}
            if link["kind"]:
                item["linkinfo"] = {"info_kind": link["kind"]}
                if link["vxlan"]:
                    item["linkinfo"]["info_data"] = dict(link["vxlan"])
            out.append(item)
        return json.dumps(out)

    def print_routes(self) -> str:
        return json.dumps([{"dst": dst, "gateway": via, "flags": ["onlink"]}
                           for dst, via in self.routes.items()])

    def print_neighbours(self) -> str:
        return json.dumps([{"dst": dst, "lladdr": mac, "state": ["PERMANENT" if p else "STALE"]}
                           for dst, (mac, p) in self.neighbours.items()])

    def print_fdb(self) -> str:
        return json.dumps([{"mac": mac, "dst": dst, "flags": ["self"], "state": "permanent"}
                           for mac, dst in sorted(self.fdb)])

    def print_table(self, table: str) -> str:
        lines = []
        for chain in self.tables[table]:
            builtin = chain.isupper() and "-" not in chain
            lines.append(f"-P {chain} ACCEPT" if builtin else f"-N {chain}")
        for chain, rules in self.tables[table].items():
            lines += [" ".join(("-A", chain, *rule)) for rule in rules]
        return "\n".join(lines) + "\n"

    def print_network(self, name: str) -> str:
        n = self.networks[name]
        return json.dumps([{"Name": name, "Id": f"id-{name}", "Driver": n["driver"],
                            "IPAM": {"Driver": "default", "Config": [
                                {"Subnet": n["subnet"], "Gateway": n["gateway"]}]},
                            "Options": n["options"], "Containers": {}}])


def converge(host: FakeHost, config: OverlayConfig, peers: Sequence[Peer]) -> list[Command]:
    """Plan on ``host``, apply, and check that planning again gives nothing."""
    commands = plan(config, peers, host.observed())
    host.apply(commands)
    assert plan(config, peers, host.observed()) == []
    return commands


def peer_entries(host: FakeHost) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    return set(host.routes), set(host.neighbours), set(host.fdb)


# derived addresses


def test_the_vtep_mac_is_0e_42_then_the_subnets_address_for_every_subnet_of_the_pool() -> None:
    assert vtep_mac(IPv4Network("10.42.3.0/24")) == "0e:42:0a:2a:03:00"
    assert vtep_mac(IPv4Network("10.42.255.0/24")) == "0e:42:0a:2a:ff:00"
    assert CONFIG.device_address.compressed == "10.42.1.0"
    assert CONFIG.gateway.compressed == "10.42.1.1"


def test_the_vtep_mac_is_unique_in_other_pools_and_sizes() -> None:
    config = OverlayConfig.of("192.168.1.5", "10.8.4.128/25", pool="10.8.0.0/14")
    assert config.vtep_mac == "0e:42:0a:08:04:80"
    assert config.gateway.compressed == "10.8.4.129"


# config validation


@pytest.mark.parametrize(("subnet", "options", "message"), [
    ("10.42.3.5/24", {}, "host bits set; did you mean 10.42.3.0/24?"),
    ("10.43.3.0/24", {}, "is not a subnet of the pool 10.42.0.0/16"),
    ("10.42.0.0/16", {}, "is not a subnet of the pool"),
    ("10.42.3.0/31", {}, "too small"),
    ("nonsense", {}, "is not an IPv4 network"),
    ("10.42.3.0/24", {"vni": 0}, "VNI 0 is out of range"),
    ("10.42.3.0/24", {"port": 70000}, "VXLAN port 70000 is out of range"),
    ("10.42.3.0/24", {"mtu": 100}, "MTU 100 is out of range"),
    ("10.42.3.0/24", {"device": "-rf"}, "VXLAN device name '-rf' is not a valid name"),
    ("10.42.3.0/24", {"bridge": "a-very-long-bridge-name"}, "at most 15 characters"),
    ("10.42.3.0/24", {"bridge": "corral-vx"}, "cannot both be"),
    ("10.42.3.0/24", {"underlay_device": "eth 0"}, "Underlay device name"),
    ("10.42.3.0/24", {"network": "bad name"}, "Docker network name"),
])
def test_invalid_settings_are_refused_with_a_sentence(subnet: str, options: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OverlayConfig.of("10.99.0.1", subnet, **options)


def test_text_where_an_address_belongs_is_a_type_error_pointing_at_of() -> None:
    with pytest.raises(TypeError, match=r"Peer\.subnet must be an IPv4Network; use Peer\.of"):
        Peer("10.42.2.0/24", P2.underlay_ip)  # type: ignore[arg-type]


def test_an_underlay_address_in_the_pool_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Underlay address 10\.42\.9\.1 is inside the overlay"):
        OverlayConfig.of("10.42.9.1", "10.42.3.0/24")
    with pytest.raises(ValueError, match=r"'10\.99\.0\.300' is not an IPv4 address"):
        Peer.of("10.42.2.0/24", "10.99.0.300")


@pytest.mark.parametrize(("peers", "message"), [
    ([Peer.of("10.42.1.0/24", "10.99.0.9")], "overlaps this host's subnet 10.42.1.0/24"),
    ([Peer.of("10.42.2.0/24", "10.99.0.1")], "has this host's own underlay address"),
    ([Peer.of("10.42.2.0/24", "10.42.7.7")], "inside the overlay pool"),
    ([Peer.of("10.43.2.0/24", "10.99.0.2")], "not a subnet of the pool"),
    ([P2, Peer.of("10.42.2.128/25", "10.99.0.7")], "10.42.2.0/24 and 10.42.2.128/25 overlap"),
    ([P2, Peer.of("10.42.4.0/24", "10.99.0.2")], "have the same underlay address 10.99.0.2"),
])
def test_peers_that_cannot_coexist_are_refused(peers: list[Peer], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(CONFIG, peers, FakeHost().observed())


def test_a_peer_listed_twice_counts_once() -> None:
    assert check_peers(CONFIG, [P3, P2, P3]) == [P2, P3]


# golden plans


def test_a_fresh_host_gets_the_device_every_peer_the_chains_and_the_network() -> None:
    assert plan(CONFIG, [P3, P2], FakeHost().observed()) == FRESH_PLAN


def test_applying_twice_changes_nothing() -> None:
    host = FakeHost()
    assert converge(host, CONFIG, [P2, P3]) == FRESH_PLAN
    assert converge(host, CONFIG, [P2, P3]) == []


def test_a_removed_peer_loses_its_route_neighbour_and_fdb_entry_and_nothing_else() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2, P3])
    assert converge(host, CONFIG, [P2]) == [
        cmd("ip route del 10.42.3.0/24 dev corral-vx"),
        cmd("ip neigh del 10.42.3.0 dev corral-vx"),
        cmd("bridge fdb del 0e:42:0a:2a:03:00 dev corral-vx dst 10.99.0.3 self"),
    ]
    assert peer_entries(host) == ({"10.42.2.0/24"}, {"10.42.2.0"},
                                  {("0e:42:0a:2a:02:00", "10.99.0.2")})


def test_every_peer_removed_leaves_the_device_and_rules_in_place() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2, P3])
    commands = converge(host, CONFIG, [])
    assert len(commands) == 6
    assert peer_entries(host) == (set(), set(), set())
    assert "corral-vx" in host.links and "corral-managed" in host.networks


def test_a_peer_that_moved_to_another_underlay_address_gets_one_fdb_destination() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2])
    moved = Peer.of("10.42.2.0/24", "10.99.0.20")
    assert converge(host, CONFIG, [moved]) == [
        cmd("bridge fdb del 0e:42:0a:2a:02:00 dev corral-vx dst 10.99.0.2 self"),
        cmd("bridge fdb replace 0e:42:0a:2a:02:00 dev corral-vx dst 10.99.0.20 self permanent"),
    ]


def test_a_new_peer_adds_only_its_own_entries() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2])
    assert converge(host, CONFIG, [P2, P3]) == FRESH_PLAN[6:9]


def test_a_learned_neighbour_of_a_peer_is_made_permanent() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2])
    host.neighbours["10.42.2.0"] = ("0e:42:0a:2a:02:00", False)
    host.neighbours["10.42.9.9"] = ("0e:00:00:00:00:01", False)
    assert converge(host, CONFIG, [P2]) == [
        cmd("ip neigh del 10.42.9.9 dev corral-vx"),
        cmd("ip neigh replace 10.42.2.0 lladdr 0e:42:0a:2a:02:00 dev corral-vx nud permanent"),
    ]


def test_a_device_with_another_vni_is_recreated_with_every_peer() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2, P3])
    other = OverlayConfig.of("10.99.0.1", "10.42.1.0/24", vni=43)
    commands = converge(host, other, [P2, P3])
    assert commands[0] == cmd("ip link del corral-vx")
    assert commands[1][:4] == ("ip", "link", "add", "corral-vx")
    assert "43" in commands[1]
    assert commands[2:9] == FRESH_PLAN[1:8]
    assert commands[9:] == FRESH_PLAN[8:9]


def test_a_device_with_drifted_settings_is_set_in_place() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2])
    link = host.links["corral-vx"]
    link.update(mac="0e:00:00:00:00:99", mtu=1500, up=False, addrs={"10.42.1.7/24"})
    assert converge(host, CONFIG, [P2]) == [
        cmd("ip link set dev corral-vx address 0e:42:0a:2a:01:00"),
        cmd("ip link set dev corral-vx mtu 1450"),
        cmd("ip addr del 10.42.1.7/24 dev corral-vx"),
        cmd("ip addr add 10.42.1.0/32 dev corral-vx"),
        cmd("ip link set dev corral-vx up"),
    ]


def test_a_link_of_another_kind_with_the_devices_name_is_replaced() -> None:
    host = FakeHost()
    host.links["corral-vx"] = {"kind": "dummy", "mac": "0e:00:00:00:00:01", "mtu": 1500,
                               "up": True, "addrs": set(), "vxlan": None}
    assert converge(host, CONFIG, [P2])[:2] == [cmd("ip link del corral-vx"), FRESH_PLAN[0]]


def test_the_underlay_device_is_the_one_holding_the_underlay_address_unless_named() -> None:
    host = FakeHost()
    host.links["eth0"]["addrs"] = {"10.99.0.1/16"}
    assert plan(CONFIG, [], host.observed())[0][-3:] == ("dev", "eth0", "nolearning")
    named = OverlayConfig.of("10.99.0.1", "10.42.1.0/24", underlay_device="bond0")
    assert plan(named, [], host.observed())[0][-3:] == ("dev", "bond0", "nolearning")
    host.links["eth0"]["addrs"] = {"10.99.0.2/24"}
    with pytest.raises(OverlayError, match=r"No interface on this host has the underlay address "
                                           r"10\.99\.0\.1"):
        plan(CONFIG, [], host.observed())


def test_a_jump_behind_docker_users_return_is_moved_in_front_and_duplicates_go() -> None:
    host = FakeHost()
    converge(host, CONFIG, [])
    host.tables["filter"]["DOCKER-USER"] = [("-j", "RETURN"), ("-j", "CORRAL-FORWARD"),
                                           ("-j", "CORRAL-FORWARD")]
    assert converge(host, CONFIG, []) == [
        (*IPT_F, "-D", "DOCKER-USER", "-j", "CORRAL-FORWARD"),
        (*IPT_F, "-D", "DOCKER-USER", "-j", "CORRAL-FORWARD"),
        (*IPT_F, "-I", "DOCKER-USER", "1", "-j", "CORRAL-FORWARD"),
    ]
    assert host.tables["filter"]["DOCKER-USER"] == [("-j", "CORRAL-FORWARD"), ("-j", "RETURN")]


def test_rules_of_others_in_docker_user_stay_in_front_of_ours() -> None:
    host = FakeHost()
    host.tables["filter"]["DOCKER-USER"] = [("-s", "1.2.3.4/32", "-j", "DROP"),
                                           ("-j", "CORRAL-FORWARD"), ("-j", "RETURN")]
    assert not any("DOCKER-USER" in c for c in plan(CONFIG, [], host.observed()))


def test_docker_user_is_made_when_docker_has_not_made_it() -> None:
    host = FakeHost()
    del host.tables["filter"]["DOCKER-USER"]
    commands = converge(host, CONFIG, [])
    assert (*IPT_F, "-N", "DOCKER-USER") in commands


def test_stray_and_duplicate_rules_in_corrals_chains_are_deleted() -> None:
    host = FakeHost()
    converge(host, CONFIG, [])
    forward = host.tables["filter"]["CORRAL-FORWARD"]
    forward += [forward[0], ("-i", "eth9", "-j", "ACCEPT")]
    host.tables["nat"]["CORRAL-NAT"] = [("-s", "10.42.7.0/24", "!", "-d", "10.42.0.0/16", "-j",
                                         "MASQUERADE")]
    assert converge(host, CONFIG, []) == [
        (*IPT_F, "-D", "CORRAL-FORWARD", "-i", "corral-vx", "-o", "corral0", "-j", "ACCEPT"),
        (*IPT_F, "-D", "CORRAL-FORWARD", "-i", "eth9", "-j", "ACCEPT"),
        (*IPT_N, "-D", "CORRAL-NAT", "-s", "10.42.7.0/24", "!", "-d", "10.42.0.0/16", "-j",
         "MASQUERADE"),
        FRESH_PLAN[14],
    ]


def test_a_network_missing_after_a_docker_restart_is_recreated() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2])
    del host.networks["corral-managed"]
    assert converge(host, CONFIG, [P2]) == [CREATE_NETWORK, ADD_RESOLVER]


def test_a_network_with_other_settings_is_replaced() -> None:
    host = FakeHost()
    converge(host, CONFIG, [])
    host.networks["corral-managed"]["options"]["com.docker.network.driver.mtu"] = "1500"
    assert converge(host, CONFIG, []) == [cmd("docker network rm corral-managed"),
                                          CREATE_NETWORK, ADD_RESOLVER]


# the discovery DNS address


def test_the_bridge_carries_the_discovery_dns_address_beside_its_gateway() -> None:
    host = FakeHost()
    converge(host, CONFIG, [])
    assert host.links["corral0"]["addrs"] == {"10.42.1.1/24", "169.254.169.250/32"}


def test_a_bridge_that_lost_the_discovery_dns_address_gets_it_back_alone() -> None:
    """dockerd may drop it when it sets the bridge up again after a restart."""
    host = FakeHost()
    converge(host, CONFIG, [P2])
    host.links["corral0"]["addrs"].discard("169.254.169.250/32")
    assert converge(host, CONFIG, [P2]) == [ADD_RESOLVER]


def test_a_deny_policy_cannot_drop_queries_to_the_discovery_dns() -> None:
    """Queries to 169.254.169.250 are for the host (INPUT); the policy is only reached from
    FORWARD, and only for traffic into the bridge."""
    host = FakeHost()
    converge(host, DENY, [P2])
    filter_table = host.tables["filter"]
    assert filter_table["INPUT"] == []
    jumps = [chain for chain, rules in filter_table.items()
             if any("CORRAL-POLICY" in rule for rule in rules)]
    assert jumps == ["CORRAL-FORWARD"]
    assert not any("169.254" in word for rule in filter_table["CORRAL-POLICY"] for word in rule)


# teardown


def test_teardown_removes_the_network_the_chains_and_the_device() -> None:
    host = FakeHost()
    converge(host, CONFIG, [P2, P3])
    commands = plan_teardown(host.observed())
    assert commands == [
        cmd("docker network rm corral-managed"),
        (*IPT_F, "-D", "DOCKER-USER", "-j", "CORRAL-FORWARD"),
        (*IPT_F, "-F", "CORRAL-FORWARD"),
        (*IPT_F, "-X", "CORRAL-FORWARD"),
        (*IPT_N, "-D", "POSTROUTING", "-j", "CORRAL-NAT"),
        (*IPT_N, "-F", "CORRAL-NAT"),
        (*IPT_N, "-X", "CORRAL-NAT"),
        cmd("ip link del corral-vx"),
    ]
    host.apply(commands)
    assert host.tables == FakeHost().tables
    assert host.links.keys() == {"lo", "eth0"} and not host.networks
    assert plan_teardown(host.observed()) == []


def test_teardown_takes_the_dns_address_off_a_bridge_left_without_its_network() -> None:
    host = FakeHost()
    converge(host, CONFIG, [])
    del host.networks["corral-managed"]
    assert plan_teardown(host.observed())[0] == cmd("ip addr del 169.254.169.250/32 dev corral0")


# the policy


def entry(action: str, sources: Sequence[str], destinations: Sequence[str],
          ports: Sequence[tuple[int, str]] = ()) -> PolicyEntry:
    return PolicyEntry(action, tuple(sources), tuple(destinations),
                       tuple(PortMatch(port, protocol) for port, protocol in ports))


def with_policy(default_action: str, *entries: PolicyEntry) -> OverlayConfig:
    return OverlayConfig.of("10.99.0.1", "10.42.1.0/24",
                            policy=Policy.of(default_action, entries))


ESTABLISHED = (*IPT_F, "-A", "CORRAL-POLICY", "-m", "conntrack", "--ctstate",
               "RELATED,ESTABLISHED", "-j", "RETURN")
POLICY_JUMP = (*IPT_F, "-I", "CORRAL-FORWARD", "1", "-o", "corral0", "-j", "CORRAL-POLICY")
DENY_THE_REST = (*IPT_F, "-A", "CORRAL-POLICY", "-s", "10.42.0.0/16", "-d", "10.42.1.0/24",
                 "-j", "DROP")
DENY = with_policy("deny")
WEB = with_policy("deny", entry("allow", ["10.42.2.5", "10.42.3.7"], ["10.42.1.3"],
                                [(80, "tcp"), (53, "udp")]),
                  entry("allow", ["10.42.2.0/24"], ["10.42.1.4"]))


def test_a_deny_policy_jumps_first_from_corral_forward_into_a_chain_ending_in_drop() -> None:
    host = FakeHost()
    commands = converge(host, DENY, [P2, P3])
    assert commands == [*FRESH_PLAN[:12],
                        (*IPT_F, "-N", "CORRAL-POLICY"), ESTABLISHED, DENY_THE_REST, POLICY_JUMP,
                        *FRESH_PLAN[12:]]
    assert host.tables["filter"]["CORRAL-FORWARD"][0] == ("-o", "corral0", "-j",
                                                          "CORRAL-POLICY")


def test_allow_entries_become_one_rule_per_destination_source_and_port_in_order() -> None:
    host = FakeHost()
    converge(host, WEB, [P2])
    assert host.tables["filter"]["CORRAL-POLICY"] == [
        ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"),
        ("-s", "10.42.2.5/32", "-d", "10.42.1.3/32", "-p", "tcp", "-m", "tcp", "--dport", "80",
         "-j", "ACCEPT"),
        ("-s", "10.42.2.5/32", "-d", "10.42.1.3/32", "-p", "udp", "-m", "udp", "--dport", "53",
         "-j", "ACCEPT"),
        ("-s", "10.42.3.7/32", "-d", "10.42.1.3/32", "-p", "tcp", "-m", "tcp", "--dport", "80",
         "-j", "ACCEPT"),
        ("-s", "10.42.3.7/32", "-d", "10.42.1.3/32", "-p", "udp", "-m", "udp", "--dport", "53",
         "-j", "ACCEPT"),
        ("-s", "10.42.2.0/24", "-d", "10.42.1.4/32", "-j", "ACCEPT"),
        ("-s", "10.42.0.0/16", "-d", "10.42.1.0/24", "-j", "DROP"),
    ]


def test_deny_entries_under_an_open_default_drop_and_nothing_else() -> None:
    host = FakeHost()
    config = with_policy("allow", entry("deny", ["0.0.0.0/0"], ["10.42.1.3"], [(22, "tcp")]),
                         entry("allow", ["10.42.2.5"], ["10.42.1.3"]))
    converge(host, config, [])
    assert host.tables["filter"]["CORRAL-POLICY"][1:] == [
        ("-d", "10.42.1.3/32", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "DROP"),
        ("-s", "10.42.2.5/32", "-d", "10.42.1.3/32", "-j", "ACCEPT"),
    ]


def test_an_only_allowing_policy_is_open_and_programs_nothing() -> None:
    config = with_policy("allow", entry("allow", ["10.42.2.5"], ["10.42.1.3"]))
    assert config.policy.open
    assert plan(config, [P2, P3], FakeHost().observed()) == FRESH_PLAN


def test_a_rule_an_earlier_one_decides_is_left_out() -> None:
    config = with_policy("deny", entry("allow", ["10.42.2.5"], ["10.42.1.3"]),
                         entry("deny", ["10.42.2.5"], ["10.42.1.3"]),
                         entry("allow", ["10.42.2.5", "10.42.2.5"], ["10.42.1.3"]))
    host = FakeHost()
    converge(host, config, [])
    assert len(host.tables["filter"]["CORRAL-POLICY"]) == 3


def test_reordered_entries_rebuild_the_chain_flushing_it_first() -> None:
    host = FakeHost()
    converge(host, WEB, [P2])
    first, second = WEB.policy.rules[:4], WEB.policy.rules[4:]
    swapped = OverlayConfig.of("10.99.0.1", "10.42.1.0/24",
                               policy=Policy(second + first, default_deny=True))
    commands = converge(host, swapped, [P2])
    assert commands[0] == (*IPT_F, "-F", "CORRAL-POLICY")
    assert commands[1] == ESTABLISHED
    assert commands[2] == (*IPT_F, "-A", "CORRAL-POLICY", "-s", "10.42.2.0/24", "-d",
                           "10.42.1.4/32", "-j", "ACCEPT")
    assert len(commands) == 8 and commands[-1] == DENY_THE_REST


def test_a_stray_rule_in_the_policy_chain_rebuilds_it() -> None:
    host = FakeHost()
    converge(host, DENY, [])
    host.tables["filter"]["CORRAL-POLICY"].insert(1, ("-j", "ACCEPT"))
    assert converge(host, DENY, []) == [(*IPT_F, "-F", "CORRAL-POLICY"), ESTABLISHED,
                                        DENY_THE_REST]


def test_a_policy_jump_that_is_not_first_or_not_alone_is_put_back_first() -> None:
    host = FakeHost()
    converge(host, DENY, [])
    forward = host.tables["filter"]["CORRAL-FORWARD"]
    forward.append(forward.pop(0))
    forward.append(forward[-1])
    unjump = (*IPT_F, "-D", "CORRAL-FORWARD", "-o", "corral0", "-j", "CORRAL-POLICY")
    assert converge(host, DENY, []) == [unjump, unjump, POLICY_JUMP]


def test_a_policy_back_to_open_removes_the_jump_and_the_chain() -> None:
    host, plain = FakeHost(), FakeHost()
    converge(host, WEB, [P2])
    assert converge(host, CONFIG, [P2]) == [
        (*IPT_F, "-D", "CORRAL-FORWARD", "-o", "corral0", "-j", "CORRAL-POLICY"),
        (*IPT_F, "-F", "CORRAL-POLICY"),
        (*IPT_F, "-X", "CORRAL-POLICY"),
    ]
    converge(plain, CONFIG, [P2])
    assert host.tables == plain.tables


def test_teardown_removes_the_policy_chain_too() -> None:
    host = FakeHost()
    converge(host, WEB, [P2])
    commands = plan_teardown(host.observed())
    assert commands[3:6] == [(*IPT_F, "-X", "CORRAL-FORWARD"), (*IPT_F, "-F", "CORRAL-POLICY"),
                             (*IPT_F, "-X", "CORRAL-POLICY")]
    host.apply(commands)
    assert host.tables == FakeHost().tables


@pytest.mark.parametrize(("default_action", "policy_entry", "message"), [
    ("block", None, "default action 'block' is not allow or deny"),
    ("deny", entry("maybe", [], []), "action 'maybe' is not allow or deny"),
    ("deny", entry("allow", ["10.42.2.300"], ["10.42.1.3"]), "source '10.42.2.300' is not"),
    ("deny", entry("allow", ["10.42.2.5"], ["10.42.1.3/24"]), "destination '10.42.1.3/24' is"),
    ("deny", entry("allow", ["10.42.2.5"], ["10.42.1.3"], [(80, "sctp")]), "'sctp' is not tcp"),
])
def test_a_policy_that_cannot_be_programmed_is_refused_with_a_sentence(
        default_action: str, policy_entry: PolicyEntry | None, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Policy.of(default_action, [policy_entry] if policy_entry else [])


def test_a_policy_rule_from_text_is_an_address_or_a_network() -> None:
    rule = Policy.of("deny", [entry("deny", ["10.42.2.0/24"], ["10.42.1.3"])]).rules[0]
    assert rule == PolicyRule(False, IPv4Network("10.42.2.0/24"), IPv4Network("10.42.1.3/32"))


# convergence from any state to any other

SUBNETS = [f"10.42.{i}.0/24" for i in range(2, 8)]
peer_sets = st.lists(st.tuples(st.sampled_from(SUBNETS), st.integers(2, 9)), max_size=6).map(
    lambda pairs: list({s: Peer.of(s, f"10.99.0.{n}") for s, n in pairs}.values()))


@settings(max_examples=60, deadline=None)
@given(st.lists(peer_sets, min_size=1, max_size=4))
def test_any_sequence_of_peer_lists_converges_in_one_plan_without_stale_entries(
        sequence: list[list[Peer]]) -> None:
    host = FakeHost()
    for peers in sequence:
        if len({p.underlay_ip for p in peers}) != len(peers):
            continue
        converge(host, CONFIG, peers)
        assert peer_entries(host) == (
            {str(p.subnet) for p in peers}, {str(p.device_address) for p in peers},
            {(p.vtep_mac, str(p.underlay_ip)) for p in peers})


policies = st.lists(st.tuples(
    st.sampled_from(["allow", "deny"]), st.sampled_from(["10.42.2.5", "10.42.3.0/24"]),
    st.sampled_from(["10.42.1.3", "10.42.1.4"]), st.sampled_from([None, 80, 443])),
    max_size=4).flatmap(lambda rules: st.builds(
        lambda deny: Policy(tuple(PolicyRule(a == "allow", IPv4Network(s), IPv4Network(d), p)
                                  for a, s, d, p in rules), deny), st.booleans()))


@settings(max_examples=60, deadline=None)
@given(st.lists(policies, min_size=1, max_size=4))
def test_any_sequence_of_policies_converges_in_one_plan(sequence: list[Policy]) -> None:
    host = FakeHost()
    for policy in sequence:
        config = OverlayConfig.of("10.99.0.1", "10.42.1.0/24", policy=policy)
        converge(host, config, [P2])
        chain = host.tables["filter"].get("CORRAL-POLICY")
        assert (chain is None) == policy.open
        jumps = [r for r in host.tables["filter"]["CORRAL-FORWARD"] if "CORRAL-POLICY" in r]
        assert jumps == ([] if policy.open else [host.tables["filter"]["CORRAL-FORWARD"][0]])
