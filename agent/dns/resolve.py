"""How the discovery responder answers one question from its table. Pure.

For a name, a record type and the address of the container asking:

1. the name is lowercased and its trailing dot dropped;
2. one of the asking container's link aliases answers as the name it stands for, also under
   its stack's zone or the zone itself (``<alias>.<stack>.rancher.internal``): resolvers expand
   a bare name with the search list, and Docker's embedded DNS relays no single-label name;
3. a name of the table answers as itself;
4. under ``rancher.internal`` nothing else exists: a name that is not in the table is NXDOMAIN
   (NOERROR when names exist below it, as DNS wants for such empty non-terminals), never
   forwarded. Elsewhere, ``<name>.<the client's stack>.rancher.internal`` (a bare service name,
   for a known client only) then ``<name>.rancher.internal`` (``service.stack``) answer for it;
5. everything else is not ours: the query is relayed to the host's resolvers as it is.

Decisions, where rancher-dns left a choice:

- a CNAME is followed inside the table, up to :data:`MAX_CHAIN` records (rancher-dns's limit;
  longer chains and loops are SERVFAIL). When the last target is not in the table, the chain is
  answered together with what the host's resolvers say about that target (:class:`Forward` with
  a ``target``): the stub resolvers of musl and glibc do not chase a lone CNAME themselves;
- a name with no addresses (a service with no healthy container), and any record type but A
  for a name of ours (AAAA above all), is NOERROR with no answer, as rancher-dns answered:
  NXDOMAIN would tell clients the name does not exist at all, and would be cached as such;
- A records are shuffled for every answer (rancher-dns shuffled the healthy addresses), so that
  clients that take the first spread over the containers;
- every record has a TTL of :data:`TTL`, and negative answers carry no SOA, so nothing is
  cached for long: a client sees a change within 2 s of the server sending it;
- before the first table arrives, names under ``rancher.internal`` are SERVFAIL (try again),
  not NXDOMAIN.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from shared.discovery import ZONE, DnsAnswer, DnsApply, DnsClient

TTL = 1
"""Seconds a client may cache an answer: one, so that answers follow changes within 2 s."""
MAX_CHAIN = 10
"""CNAME records one answer may hold (rancher-dns's limit)."""

Shuffle = Callable[[list[str]], None]


class Rcode(StrEnum):
    NOERROR = "NOERROR"
    NXDOMAIN = "NXDOMAIN"
    SERVFAIL = "SERVFAIL"


@dataclass(frozen=True)
class Record:
    """One answer record: ``name`` (lowercase, no trailing dot) has address or CNAME
    ``value``; ``kind`` is ``A`` or ``CNAME``."""

    name: str
    kind: str
    value: str


@dataclass(frozen=True)
class Answer:
    """Answered from the table (authoritatively)."""

    rcode: Rcode
    records: tuple[Record, ...] = ()


@dataclass(frozen=True)
class Forward:
    """Not ours: relay the query to the host's resolvers as it is. With a ``target``: a CNAME
    chain of ours (``records``) that leaves the table, to answer followed by what the host's
    resolvers answer for ``target``, asked with the question's type."""

    target: str | None = None
    records: tuple[Record, ...] = ()


Outcome = Answer | Forward
FORWARD = Forward()


@dataclass(frozen=True)
class Table:
    """A ``dns.apply`` indexed for lookups: built once per apply, then only read (the
    responder swaps whole tables, so a query never sees half of one)."""

    version: str | None = None   # None: no table has arrived yet
    names: Mapping[str, DnsAnswer] = field(default_factory=dict)
    clients: Mapping[str, DnsClient] = field(default_factory=dict)
    parents: frozenset[str] = frozenset()  # names under the zone with names below them

    @classmethod
    def of(cls, request: DnsApply) -> Table:
        parents: set[str] = set()
        for name in request.names:
            if in_zone(name):
                labels = name.split(".")
                parents.update(".".join(labels[i:]) for i in range(1, len(labels) - 1))
        return cls(request.version, request.names, request.clients, frozenset(parents))

    @property
    def loaded(self) -> bool:
        return self.version is not None


EMPTY = Table()


def in_zone(name: str) -> bool:
    """Whether ``name`` is ``rancher.internal`` or under it."""
    return name == ZONE or name.endswith("." + ZONE)


def normalize(name: str) -> str:
    return name.lower().removesuffix(".")


def resolve(table: Table, name: str, qtype: str, client: str,
            shuffle: Shuffle = random.shuffle) -> Outcome:
    """The outcome of a question for ``name`` of record type ``qtype`` (``A``, ``AAAA``,
    ``CNAME``, ``ANY``, ...), asked from address ``client``; see the module docstring."""
    name = normalize(name)
    ours = in_zone(name)
    if not table.loaded:
        return Answer(Rcode.SERVFAIL) if ours else FORWARD
    found = lookup(table, name, client)
    if found is None:
        if not ours:
            return FORWARD
        return Answer(Rcode.NOERROR if name in table.parents or name == ZONE
                      else Rcode.NXDOMAIN)
    return _follow(table, name, found, qtype, shuffle)


def lookup(table: Table, name: str, client: str) -> str | None:
    """The name of the table that answers for ``name`` (normalized) asked by ``client``."""
    asker = table.clients.get(client)
    if asker is not None:
        alias = _alias(asker, name)
        if alias is not None:
            return alias
    if name in table.names:
        return name
    if in_zone(name):
        return None
    if asker is not None and asker.stack is not None:
        bare = f"{name}.{asker.stack}.{ZONE}"
        if bare in table.names:
            return bare
    qualified = f"{name}.{ZONE}"
    return qualified if qualified in table.names else None


def _alias(asker: DnsClient, name: str) -> str | None:
    """The target of one of the asker's link aliases, asked bare or, as resolvers expand a
    bare name by the search list (and Docker's embedded DNS relays no single-label name),
    under the asker's stack zone or the zone itself."""
    if name in asker.aliases:
        return asker.aliases[name]
    for zone in ((f"{asker.stack}.{ZONE}",) if asker.stack else ()) + (ZONE,):
        bare = name.removesuffix("." + zone)
        if bare != name and bare in asker.aliases:
            return asker.aliases[bare]
    return None


def _follow(table: Table, owner: str, found: str, qtype: str, shuffle: Shuffle) -> Outcome:
    """The records of ``found`` under the name asked for (``owner``), CNAMEs followed."""
    records: list[Record] = []
    target = found
    while True:
        entry = table.names.get(target)
        if entry is None:  # a CNAME that leaves the table
            if in_zone(target):
                return Answer(Rcode.NXDOMAIN, tuple(records))
            if qtype == "CNAME":
                return Answer(Rcode.NOERROR, tuple(records))
            return Forward(target, tuple(records))
        if entry.cname is None:
            if qtype in ("A", "ANY"):
                addresses = list(entry.addresses)
                shuffle(addresses)
                records += [Record(owner, "A", address) for address in addresses]
            return Answer(Rcode.NOERROR, tuple(records))
        if len(records) == MAX_CHAIN:  # too long, or a loop
            return Answer(Rcode.SERVFAIL)
        records.append(Record(owner, "CNAME", entry.cname))
        if qtype == "CNAME":
            return Answer(Rcode.NOERROR, tuple(records))
        owner = target = entry.cname
