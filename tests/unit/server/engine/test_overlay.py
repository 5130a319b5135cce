"""The managed overlay driven from the server (server/engine/overlay.py), on the fake hub:
subnets per host, the peer lists every agent gets, addresses of containers, the policy the
agents are told, and failures shown on the host."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from server import operations
from server.engine import ipam, pusher
from server.engine.overlay_state import managed_network
from server.store import Condition, Query, Record
from shared import protocol
from shared.errors import InstructionError
from tests.support.timing import seconds
from tests.unit.server.engine.harness import Engine

CAPABLE = {"agentInstructions": ["instance.create", "network.apply"]}


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 5.0) -> Any:
    """The first true result of ``check``, polled (the controller works in the background)."""
    deadline = asyncio.get_running_loop().time() + seconds(timeout)
    while asyncio.get_running_loop().time() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def eventually(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    async def checked() -> Any:
        return check()

    return await until(checked, what, timeout)


async def host(engine: Engine, name: str, ip: str, **data: Any) -> Record:
    # One write, as the hello makes it: no peer ever sees the host at another address.
    return await engine.add_host(name, **{"agentIpAddress": ip, **CAPABLE, **data})


def latest(engine: Engine, record: Record) -> dict[str, Any] | None:
    sent = engine.hub.network.get(record.id)
    return sent[-1] if sent else None


def peers_of(engine: Engine, record: Record) -> list[str]:
    """The other hosts the agent was told of (the list names the host itself too)."""
    payload = latest(engine, record)
    return [] if payload is None else [p["underlayIp"] for p in payload["peers"]
                                       if p["underlayIp"] != payload["underlayIp"]]


async def test_every_agent_gets_its_subnet_and_the_others_as_peers(engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "192.168.5.2")
    await eventually(lambda: peers_of(engine, h1) == ["192.168.5.2"] and
                     peers_of(engine, h2) == ["192.168.5.1"], "both agents told")
    one, two = latest(engine, h1), latest(engine, h2)
    assert one is not None and two is not None
    assert (one["pool"], one["vni"], one["port"], one["mtu"]) == ("10.42.0.0/16", 42, 4789, 1450)
    assert one["underlayIp"] == "192.168.5.1"
    subnets = {IPv4Network(one["subnet"]), IPv4Network(two["subnet"])}
    assert len(subnets) == 2 and all(s.prefixlen == 24 for s in subnets)
    # One list for every host: each agent leaves itself out.
    assert one["peers"] == two["peers"] == [
        {"subnet": one["subnet"], "underlayIp": "192.168.5.1"},
        {"subnet": two["subnet"], "underlayIp": "192.168.5.2"}]
    assert one["policy"] == {"defaultAction": "allow", "entries": []}
    # Each host records the version its agent runs (once the agent's answer is in).
    current = await until(lambda: _runs(engine, h1, one["version"]), "h1's answer recorded")
    assert current.data.get("networkError") is None


async def _runs(engine: Engine, record: Record, version: str) -> Record | None:
    current = await engine.get(record)
    return current if current.data.get("networkVersion") == version else None


async def test_a_host_joining_and_leaving_reaches_every_peer_list(engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "192.168.5.2")
    await eventually(lambda: peers_of(engine, h1) == ["192.168.5.2"], "h1 told of h2")
    h3 = await host(engine, "h3", "192.168.5.3")
    await eventually(lambda: peers_of(engine, h1) == ["192.168.5.2", "192.168.5.3"] and
                     peers_of(engine, h2) == ["192.168.5.1", "192.168.5.3"], "h3 joined")
    managed = await managed_network(engine.store, engine.project.id)
    assert managed is not None
    subnet = (await ipam.host_subnets(engine.store, managed.network.id))[h3.id]

    await engine.act(h3, "deactivate")
    await engine.act(h3, "remove")
    await eventually(lambda: peers_of(engine, h1) == ["192.168.5.2"] and
                     peers_of(engine, h2) == ["192.168.5.1"], "h3 gone from the peers")
    # Its subnet is free again: the next host gets it.
    assert h3.id not in await ipam.host_subnets(engine.store, managed.network.id)
    h4 = await host(engine, "h4", "192.168.5.4")
    await eventually(lambda: latest(engine, h4), "h4 told")
    payload = latest(engine, h4)
    assert payload is not None and payload["subnet"] == str(subnet)


async def test_an_address_change_is_pushed_and_a_new_session_gets_the_state_again(
        engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "192.168.5.2")
    await eventually(lambda: peers_of(engine, h1) == ["192.168.5.2"], "h1 told")
    await engine.store.update(h2.id, {}, {"agentIpAddress": "192.168.7.2"})
    await eventually(lambda: peers_of(engine, h1) == ["192.168.7.2"], "the new address")
    sent = len(engine.hub.network[h1.id])
    engine.hub.disconnect(h1.id)
    engine.hub.connect(h1.id)
    await eventually(lambda: len(engine.hub.network[h1.id]) == sent + 1, "sent again")
    assert engine.hub.network[h1.id][-1] == engine.hub.network[h1.id][-2]


async def test_agents_that_do_not_carry_it_out_are_not_sent_it(engine: Engine) -> None:
    old = await host(engine, "old", "192.168.5.1", agentInstructions=["instance.create"])
    new = await host(engine, "new", "192.168.5.2")
    await eventually(lambda: peers_of(engine, new) == ["192.168.5.1"], "new told")
    assert engine.hub.network.get(old.id) is None


async def test_a_failure_shows_on_the_host_with_the_commands_message_and_is_retried(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pusher, "RETRY_SECONDS", 0.2)
    message = "ip link add corral-vx ... failed: RTNETLINK answers: File exists"
    engine.hub.fail("network.apply", InstructionError(message))
    h1 = await host(engine, "h1", "192.168.5.1")

    async def error() -> Any:
        return (await engine.get(h1)).data.get("networkError")

    assert await until(error, "the error shown") == f"Network: {message}"
    shown = engine.services.types.get("host").computed(None, await engine.get(h1))  # type: ignore[arg-type]
    assert (shown["transitioning"], shown["transitioningMessage"]) == (
        "error", f"Network: {message}")
    # Retried: the next attempt succeeds and clears the error.
    async def cleared() -> bool:
        return await error() is None

    await until(cleared, "the error cleared")
    assert len(engine.hub.network[h1.id]) == 2


async def test_an_address_inside_the_pool_is_an_error_and_no_peer(engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "10.42.200.9")

    async def error() -> Any:
        return (await engine.get(h2)).data.get("networkError")

    assert "inside the overlay pool 10.42.0.0/16" in await until(error, "the error shown")
    await eventually(lambda: latest(engine, h1), "h1 told")
    assert peers_of(engine, h1) == []
    assert engine.hub.network.get(h2.id) is None


async def test_containers_get_addresses_of_their_hosts_subnet(engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    first = await engine.container()
    second = await engine.container()
    bridged = await engine.container(networkMode="bridge")
    managed = await managed_network(engine.store, engine.project.id)
    assert managed is not None
    subnet = (await ipam.host_subnets(engine.store, managed.network.id))[h1.id]
    addresses = [first.data["spec"]["ipAddress"], second.data["spec"]["ipAddress"]]
    assert len(set(addresses)) == 2
    assert all(IPv4Address(a) in subnet for a in addresses)
    assert first.data["spec"]["networkMode"] == "managed"
    assert first.data["spec"]["ipAddress"] == addresses[0]
    assert bridged.data["spec"]["ipAddress"] is None
    # The address goes with the container, and the next container may take it.
    await operations.remove(engine.caller, await engine.get(first))
    await engine.settle()

    async def held() -> list[str | None]:
        leases = await engine.store.list(Query(types=["ipLease"], conditions=[
            Condition("kind", "eq", "address"), Condition("removed", "null")]))
        return sorted(lease.name for lease in leases if lease.name)  # type: ignore[misc]

    async def released() -> bool:
        return addresses[0] not in await held()

    await until(released, "the address released")
    third = await engine.container()
    assert third.data["spec"]["ipAddress"] == addresses[0]


async def test_the_policy_sent_names_each_hosts_containers(engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "192.168.5.2")
    shop = {"io.rancher.stack.name": "shop"}
    a = await engine.container(requestedHostId=f"1h{h1.id}", labels=shop)
    b = await engine.container(requestedHostId=f"1h{h2.id}", labels=shop)
    c = await engine.container(requestedHostId=f"1h{h2.id}",
                               labels={"io.rancher.stack.name": "other"})
    managed = await managed_network(engine.store, engine.project.id)
    assert managed is not None
    await operations.update(engine.caller, managed.network, {
        "defaultPolicyAction": "deny", "policy": [{"within": "stack", "action": "allow"}]})
    ip = {r.id: r.data["spec"]["ipAddress"] for r in (a, b, c)}

    def policy(record: Record) -> Any:
        payload = latest(engine, record)
        return payload["policy"] if payload and payload["policy"]["defaultAction"] == "deny" \
            else None

    await eventually(lambda: policy(h1) and policy(h2), "the policy sent")
    assert policy(h1)["entries"] == [{"action": "allow", "sources": [ip[a.id], ip[b.id]],
                                      "destinations": [ip[a.id]], "ports": []}]
    assert policy(h2)["entries"] == [
        {"action": "allow", "sources": [ip[c.id]], "destinations": [ip[c.id]], "ports": []},
        {"action": "allow", "sources": [ip[a.id], ip[b.id]], "destinations": [ip[b.id]],
         "ports": []}]
    # A container joining the stack reaches the others' policies.
    d = await engine.container(requestedHostId=f"1h{h1.id}", labels=shop)
    await eventually(lambda: ip[a.id] in str(policy(h2)) and
                     d.data["spec"]["ipAddress"] in str(policy(h2)), "d in h2's policy")


async def test_a_native_container_on_the_managed_network_keeps_its_address(
        engine: Engine) -> None:
    """Found on the host with an address of its subnet (started outside Corral, or left from
    an earlier server): the address is leased to it, so a placed container never collides."""
    h1 = await host(engine, "h1", "192.168.5.1")
    managed = await managed_network(engine.store, engine.project.id)
    assert managed is not None

    async def leased() -> Any:  # by the controller: this host did not register
        return (await ipam.host_subnets(engine.store, managed.network.id)).get(h1.id)

    first = str(next(ipam.host_addresses(await until(leased, "h1's subnet"))))
    await engine.services.reconciler.on_inventory(h1.id, protocol.Inventory(containers=[{
        "dockerId": "4f2a", "name": "by-hand", "image": "busybox", "status": "running",
        "ipAddress": first, "labels": {}}]))
    placed = await engine.container()
    assert placed.data["spec"]["ipAddress"] != first
    native = await engine.store.list(Query(types=["container"], conditions=[
        Condition("name", "eq", "by-hand")]))
    assert native[0].data["networkId"] == managed.network.id


async def test_a_host_corral_itself_wrote_to_meanwhile_can_still_be_removed(
        engine: Engine) -> None:
    """The overlay's outcome (and liveness) are written to hosts all the time: a removal
    read before such a write is not a conflict."""
    h1 = await host(engine, "h1", "192.168.5.1")
    read = await engine.act(h1, "deactivate")
    await engine.store.update(h1.id, {}, {"networkVersion": "written-meanwhile"})
    removed = await operations.act(engine.caller, read, "remove", None)
    assert isinstance(removed, Record) and removed.state == "removed"


async def test_two_hosts_reporting_one_address_are_both_errors_and_no_peers(
        engine: Engine) -> None:
    h1 = await host(engine, "h1", "192.168.5.1")
    h2 = await host(engine, "h2", "192.168.5.1")
    h3 = await host(engine, "h3", "192.168.5.3")

    async def errors() -> Any:
        found = [(await engine.get(h)).data.get("networkError") for h in (h1, h2)]
        return found if all(found) else None

    first, second = await until(errors, "both errors shown")
    assert f"also reported by 1h{h2.id}" in first and f"also reported by 1h{h1.id}" in second
    await eventually(lambda: latest(engine, h3), "h3 told")
    assert peers_of(engine, h3) == []


async def test_a_host_removed_since_the_hosts_were_read_gets_no_subnet_again(
        engine: Engine) -> None:
    """The controller reads the hosts, then leases for those without a subnet: one removed
    in between (its leases released with it) must not get a new one."""
    h1 = await host(engine, "h1", "192.168.5.1")
    managed = await managed_network(engine.store, engine.project.id)
    assert managed is not None

    async def leased() -> Any:
        return (await ipam.host_subnets(engine.store, managed.network.id)).get(h1.id)

    await until(leased, "h1's subnet")
    stale = await engine.get(h1)
    await engine.act(h1, "deactivate")
    await engine.act(h1, "remove")
    assert await leased() is None
    subnets = await engine.services.overlay._subnets(managed, [stale])
    assert h1.id not in subnets and await leased() is None
