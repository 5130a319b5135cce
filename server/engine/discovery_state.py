"""The discovery table of an environment (pure): what each host's DNS responder answers.

Names, as Rancher's: ``<service>.<stack>.rancher.internal`` for every service (its containers
answer, also as ``<service>.<stack>`` and, from within the stack, ``<service>``), a sidekick as
``<sidekick>.<service>.<stack>.rancher.internal``, and every container by its name,
``<container>.rancher.internal``. A service answers with the managed addresses of its
containers that may take traffic: running, not draining (an upgrade or rollback is about to
stop them) and, when they have a health check, healthy. A service alias (``dnsService``)
answers with its targets' addresses; an external service with its addresses, or a CNAME to its
hostname. Each client (a container, by its managed address) has its stack, for bare names,
and its service's link aliases.

One ``names`` map is shared by every host's payload (its clients are the host's own
containers), so memory grows with the environment, not with hosts times services.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from server.store import Record
from shared.discovery import ZONE, DnsAnswer, DnsApply, DnsClient, check_name


@dataclass(frozen=True)
class Table:
    names: dict[str, DnsAnswer]
    clients: dict[str, tuple[int, DnsClient]]   # address → (host id, client)


def _label(text: str | None) -> str | None:
    if not text:
        return None
    lowered = text.lower()
    return lowered if check_name(lowered) is None and "." not in lowered else None


def takes_traffic(container: Record) -> bool:
    if container.state != "running" or container.removed is not None or \
            container.data.get("draining"):
        return False
    checked = bool((container.data.get("healthCheck") or {}).get("port"))
    return not checked or container.data.get("healthState") == "healthy"


def address_of(container: Record) -> str | None:
    address = container.data.get("primaryIpAddress")
    if address is None:
        address = (container.data.get("spec") or {}).get("ipAddress")
    return address if isinstance(address, str) and address else None


def service_fqdn(service: str, stack: str) -> str:
    return f"{service}.{stack}.{ZONE}"


def build_table(stacks: Iterable[Record], services: Iterable[Record],
                containers: Iterable[Record]) -> Table:
    stack_names = {s.id: name for s in stacks if (name := _label(s.name)) is not None}
    fqdns: dict[int, str] = {}
    services = list(services)
    for service in services:
        stack_id = service.data.get("stackId")
        stack = stack_names.get(stack_id) if isinstance(stack_id, int) else None
        name = _label(service.name)
        if stack is not None and name is not None:
            fqdns[service.id] = service_fqdn(name, stack)
    by_service: dict[int, list[str]] = {sid: [] for sid in fqdns}
    sidekicks: dict[str, list[str]] = {}
    names: dict[str, DnsAnswer] = {}
    clients: dict[str, tuple[int, DnsClient]] = {}
    service_records = {s.id: s for s in services}
    for container in containers:
        address = address_of(container)
        if address is None or container.removed is not None:
            continue
        service_id = container.data.get("serviceId")
        own = _label(container.name)
        if own is not None and takes_traffic(container):
            names[f"{own}.{ZONE}"] = DnsAnswer(addresses=(address,))
        host_id = container.data.get("hostId")
        fqdn = fqdns.get(service_id) if isinstance(service_id, int) else None
        if isinstance(service_id, int) and fqdn is not None and takes_traffic(container):
            sidekick = _label(container.data.get("launchConfigName"))
            if sidekick is None:
                by_service[service_id].append(address)
            else:
                sidekicks.setdefault(f"{sidekick}.{fqdn}", []).append(address)
        if isinstance(host_id, int):
            owner = service_records.get(service_id) if isinstance(service_id, int) else None
            stack_id = owner.data.get("stackId") if owner is not None else None
            clients[address] = (host_id, DnsClient(
                stack=stack_names.get(stack_id) if isinstance(stack_id, int) else None,
                aliases=_aliases(owner, fqdns)))
    for service_id, fqdn in fqdns.items():
        service = service_records[service_id]
        names[fqdn] = _answer(service, fqdns, by_service, service_records)
    for name, addresses in sidekicks.items():
        names[name] = DnsAnswer(addresses=tuple(sorted(addresses)))
    for address, (host_id, client) in clients.items():
        # An alias must name an entry of the table; one whose target has none is dropped.
        clients[address] = (host_id, DnsClient(client.stack, {
            a: t for a, t in client.aliases.items() if t in names}))
    return Table(names, clients)


def _aliases(service: Record | None, fqdns: Mapping[int, str]) -> dict[str, str]:
    if service is None:
        return {}
    out: dict[str, str] = {}
    for alias, target in (service.data.get("linkedServices") or {}).items():
        name = _label(alias)
        if name is not None and isinstance(target, int) and target in fqdns:
            out[name] = fqdns[target]
    return out


def _answer(service: Record, fqdns: Mapping[int, str], by_service: Mapping[int, list[str]],
            records: Mapping[int, Record], depth: int = 0) -> DnsAnswer:
    if service.type == "externalService":
        hostname = service.data.get("hostname")
        if hostname:
            return DnsAnswer(cname=str(hostname).lower().rstrip("."))
        return DnsAnswer(addresses=tuple(service.data.get("externalIpAddresses") or ()))
    if service.type == "dnsService":
        addresses: set[str] = set()
        cnames: list[str] = []
        for target_id in (service.data.get("linkedServices") or {}).values():
            target = records.get(target_id)
            if target is None or depth > 10 or target.id == service.id:
                continue
            answer = _answer(target, fqdns, by_service, records, depth + 1)
            addresses.update(answer.addresses)
            if answer.cname:
                cnames.append(answer.cname)
        if not addresses and len(cnames) == 1:
            return DnsAnswer(cname=cnames[0])
        return DnsAnswer(addresses=tuple(sorted(addresses)))
    return DnsAnswer(addresses=tuple(sorted(by_service.get(service.id, ()))))


def payloads(table: Table, host_ids: Iterable[int]) -> dict[int, DnsApply]:
    """Each host's ``dns.apply``: the shared names, its own containers as clients."""
    names_digest = hashlib.sha256(json.dumps(
        {n: a.dump() for n, a in sorted(table.names.items())}, sort_keys=True).encode())
    per_host: dict[int, dict[str, DnsClient]] = {h: {} for h in host_ids}
    for address, (host_id, client) in table.clients.items():
        if host_id in per_host:
            per_host[host_id][address] = client
    out: dict[int, DnsApply] = {}
    for host_id, clients in per_host.items():
        digest = names_digest.copy()
        digest.update(json.dumps({a: c.dump() for a, c in sorted(clients.items())},
                                 sort_keys=True).encode())
        out[host_id] = DnsApply(version=digest.hexdigest()[:16], names=table.names,
                                clients=clients)
    return out
