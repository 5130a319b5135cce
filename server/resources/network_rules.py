"""The pure rules of networks: subnets as Rancher reads them, policy rules, the VXLAN driver's
options, and overlaps between the address ranges of an environment's networks.

Every check raises the API's 422 with Rancher's code and the field it is about; nothing here
reads the store, so the network types call these with what they have read.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from server.api.errors import ValidationError, invalid
from server.engine.ipam import Pool
from server.engine.network_policy import parse_port, parse_selector

# Rancher's subnet schema: ``cidrSize`` between 8 and 28, 24 when not given.
CIDR_MIN, CIDR_MAX, CIDR_DEFAULT = 8, 28, 24
_SUBNET_KEYS = frozenset({"name", "description", "networkAddress", "cidrSize", "gateway",
                          "startAddress", "endAddress"})
_RULE_KEYS = frozenset({"action", "within", "between", "from", "to", "ports"})
POLICY_ACTIONS = ("allow", "deny")
POLICY_WITHIN = ("stack", "service", "linked")


def parse_subnet(raw: Any, field: str = "subnets") -> dict[str, Any]:
    """One subnet as Rancher's ``subnet.create`` reads it: ``networkAddress`` alone or with a
    ``/size`` (which wins over ``cidrSize``); gateway, first and last address default to the
    first, second and last-but-one addresses of the range."""
    if not isinstance(raw, dict):
        raise invalid("InvalidFormat", field, f"each of {field} must be an object such as "
                      '{"networkAddress": "10.43.0.0", "cidrSize": 16}')
    unknown = set(raw) - _SUBNET_KEYS
    if unknown:
        raise invalid("InvalidOption", field, f"a subnet has no field {sorted(unknown)[0]!r}")
    address = raw.get("networkAddress")
    if not isinstance(address, str) or not address:
        raise invalid("MissingRequired", field, "a subnet needs its networkAddress")
    address, _, size_text = address.partition("/")
    size = raw.get("cidrSize", CIDR_DEFAULT) if not size_text else _int(size_text, field)
    if isinstance(size, bool) or not isinstance(size, int):
        raise invalid("InvalidFormat", field, "a subnet's cidrSize must be an integer")
    if size < CIDR_MIN:
        raise invalid("MinLimitExceeded", field, f"a subnet's cidrSize is at least {CIDR_MIN}")
    if size > CIDR_MAX:
        raise invalid("MaxLimitExceeded", field, f"a subnet's cidrSize is at most {CIDR_MAX}")
    network = _network(f"{address}/{size}", field)
    first, last = int(network.network_address), int(network.broadcast_address)
    out = {"networkAddress": str(network.network_address), "cidrSize": size,
           "gateway": _address_in(network, raw.get("gateway"), first + 1, field, "gateway"),
           "startAddress": _address_in(network, raw.get("startAddress"), first + 2, field,
                                       "startAddress"),
           "endAddress": _address_in(network, raw.get("endAddress"), last - 1, field,
                                     "endAddress")}
    if IPv4Address(out["startAddress"]) > IPv4Address(out["endAddress"]):
        raise invalid("InvalidOption", field, f"the startAddress {out['startAddress']} of "
                      f"{network} comes after its endAddress {out['endAddress']}")
    for key in ("name", "description"):
        if raw.get(key) is not None:
            out[key] = str(raw[key])
    return out


def subnet_network(subnet: Mapping[str, Any]) -> IPv4Network:
    """The range a stored subnet covers."""
    return IPv4Network(f"{subnet['networkAddress']}/{subnet['cidrSize']}")


def _int(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise invalid("InvalidFormat", field, f"{text!r} is not a prefix size") from None


def _network(cidr: str, field: str) -> IPv4Network:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise invalid("InvalidFormat", field, f"{cidr!r} is not a network in CIDR form "
                      f"({exc})") from None
    if not isinstance(network, IPv4Network):
        raise invalid("InvalidFormat", field, f"{cidr} is not an IPv4 network")
    return network


def _address_in(network: IPv4Network, given: Any, default: int, field: str, key: str) -> str:
    if given is None:
        return str(IPv4Address(default))
    try:
        address = IPv4Address(given)
    except ValueError:
        raise invalid("InvalidFormat", field, f"the {key} {given!r} is not an IPv4 "
                      "address") from None
    if address not in network:
        raise invalid("InvalidOption", field, f"the {key} {address} is outside {network}")
    return str(address)


@dataclass(frozen=True)
class Range:
    """An address range an environment's network holds, named for the error message."""

    network: IPv4Network
    owner: str


def check_no_overlap(new: Iterable[IPv4Network], taken: Iterable[Range], field: str) -> None:
    """``new`` ranges overlap neither each other nor any of ``taken`` (422 InvalidOption)."""
    seen = list(taken)
    for network in new:
        for other in seen:
            if network.overlaps(other.network):
                raise invalid("InvalidOption", field, f"{network} overlaps {other.network} "
                              f"of {other.owner}")
        seen.append(Range(network, f"another of the given {field}"))


