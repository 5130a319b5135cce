"""From what the overlay should be and what the host has, the commands that close the gap. Pure.

:func:`plan` returns argv tuples for ``ip``, ``bridge``, ``iptables`` and ``docker``, in the order
they must run; an empty plan means the host already matches, so applying a plan and planning
again gives nothing. Stale entries (a removed peer's route, neighbour and FDB entry, a rule
that is not ours) are deleted before anything is added, so that a peer whose underlay address
changed never has two FDB destinations. :func:`plan_teardown` removes everything Corral adds.

What each piece is for:

- the VXLAN device, without learning: every peer's route, neighbour and FDB entry is static;
- ``CORRAL-FORWARD``, jumped to from ``DOCKER-USER`` before its ``RETURN``: Docker's FORWARD
  policy is DROP, and flows from the VXLAN into the bridge are not Docker's own;
- ``CORRAL-POLICY``, only while the policy is not open, jumped to from the top of
  ``CORRAL-FORWARD`` for everything going out into the bridge: from the VXLAN, and between
  this host's containers too (br_netfilter makes bridged traffic traverse FORWARD). Its first
  match decides, so its order matters: a chain that differs in any way is flushed and
  rewritten rather than patched. An ACCEPT there accepts for the whole FORWARD chain; what
  RETURNs goes on to CORRAL-FORWARD's own rules;
- ``CORRAL-NAT``, jumped to from nat ``POSTROUTING``: the Docker network's masquerade is off so
  that peers see containers' real addresses; only traffic leaving the pool is masqueraded;
- the discovery DNS address (``169.254.169.250/32``) on the bridge, where the agent's responder
  (``agent.dns``) listens: containers reach it through their default route, the bridge's
  gateway. Their queries are for the host itself, so they go through INPUT, never FORWARD:
  CORRAL-POLICY (reached from FORWARD only) cannot drop them, whatever the policy says. The
  address goes with the bridge when the network is removed or recreated (dockerd may also drop
  it when it sets the bridge up again), and is added back with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from ipaddress import IPv4Network

from agent.network.config import BRIDGE, DEVICE, NETWORK, OverlayConfig, Peer, check_peers
from agent.network.errors import OverlayError
from agent.network.state import Link, Observed, Route, Table
from shared.discovery import RESOLVER_ADDRESS

Command = tuple[str, ...]

FORWARD_CHAIN = "CORRAL-FORWARD"
NAT_CHAIN = "CORRAL-NAT"
POLICY_CHAIN = "CORRAL-POLICY"
DOCKER_USER = "DOCKER-USER"
POSTROUTING = "POSTROUTING"
NETWORK_LABEL = "io.corral.network=managed"
_RETURN = ("-j", "RETURN")
VXLAN_OVERHEAD = 50  # outer Ethernet, IPv4, UDP and VXLAN headers
# Replies to connections the policy let through, and what such connections open (FTP data,
# ICMP errors), never meet the policy's rules.
ESTABLISHED = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")
_ANY = IPv4Network("0.0.0.0/0")
RESOLVER = f"{RESOLVER_ADDRESS}/32"


def plan(config: OverlayConfig, peers: Iterable[Peer], observed: Observed) -> list[Command]:
    """The commands that make the host match ``config`` with ``peers``.

    Raises ValueError for peers that cannot coexist (see ``check_peers``) and OverlayError when
    the underlay device is to be found and no interface holds the underlay address.
    """
    checked = check_peers(config, peers)
    underlay = _underlay_device(config, observed)
    config = fit_mtu(config, observed.link(underlay))
    commands, fresh = _device(config, underlay, observed.link(config.device))
    # A device (re)created by this plan starts with no routes, neighbours or FDB entries.
    current = Observed() if fresh else observed
    commands += _peers(config, checked, current)
    commands += _chain("filter", observed.filter, FORWARD_CHAIN, forward_rules(config),
                       unmanaged=policy_jump(config))
    commands += _policy(config, observed.filter)
    commands += _jump("filter", observed.filter, DOCKER_USER, FORWARD_CHAIN)
    commands += _chain("nat", observed.nat, NAT_CHAIN, nat_rules(config))
    commands += _jump("nat", observed.nat, POSTROUTING, NAT_CHAIN)
    network = _network(config, observed)
    commands += network
    commands += _resolver(config, observed, fresh_bridge=bool(network))
    return commands


def fit_mtu(config: OverlayConfig, underlay: Link | None) -> OverlayConfig:
    """``config`` with an MTU its underlay can carry: VXLAN adds 50 bytes, and the kernel
    refuses a VXLAN MTU above the underlay's less those (a cloud network's 1400-byte MTU
    makes the default 1450 impossible). The configured MTU is the most it may be."""
    if underlay is None or underlay.mtu <= 0:
        return config
    most = underlay.mtu - VXLAN_OVERHEAD
    return config if config.mtu <= most else dataclasses.replace(config, mtu=max(most, 576))


def plan_teardown(observed: Observed, *, device: str = DEVICE, network: str = NETWORK,
                  bridge: str = BRIDGE) -> list[Command]:
    """The commands that remove the Docker network, Corral's chains and the VXLAN device
    (its routes, neighbours and FDB entries go with it). CORRAL-POLICY goes after
    CORRAL-FORWARD, whose flush removes the only jump to it. The discovery DNS address goes
    with the network's bridge; it is removed on its own only from a bridge left without its
    network."""
    commands: list[Command] = []
    if observed.network is not None:
        commands.append(("docker", "network", "rm", network))
    else:
        link = observed.link(bridge)
        if link is not None and RESOLVER in link.addresses:
            commands.append(("ip", "addr", "del", RESOLVER, "dev", bridge))
    for table, parent, chain in (("filter", DOCKER_USER, FORWARD_CHAIN),
                                 ("filter", None, POLICY_CHAIN),
                                 ("nat", POSTROUTING, NAT_CHAIN)):
        rules = observed.filter if table == "filter" else observed.nat
        if parent is not None:
            jumps = sum(rule == ("-j", chain) for rule in rules.rules(parent) or ())
            commands += [iptables(table, "-D", parent, "-j", chain)] * jumps
        if rules.rules(chain) is not None:
            commands += [iptables(table, "-F", chain), iptables(table, "-X", chain)]
    if observed.link(device) is not None:
        commands.append(("ip", "link", "del", device))
    return commands


def forward_rules(config: OverlayConfig) -> tuple[tuple[str, ...], ...]:
    """The rules of CORRAL-FORWARD, as ``iptables -S`` prints them. The outgoing direction is
    also Docker's own rule; having it here keeps the overlay independent of Docker's version."""
    return (("-i", config.device, "-o", config.bridge, "-j", "ACCEPT"),
            ("-i", config.bridge, "-o", config.device, "-j", "ACCEPT"))


def policy_jump(config: OverlayConfig) -> tuple[str, ...]:
    """The rule of CORRAL-FORWARD that sends what goes into the bridge through the policy."""
    return ("-o", config.bridge, "-j", POLICY_CHAIN)


def policy_rules(config: OverlayConfig) -> tuple[tuple[str, ...], ...]:
    """The rules of CORRAL-POLICY, in order, as ``iptables -S`` prints them. A rule whose
    match an earlier one already decides would never be reached, so it is left out."""
    rules: list[tuple[str, ...]] = [ESTABLISHED]
    seen: set[object] = set()
    for rule in config.policy.rules:
        if rule.match in seen:
            continue
        seen.add(rule.match)
        words: list[str] = []
        # iptables prints no -s/-d for 0.0.0.0/0.
        if rule.source != _ANY:
            words += ["-s", str(rule.source)]
        if rule.destination != _ANY:
            words += ["-d", str(rule.destination)]
        if rule.port is not None:
            words += ["-p", rule.protocol, "-m", rule.protocol, "--dport", str(rule.port)]
        words += ["-j", "ACCEPT" if rule.allow else "DROP"]
        rules.append(tuple(words))
    if config.policy.default_deny:
        # Only the managed network's own traffic is policed: a published port, reached from
        # outside the pool, stays reachable as Rancher's was.
        rules.append(("-s", str(config.pool), "-d", str(config.subnet), "-j", "DROP"))
    return tuple(rules)


def nat_rules(config: OverlayConfig) -> tuple[tuple[str, ...], ...]:
    """The rules of CORRAL-NAT, as ``iptables -S`` prints them."""
    return (("-s", str(config.subnet), "!", "-d", str(config.pool), "-j", "MASQUERADE"),)


def network_options(config: OverlayConfig) -> dict[str, str]:
    """The Docker network's driver options."""
    return {"com.docker.network.bridge.name": config.bridge,
            "com.docker.network.driver.mtu": str(config.mtu),
            "com.docker.network.bridge.enable_ip_masquerade": "false"}


