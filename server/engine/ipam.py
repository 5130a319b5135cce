"""Address leases of the managed network: one subnet per host from the environment's pool, one
address per container from its host's subnet, taken in store transactions.

A lease is a record of its own (type ``ipLease``) whose lookup key names the network and the
subnet or address; the store keeps lookup keys unique per type, so two transactions, of one
server process or of several on PostgreSQL, can never both hold the same one: the later insert
is a conflict, and the allocator takes the next free one. A released lease gives up its key.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from server.api.types import now_ms
from server.store import Condition, Conflict, NewRecord, Query, Record, Transaction
from server.store.interface import Reader
from server.store.paging import list_all

LEASE = "ipLease"
SUBNET, ADDRESS = "subnet", "address"


class PoolExhausted(Exception):
    """No subnet or address is left: the message says which pool, for the API's 422."""


@dataclass(frozen=True)
class Pool:
    """A network's address pool, cut into one subnet of ``prefix`` per host."""

    network_id: int
    cidr: IPv4Network
    prefix: int

    @property
    def capacity(self) -> int:
        """How many per-host subnets the pool holds."""
        return int(2 ** (self.prefix - self.cidr.prefixlen))

    def subnet_at(self, index: int) -> IPv4Network:
        """The pool's ``index``-th per-host subnet."""
        size = 2 ** (32 - self.prefix)
        return IPv4Network((int(self.cidr.network_address) + index * size, self.prefix))

    @classmethod
    def parse(cls, network_id: int, cidr: str, prefix: int) -> Pool:
        """A pool from user input; ValueError says what is wrong with it."""
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a network in CIDR form: {exc}") from None
        if not isinstance(network, IPv4Network):
            raise ValueError(f"{cidr} is not an IPv4 network")
        if not network.prefixlen <= prefix <= 30:
            raise ValueError(f"the per-host prefix /{prefix} must lie between the pool's "
                             f"/{network.prefixlen} and /30")
        return cls(network_id, network, prefix)


def lease_key(network_id: int, what: IPv4Network | IPv4Address) -> str:
    return f"{network_id}:{what}"


def host_addresses(subnet: IPv4Network) -> Iterator[IPv4Address]:
    """The addresses a subnet gives containers: not the network address (the host's VXLAN
    device), nor the first one (its bridge's gateway), nor the broadcast address."""
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    return (IPv4Address(value) for value in range(first, last + 1))


async def _taken(tx: Transaction, network_id: int, kind: str) -> set[str]:
    leases = await list_all(tx, Query(types=[LEASE], conditions=[
        Condition("lookup_key", "prefix", f"{network_id}:"), Condition("kind", "eq", kind)]))
    return {r.lookup_key for r in leases if r.lookup_key is not None}


async def _take(tx: Transaction, network_id: int, kind: str, candidates: Iterator[str],
                data: dict[str, int], project_id: int | None, exhausted: str,
                taken: set[str] | None = None) -> Record:
    if taken is None:
        taken = await _taken(tx, network_id, kind)
    for value in candidates:
        key = f"{network_id}:{value}"
        if key in taken:
            continue
        try:
            return await tx.create(NewRecord(type=LEASE, kind=kind, state="active", name=value,
                                             project_id=project_id, lookup_key=key,
                                             data={"networkId": network_id, **data}))
        except Conflict:  # a concurrent transaction took it first: the next one, then
            continue
    raise PoolExhausted(exhausted)


async def lease_subnet(tx: Transaction, pool: Pool, host_id: int,
                       project_id: int | None = None) -> IPv4Network:
    """The host's subnet of the pool: the one it holds, else a free one (the first, while
    subnets are given out in order and seldom given back)."""
    held = await host_subnet(tx, pool.network_id, host_id)
    if held is not None:
        return held
    data = {"networkId": pool.network_id, "hostId": host_id}
    index = await _probably_free(tx, pool)
    if index is not None:
        subnet = pool.subnet_at(index)
        with contextlib.suppress(Conflict):  # taken meanwhile: look at every one, then
            await tx.create(NewRecord(type=LEASE, kind=SUBNET, state="active",
                                      name=str(subnet), project_id=project_id,
                                      lookup_key=lease_key(pool.network_id, subnet),
                                      data=data))
            return subnet
    candidates = (str(s) for s in pool.cidr.subnets(new_prefix=pool.prefix))
    lease = await _take(tx, pool.network_id, SUBNET, candidates, {"hostId": host_id},
                        project_id, f"the pool {pool.cidr} has no free /{pool.prefix} left")
    return IPv4Network(lease.name)


