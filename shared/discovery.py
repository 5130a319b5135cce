"""The payload of ``dns.apply``: the service discovery table a host's DNS responder answers
from (Rancher's rancher-dns). Pure.

The server sends it to every agent whenever a name, an address or a link it holds changes,
and to each agent when it connects. It is the whole desired state, never a delta: an agent that
missed one applies the next, and answers with the version it now serves.

- ``names``: every fully qualified name the environment defines (``web.shop.rancher.internal``),
  lowercase and without the trailing dot, each answered with addresses (A records; none for a
  service without a healthy container) or with a CNAME (an external service or an alias);
- ``clients``: the containers that ask, by their managed address (the source address of their
  queries): their stack, for bare service names, and their link aliases, each naming a key of
  ``names``.

The limits keep a broken or hostile server from making an agent build a table it cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Self, TypeVar

from shared.fields import Applied, Fields, JsonObject, Refuse, invalid_data

T = TypeVar("T")

RESOLVER_ADDRESS = "169.254.169.250"
"""Where containers on the managed network send their queries (Rancher's address)."""
ZONE = "rancher.internal"
"""The zone the responder is authoritative for: names under it are never forwarded."""

MAX_NAMES = 100_000
MAX_CLIENTS = 65_536
MAX_ADDRESSES = 4_096     # per name: far more than one reply can carry
MAX_ALIASES = 1_024       # per client
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")


def check_name(text: str) -> str | None:
    """Why ``text`` is not a DNS name as the table spells it (lowercase, no trailing dot),
    or None when it is one."""
    if not text or len(text) > MAX_NAME_LENGTH:
        return f"a DNS name of 1 to {MAX_NAME_LENGTH} characters"
    for label in text.split("."):
        if len(label) > MAX_LABEL_LENGTH:
            return f"a DNS name whose labels have at most {MAX_LABEL_LENGTH} characters"
        if not _LABEL.fullmatch(label):
            return "a lowercase DNS name without a trailing dot (letters, digits, '-', '_')"
    return None


def _name(f: Fields, where: str, text: str) -> str:
    problem = check_name(text)
    if problem is not None:
        raise f.refuse(f"{where} must be {problem}, not {text[:80]!r}")
    return text


def _ipv4(f: Fields, where: str, text: object) -> str:
    try:
        if isinstance(text, str) and str(IPv4Address(text)) == text:
            return text
    except ValueError:
        pass
    raise f.refuse(f"{where} must be an IPv4 address like 10.42.0.5")


def _object_map(f: Fields, key: str, limit: int, check_key: Callable[[str, str], str],
                read: Callable[[Fields], T]) -> dict[str, T]:
    """A JSON object of objects (missing or null: empty), each key checked by ``check_key``
    (given where it sits and the key) and each value read by ``read``."""
    value = f.obj.get(key)
    where = f"{f.where}.{key}"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise f.refuse(f"{where} must be a JSON object")
    if len(value) > limit:
        raise f.refuse(f"{where} must have at most {limit} entries, not {len(value)}")
    return {check_key(where, k): read(Fields(v, f"{where}[{k!r}]", f.refuse))
            for k, v in value.items()}


@dataclass(frozen=True)
class DnsAnswer:
    """What a name answers: its addresses (possibly none), or a CNAME to another name."""

    addresses: tuple[str, ...] = ()
    cname: str | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        has_addresses, has_cname = f.has("addresses"), f.has("cname")
        if has_addresses == has_cname:
            raise f.refuse(f"{f.where} must have exactly one of addresses and cname")
        if has_cname:
            return cls(cname=_name(f, f"{f.where}.cname", f.text("cname")))
        addresses = f.texts("addresses")
        if len(addresses) > MAX_ADDRESSES:
            raise f.refuse(f"{f.where}.addresses must have at most {MAX_ADDRESSES} entries")
        return cls(addresses=tuple(_ipv4(f, f"{f.where}.addresses[{i}]", a)
                                   for i, a in enumerate(addresses)))

    def dump(self) -> JsonObject:
        if self.cname is not None:
            return {"cname": self.cname}
        return {"addresses": list(self.addresses)}


@dataclass(frozen=True)
class DnsClient:
    """A container that asks: its stack (None: in none) and its link aliases, each naming the
    fully qualified name in ``DnsApply.names`` it stands for."""

    stack: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, f: Fields) -> Self:
        stack = f.opt_text("stack")
        if stack is not None:
            _name(f, f"{f.where}.stack", stack)
        aliases = f.text_map("aliases")
        if len(aliases) > MAX_ALIASES:
            raise f.refuse(f"{f.where}.aliases must have at most {MAX_ALIASES} entries")
        return cls(stack, {_name(f, f"{f.where}.aliases", alias):
                           _name(f, f"{f.where}.aliases[{alias!r}]", target)
                           for alias, target in aliases.items()})

    def dump(self) -> JsonObject:
        return {"stack": self.stack, "aliases": dict(self.aliases)}


@dataclass(frozen=True)
class DnsApply:
    """``dns.apply``: the whole discovery table; ``version`` names it (a digest), so that logs
    and the reply say which one a host serves."""

    version: str
    names: Mapping[str, DnsAnswer] = field(default_factory=dict)
    clients: Mapping[str, DnsClient] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str = "data", refuse: Refuse = invalid_data) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        version = f.text("version")
        names = _object_map(f, "names", MAX_NAMES, lambda w, k: _name(f, f"{w} key", k),
                            DnsAnswer.read)
        clients = _object_map(f, "clients", MAX_CLIENTS, lambda w, k: _ipv4(f, f"{w} key", k),
                              DnsClient.read)
        for ip, client in clients.items():
            for alias, target in client.aliases.items():
                if target not in names:
                    raise f.refuse(f"{f.where}.clients[{ip!r}].aliases[{alias!r}] must name "
                                   f"one of names, not {target!r}")
        return cls(version, names, clients)

    def dump(self) -> JsonObject:
        return {"version": self.version,
                "names": {name: answer.dump() for name, answer in self.names.items()},
                "clients": {ip: client.dump() for ip, client in self.clients.items()}}


@dataclass(frozen=True)
class DnsApplied(Applied):
    """The reply of ``dns.apply``: the version the host's responder now answers from."""