def iptables(table: str, *args: str) -> Command:
    # -w: wait for the xtables lock that dockerd takes too, rather than fail.
    return ("iptables", "-w", "-t", table, *args)


def _underlay_device(config: OverlayConfig, observed: Observed) -> str:
    if config.underlay_device is not None:
        return config.underlay_device
    link = observed.link_with_address(str(config.underlay_ip))
    if link is None:
        raise OverlayError(f"No interface on this host has the underlay address "
                           f"{config.underlay_ip}; check the address the host registered with "
                           "or name the underlay device.")
    return link.name


def _vxlan_matches(link: Link, config: OverlayConfig, underlay: str) -> bool:
    v = link.vxlan
    return (v is not None and v.vni == config.vni and v.port == config.port
            and v.local == str(config.underlay_ip) and v.underlay_device == underlay
            and not v.learning)


def _device(config: OverlayConfig, underlay: str,
            link: Link | None) -> tuple[list[Command], bool]:
    """Commands for the VXLAN device, and whether they create it."""
    dev, mac, address = config.device, config.vtep_mac, f"{config.device_address}/32"
    commands: list[Command] = []
    if link is not None and not _vxlan_matches(link, config, underlay):
        # VNI, port, local address and underlay device cannot be changed in place.
        commands.append(("ip", "link", "del", dev))
        link = None
    if link is None:
        commands += [
            ("ip", "link", "add", dev, "address", mac, "mtu", str(config.mtu), "type", "vxlan",
             "id", str(config.vni), "dstport", str(config.port), "local",
             str(config.underlay_ip), "dev", underlay, "nolearning"),
            ("ip", "addr", "add", address, "dev", dev),
            ("ip", "link", "set", "dev", dev, "up"),
        ]
        return commands, True
    if (link.mac or "").lower() != mac:
        commands.append(("ip", "link", "set", "dev", dev, "address", mac))
    if link.mtu != config.mtu:
        commands.append(("ip", "link", "set", "dev", dev, "mtu", str(config.mtu)))
    commands += [("ip", "addr", "del", extra, "dev", dev)
                 for extra in sorted(link.addresses - {address})]
    if address not in link.addresses:
        commands.append(("ip", "addr", "add", address, "dev", dev))
    if not link.up:
        commands.append(("ip", "link", "set", "dev", dev, "up"))
    return commands, False


