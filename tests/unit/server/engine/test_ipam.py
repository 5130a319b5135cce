"""Leases of the managed network: a subnet per host and an address per container, never the
same one twice, also when transactions race; released ones can be leased again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from server.engine import ipam
from server.engine.ipam import Pool, PoolExhausted
from server.store import Transaction
from server.store.interface import StoreUnavailable
from server.store.sql import SqlStore, sqlite_url

NET = 7


@pytest.fixture
async def store(tmp_path: Path, database: str | None) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(database or sqlite_url(tmp_path))
    try:
        yield opened
    finally:
        await opened.close()


def pool(cidr: str = "10.42.0.0/16", prefix: int = 24) -> Pool:
    return Pool.parse(NET, cidr, prefix)


async def subnet_of(store: SqlStore, host_id: int, the_pool: Pool | None = None) -> IPv4Network:
    async def work(tx: Transaction) -> IPv4Network:
        return await ipam.lease_subnet(tx, the_pool or pool(), host_id)

    return await store.transact(work)


async def address_of(store: SqlStore, subnet: IPv4Network, host_id: int,
                     instance_id: int) -> IPv4Address:
    async def work(tx: Transaction) -> IPv4Address:
        return await ipam.lease_address(tx, NET, subnet, host_id, instance_id)

    return await store.transact(work)


@pytest.mark.parametrize(("cidr", "prefix", "message"), [
    ("10.42.0.0/33", 24, "not a network in CIDR form"),
    ("10.42.0.1/16", 24, "not a network in CIDR form"),  # host bits set
    ("fd00::/64", 80, "not an IPv4 network"),
    ("10.42.0.0/16", 8, "between the pool's /16 and /30"),
    ("10.42.0.0/16", 31, "between the pool's /16 and /30"),
])
def test_a_bad_pool_says_what_is_wrong(cidr: str, prefix: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pool.parse(NET, cidr, prefix)


def test_a_subnet_gives_containers_neither_its_network_gateway_nor_broadcast() -> None:
    addresses = list(ipam.host_addresses(IPv4Network("10.42.3.0/29")))
    assert [str(a) for a in addresses] == ["10.42.3.2", "10.42.3.3", "10.42.3.4",
                                           "10.42.3.5", "10.42.3.6"]


async def test_hosts_get_distinct_subnets_and_keep_theirs(store: SqlStore) -> None:
    first, second = await subnet_of(store, 1), await subnet_of(store, 2)
    assert (str(first), str(second)) == ("10.42.0.0/24", "10.42.1.0/24")
    assert await subnet_of(store, 1) == first  # asked again: the one it holds


async def test_a_purged_hosts_subnet_and_addresses_are_leased_again(store: SqlStore) -> None:
    subnet = await subnet_of(store, 1)
    await address_of(store, subnet, 1, 100)

    async def purge(tx: Transaction) -> int:
        return await ipam.release_host(tx, 1)

    assert await store.transact(purge) == 2
    assert await subnet_of(store, 2) == subnet
    assert await address_of(store, subnet, 2, 200) == IPv4Address("10.42.0.2")


async def test_a_subnet_given_back_is_found_again_wherever_it_lies(store: SqlStore) -> None:
    """Subnets are looked for by probing a few keys (taken ones are mostly a prefix of the
    pool); a hole the probes miss is still found, by reading every lease."""
    eight = pool("10.42.0.0/21", 24)
    got = [str(await subnet_of(store, host, eight)) for host in range(1, 9)]
    assert got == [f"10.42.{i}.0/24" for i in range(8)]

    for host in (2, 6):  # 10.42.1.0 (probed) and 10.42.5.0 (between the probes)
        await store.transact(partial(ipam.release_host, host_id=host))
    assert str(await subnet_of(store, 20, eight)) == "10.42.1.0/24"
    assert str(await subnet_of(store, 21, eight)) == "10.42.5.0/24"
    with pytest.raises(ipam.PoolExhausted):
        await subnet_of(store, 22, eight)


async def test_containers_get_distinct_addresses_and_a_released_one_comes_back(
        store: SqlStore) -> None:
    subnet = await subnet_of(store, 1)
    got = [await address_of(store, subnet, 1, n) for n in (10, 11, 12)]
    assert [str(a) for a in got] == ["10.42.0.2", "10.42.0.3", "10.42.0.4"]
    assert await address_of(store, subnet, 1, 11) == got[1]  # the one it holds

    async def release(tx: Transaction) -> int:
        return await ipam.release_instance(tx, 1, 11)

    assert await store.transact(release) == 1
    assert await address_of(store, subnet, 1, 13) == got[1]


async def test_an_exhausted_pool_names_itself(store: SqlStore) -> None:
    small = pool("10.42.0.0/23", 24)
    await subnet_of(store, 1, small)
    await subnet_of(store, 2, small)
    with pytest.raises(PoolExhausted, match=r"10\.42\.0\.0/23 has no free /24"):
        await subnet_of(store, 3, small)
    subnet = IPv4Network("10.42.9.0/30")  # one address for containers
    await address_of(store, subnet, 1, 1)
    with pytest.raises(PoolExhausted, match=r"10\.42\.9\.0/30 has no free address"):
        await address_of(store, subnet, 1, 2)


async def test_concurrent_registrations_never_share_a_subnet(store: SqlStore) -> None:
    got = await asyncio.gather(*(subnet_of(store, host) for host in range(1, 41)))
    assert len(set(got)) == 40


async def test_concurrent_creates_never_share_an_address(store: SqlStore) -> None:
    subnet = await subnet_of(store, 1)
    got = await asyncio.gather(*(address_of(store, subnet, 1, n) for n in range(1, 41)))
    assert len(set(got)) == 40 and all(a in subnet for a in got)


async def test_two_server_processes_on_one_database_never_share_a_subnet(
        store: SqlStore, database: str | None, tmp_path: Path) -> None:
    if database is None:  # SQLite has one owner: a second server cannot even open it
        with pytest.raises(StoreUnavailable, match="in use by another corral-server"):
            await SqlStore.open(sqlite_url(tmp_path))
        return
    other = await SqlStore.open(database)
    try:
        got = await asyncio.gather(*(subnet_of(store if host % 2 else other, host)
                                     for host in range(1, 41)))
    finally:
        await other.close()
    assert len(set(got)) == 40