def parse_policy(raw: list[Any] | None) -> list[dict[str, Any]] | None:
    """Rancher's policy rules, each an object or that object as JSON text (Rancher's own
    tests send the text)."""
    if raw is None:
        return None
    return [_rule(item) for item in raw]


def _rule(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except ValueError:
            raise invalid("InvalidFormat", "policy", "a policy rule must be an object such "
                          'as {"within": "stack", "action": "allow"}') from None
    if not isinstance(item, dict):
        raise invalid("InvalidFormat", "policy", "a policy rule must be an object")
    unknown = set(item) - _RULE_KEYS
    if unknown:
        raise invalid("InvalidOption", "policy",
                      f"a policy rule has no field {sorted(unknown)[0]!r}")
    rule: dict[str, Any] = {}
    for key, options in (("action", POLICY_ACTIONS), ("within", POLICY_WITHIN)):
        if item.get(key) is not None:
            if item[key] not in options:
                raise invalid("InvalidOption", "policy", f"a policy rule's {key} must be one "
                              f"of {', '.join(options)}")
            rule[key] = item[key]
    if "action" not in rule:
        raise invalid("MissingRequired", "policy", "a policy rule needs its action "
                      "(allow or deny)")
    for key, parts in (("between", ("groupBy", "selector")), ("from", ("selector",)),
                       ("to", ("selector",))):
        if item.get(key) is not None:
            rule[key] = _member(item[key], key, parts)
    if item.get("ports") is not None:
        ports = item["ports"]
        if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
            raise invalid("InvalidFormat", "policy", "a policy rule's ports are a list of "
                          "strings such as 80/tcp")
        for port in ports:
            try:
                parse_port(port)
            except ValueError as exc:
                raise invalid("InvalidFormat", "policy", f"a policy rule's port {exc}") from None
        rule["ports"] = ports
    return rule


def _member(value: Any, key: str, parts: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) - set(parts) or \
            not all(isinstance(v, str) for v in value.values()):
        raise invalid("InvalidFormat", "policy", f"a policy rule's {key} is an object of "
                      f"{' and '.join(parts)} strings")
    if value.get("selector"):
        try:
            parse_selector(value["selector"])
        except ValueError as exc:
            raise invalid("InvalidFormat", "policy", f"a policy rule's {key}: {exc}") from None
    return dict(value)


# The VXLAN driver's options, kept in Rancher's ``networkMetadata`` map, and their limits.
VXLAN_LIMITS: Mapping[str, tuple[int, int]] = {
    "mtu": (576, 9000),  # as the agent's overlay (agent/network/config.py) takes it
    "vni": (1, 2 ** 24 - 1),
    "port": (1, 65535),
}
VXLAN_DEFAULTS: Mapping[str, Any] = {"subnetPool": "10.42.0.0/16", "hostSubnetPrefix": 24,
                                     "mtu": 1450, "vni": 42, "port": 4789}


def parse_vxlan_options(current: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's options after a change: given keys over the current ones, each checked.
    The pool and per-host prefix are checked as the address allocator reads them."""
    field = "networkMetadata"
    unknown = set(given) - set(VXLAN_DEFAULTS)
    if unknown:
        raise invalid("InvalidOption", field, f"the vxlan driver has no option "
                      f"{sorted(unknown)[0]!r}; it has {', '.join(VXLAN_DEFAULTS)}")
    options = {**VXLAN_DEFAULTS, **current, **given}
    for key, (low, high) in {**VXLAN_LIMITS, "hostSubnetPrefix": (0, 32)}.items():
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid("InvalidFormat", field, f"the vxlan option {key} must be an integer")
        if not low <= value <= high:
            raise invalid("InvalidOption", field, f"the vxlan option {key} must lie between "
                          f"{low} and {high}")
    if not isinstance(options["subnetPool"], str):
        raise invalid("InvalidFormat", field, "the vxlan option subnetPool must be a network "
                      "in CIDR form, such as 10.42.0.0/16")
    pool = pool_error(options["subnetPool"], options["hostSubnetPrefix"])
    if pool is not None:
        raise pool
    return options


def pool_error(cidr: str, prefix: int) -> ValidationError | None:
    """Why ``cidr`` cut into ``/prefix`` per host is no pool, as a 422; None when it is one."""
    try:
        Pool.parse(0, cidr, prefix)
    except ValueError as exc:
        code = "InvalidFormat" if "CIDR" in str(exc) or "IPv4" in str(exc) else "InvalidOption"
        return invalid(code, "networkMetadata", f"subnetPool: {exc}")
    return None


def pool_subnet(options: Mapping[str, Any]) -> dict[str, Any]:
    """The managed network's one subnet: the whole pool."""
    return parse_subnet({"networkAddress": options["subnetPool"]}, "networkMetadata")