def _peers(config: OverlayConfig, peers: list[Peer], observed: Observed) -> list[Command]:
    dev = config.device
    routes = {str(p.subnet): Route(str(p.subnet), str(p.device_address), True) for p in peers}
    neighbours = {str(p.device_address): p.vtep_mac for p in peers}
    fdb = {(p.vtep_mac, str(p.underlay_ip)) for p in peers}

    commands: list[Command] = []
    for route in observed.routes:
        if route.dst not in routes:
            commands.append(("ip", "route", "del", route.dst, "dev", dev))
    for neighbour in observed.neighbours:
        if neighbour.dst not in neighbours:
            commands.append(("ip", "neigh", "del", neighbour.dst, "dev", dev))
    for entry in observed.fdb:
        if (entry.mac.lower(), entry.dst) not in fdb:
            where = ("dst", entry.dst) if entry.dst else ()
            commands.append(("bridge", "fdb", "del", entry.mac, "dev", dev, *where, "self"))

    have_routes = {route.dst: route for route in observed.routes}
    have_neighbours = {(n.dst, (n.lladdr or "").lower()) for n in observed.neighbours
                       if n.permanent}
    have_fdb = {(e.mac.lower(), e.dst) for e in observed.fdb if e.permanent}
    for peer in peers:
        subnet, via, mac = str(peer.subnet), str(peer.device_address), peer.vtep_mac
        if have_routes.get(subnet) != routes[subnet]:
            commands.append(("ip", "route", "replace", subnet, "via", via, "dev", dev,
                             "onlink"))
        if (via, mac) not in have_neighbours:
            commands.append(("ip", "neigh", "replace", via, "lladdr", mac, "dev", dev,
                             "nud", "permanent"))
        if (mac, str(peer.underlay_ip)) not in have_fdb:
            commands.append(("bridge", "fdb", "replace", mac, "dev", dev, "dst",
                             str(peer.underlay_ip), "self", "permanent"))
    return commands