async def _probably_free(tx: Transaction, pool: Pool) -> int | None:
    """The index of a free subnet, found in O(log n) lookups of lease keys (never a read of
    every lease, which would make registering n hosts cost n^2): subnets are leased lowest
    first, so the taken ones are mostly a prefix of the pool; gallop to a free index, then
    bisect back to the lowest one before it. None when every index looked at is taken (the
    caller then reads them all, to find a hole or to say the pool is full)."""

    async def free(index: int) -> bool:
        key = lease_key(pool.network_id, pool.subnet_at(index))
        return await tx.get_by_lookup(LEASE, key) is None

    if await free(0):
        return 0
    taken, step, last = 0, 1, pool.capacity - 1
    while True:
        probe = min(step, last)
        if await free(probe):
            break
        if probe == last:
            return None
        taken, step = probe, step * 2
    while probe - taken > 1:
        middle = (taken + probe) // 2
        if await free(middle):
            probe = middle
        else:
            taken = middle
    return probe


async def host_subnets(reader: Reader, network_id: int) -> dict[int, IPv4Network]:
    """Every host's subnet of the network, by host id."""
    leases = await list_all(reader, Query(types=[LEASE], conditions=[
        Condition("lookup_key", "prefix", f"{network_id}:"), Condition("kind", "eq", SUBNET)]))
    return {lease.data["hostId"]: IPv4Network(lease.name) for lease in leases
            if isinstance(lease.data.get("hostId"), int) and lease.name
            and lease.lookup_key is not None}


async def host_subnet(tx: Transaction, network_id: int, host_id: int) -> IPv4Network | None:
    for lease in await _leases_of_host(tx, host_id, SUBNET):
        if lease.data.get("networkId") == network_id and lease.name:
            return IPv4Network(lease.name)
    return None


async def lease_address(tx: Transaction, network_id: int, subnet: IPv4Network, host_id: int,
                        instance_id: int, project_id: int | None = None) -> IPv4Address:
    """An address of the host's subnet for the container: the one it holds, or the first
    free one."""
    held = await _leases_of_host(tx, host_id, ADDRESS)
    for lease in held:
        if lease.data.get("instanceId") == instance_id and lease.name:
            return IPv4Address(lease.name)
    # The subnet is the host's alone, so its addresses are leased to the host's containers
    # only: reading those (not the whole network's) keeps a lease's cost independent of the
    # environment's size. A stray lease of the subnet held otherwise is a conflict, skipped.
    taken = {lease.lookup_key for lease in held if lease.lookup_key is not None}
    candidates = (str(a) for a in host_addresses(subnet))
    lease = await _take(tx, network_id, ADDRESS, candidates,
                        {"hostId": host_id, "instanceId": instance_id}, project_id,
                        f"the subnet {subnet} has no free address left", taken)
    assert lease.name is not None
    return IPv4Address(lease.name)


async def claim_address(tx: Transaction, network_id: int, address: IPv4Address, host_id: int,
                        instance_id: int, project_id: int | None = None) -> bool:
    """Lease ``address`` to a container that already has it (one started outside Corral on
    the host's managed network), so that it is never handed to another; False if it is
    leased already."""
    try:
        await tx.create(NewRecord(type=LEASE, kind=ADDRESS, state="active", name=str(address),
                                  project_id=project_id, lookup_key=lease_key(network_id,
                                                                              address),
                                  data={"networkId": network_id, "hostId": host_id,
                                        "instanceId": instance_id}))
    except Conflict:
        return False
    return True


async def release_instance(tx: Transaction, host_id: int, instance_id: int) -> int:
    """Give up the container's addresses; how many there were."""
    leases = [lease for lease in await _leases_of_host(tx, host_id, ADDRESS)
              if lease.data.get("instanceId") == instance_id]
    for lease in leases:
        await _release(tx, lease)
    return len(leases)


async def address_leases(reader: Reader, network_id: int) -> list[Record]:
    """Every container address the network has leased."""
    return await list_all(reader, Query(types=[LEASE], conditions=[
        Condition("lookup_key", "prefix", f"{network_id}:"), Condition("kind", "eq", ADDRESS)]))


async def release_lease(tx: Transaction, lease_id: int) -> bool:
    """Give up one lease (if it is still held)."""
    lease = await tx.get(lease_id)
    if lease is None or lease.lookup_key is None:
        return False
    await _release(tx, lease)
    return True


async def release_host(tx: Transaction, host_id: int) -> int:
    """Give up everything the host holds (a purged host): its subnets and the addresses in
    them; how many leases that was."""
    leases = [*await _leases_of_host(tx, host_id, SUBNET),
              *await _leases_of_host(tx, host_id, ADDRESS)]
    for lease in leases:
        await _release(tx, lease)
    return len(leases)


async def _leases_of_host(tx: Transaction, host_id: int, kind: str) -> list[Record]:
    # Paged: a host's subnet may hold more than a page of addresses.
    return await list_all(tx, Query(types=[LEASE], conditions=[
        Condition("hostId", "eq", host_id, "int"), Condition("kind", "eq", kind),
        Condition("removed", "null")]))


async def _release(tx: Transaction, lease: Record) -> None:
    # The lookup key goes, so the subnet or address can be leased again.
    await tx.update(lease.id, {"state": "removed", "removed": now_ms(), "lookup_key": None})