def _chain(table: str, observed: Table, chain: str, rules: tuple[tuple[str, ...], ...],
           unmanaged: tuple[str, ...] | None = None) -> list[Command]:
    """Commands that make ``chain`` hold exactly ``rules`` (order among them does not matter:
    they never contradict each other), besides any ``unmanaged`` rule another step places."""
    have = observed.rules(chain)
    commands: list[Command] = []
    if have is None:
        commands.append(iptables(table, "-N", chain))
        have = ()
    seen: set[tuple[str, ...]] = set()
    for rule in have:
        if rule == unmanaged:
            continue
        if rule not in rules or rule in seen:
            commands.append(iptables(table, "-D", chain, *rule))
        seen.add(rule)
    commands += [iptables(table, "-A", chain, *rule) for rule in rules if rule not in have]
    return commands


def _policy(config: OverlayConfig, observed: Table) -> list[Command]:
    """Commands for CORRAL-POLICY and the one jump to it, first in CORRAL-FORWARD (both gone
    when the policy is open). Runs after CORRAL-FORWARD exists."""
    jump = policy_jump(config)
    at = [i for i, rule in enumerate(observed.rules(FORWARD_CHAIN) or ()) if rule == jump]
    unjump = [iptables("filter", "-D", FORWARD_CHAIN, *jump)]
    have = observed.rules(POLICY_CHAIN)
    if config.policy.open:
        commands = unjump * len(at)
        if have is not None:
            commands += [iptables("filter", "-F", POLICY_CHAIN),
                         iptables("filter", "-X", POLICY_CHAIN)]
        return commands
    rules = policy_rules(config)
    commands = []
    if have != rules:
        # Flushing first leaves the chain empty for a moment (it RETURNs everything); the
        # jump is inserted only once the chain is whole, for a chain that is new.
        commands.append(iptables("filter", "-N" if have is None else "-F", POLICY_CHAIN))
        commands += [iptables("filter", "-A", POLICY_CHAIN, *rule) for rule in rules]
    if at != [0]:
        commands += unjump * len(at)
        commands.append(iptables("filter", "-I", FORWARD_CHAIN, "1", *jump))
    return commands


def _jump(table: str, observed: Table, parent: str, chain: str) -> list[Command]:
    """Commands that leave one jump from ``parent`` to ``chain``, before any ``-j RETURN``
    (Docker ends DOCKER-USER with one). DOCKER-USER is made if Docker has not made it yet:
    Docker adopts an existing one."""
    have = observed.rules(parent)
    commands: list[Command] = []
    if have is None:
        commands.append(iptables(table, "-N", parent))
        have = ()
    jump = ("-j", chain)
    at = [i for i, rule in enumerate(have) if rule == jump]
    end = have.index(_RETURN) if _RETURN in have else len(have)
    if len(at) == 1 and at[0] < end:
        return commands
    commands += [iptables(table, "-D", parent, *jump)] * len(at)
    commands.append(iptables(table, "-I", parent, "1", *jump))
    return commands


def _resolver(config: OverlayConfig, observed: Observed, *, fresh_bridge: bool) -> list[Command]:
    """The command that puts the discovery DNS address on the bridge, unless it is there. A
    bridge (re)created by this plan (with the network) starts without it."""
    link = None if fresh_bridge else observed.link(config.bridge)
    if link is not None and RESOLVER in link.addresses:
        return []
    return [("ip", "addr", "add", RESOLVER, "dev", config.bridge)]


def _network(config: OverlayConfig, observed: Observed) -> list[Command]:
    options = network_options(config)
    network = observed.network
    if network is not None and (
            network.driver == "bridge"
            and network.subnets == ((str(config.subnet), str(config.gateway)),)
            and all(network.options.get(k) == v for k, v in options.items())):
        return []
    commands: list[Command] = []
    if network is not None:
        # Docker cannot change a network's subnet or options; it refuses while containers use it.
        commands.append(("docker", "network", "rm", config.network))
    opts = [word for key, value in options.items() for word in ("--opt", f"{key}={value}")]
    commands.append(("docker", "network", "create", "--driver", "bridge",
                     "--subnet", str(config.subnet), "--gateway", str(config.gateway),
                     *opts, "--label", NETWORK_LABEL, config.network))
    return commands
