"""Networks, subnets and network drivers: every environment's defaults (made with it, or at
start-up for one made before), Rancher's fields and validation codes, over a real socket and
through the real ``cattle`` client."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Network
from typing import Any

import cattle
import gdapi
import pytest
from aiohttp.test_utils import TestClient

from server.api.handlers import SERVICES
from server.app import create_app
from server.config import Settings
from server.engine import ipam
from server.engine.overlay_state import managed_network
from server.store import NewRecord
from shared.ids import format_id
from tests.api import agent_double
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess

DEFAULT_KINDS = {"managed": "network", "bridge": "dockerBridge", "host": "dockerHost",
                 "none": "dockerNone"}
VXLAN = {"subnetPool": "10.42.0.0/16", "hostSubnetPrefix": 24, "mtu": 1450, "vni": 42,
         "port": 4789}


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    return resp.status, await resp.json()


async def data(client: TestClient, path: str) -> list[dict[str, Any]]:
    status, body = await send(client, "GET", path)
    assert status == 200, body
    return list(body["data"])


async def assert_defaults(client: TestClient, project_id: str) -> None:
    """The environment has its four networks and the vxlan driver, the managed network on
    the driver with the pool as its one subnet."""
    scoped = f"/v2-beta/projects/{project_id}"
    networks = {n["name"]: n for n in await data(client, f"{scoped}/networks")}
    assert {name: n["kind"] for name, n in networks.items()} == DEFAULT_KINDS
    assert all(n["state"] == "active" for n in networks.values())
    drivers = await data(client, f"{scoped}/networkdrivers")
    assert [(d["name"], d["state"]) for d in drivers] == [("vxlan", "active")]
    driver = drivers[0]
    assert driver["networkMetadata"] == VXLAN and driver["cniConfig"] == {}
    managed = networks["managed"]
    assert managed["networkDriverId"] == driver["id"]
    assert managed["defaultPolicyAction"] == "allow" and managed["policy"] is None
    pool = {"networkAddress": "10.42.0.0", "cidrSize": 16, "gateway": "10.42.0.1",
            "startAddress": "10.42.0.2", "endAddress": "10.42.255.254"}
    assert managed["subnets"] == [pool]
    assert driver["defaultNetwork"]["subnets"] == [pool]
    subnets = await data(client, f"{scoped}/subnets")
    assert [{k: s[k] for k in pool} for s in subnets] == [pool]
    assert subnets[0]["networkId"] == managed["id"]
    assert networks["bridge"]["networkDriverId"] is None
    assert networks["bridge"]["subnets"] == []


async def default_project(client: TestClient) -> str:
    projects = await data(client, "/v1/projects?name=Default")
    return str(projects[0]["id"])


async def test_the_default_and_a_new_environment_have_the_default_networks(
        client: TestClient) -> None:
    await assert_defaults(client, await default_project(client))
    status, project = await send(client, "POST", "/v1/projects", {"name": "Staging"})
    assert status == 201, project
    await assert_defaults(client, project["id"])
    # Its own: the other environment's networks are not listed in it.
    assert len(await data(client, f"/v1/projects/{project['id']}/networks")) == 4


async def test_an_environment_from_before_networks_gets_them_at_start_up(
        settings: Settings, aiohttp_client: Any) -> None:
    first: TestClient = await aiohttp_client(create_app(settings))
    store = first.app[SERVICES].store
    old = await store.create(NewRecord(type="project", kind="project", state="active",
                                       name="Old", data={"orchestration": "cattle"}))
    old_id = format_id("1a", old.id)
    assert await data(first, f"/v1/projects/{old_id}/networks") == []
    await first.close()

    again: TestClient = await aiohttp_client(create_app(settings))
    await assert_defaults(again, old_id)
    await assert_defaults(again, await default_project(again))
    await again.close()
    # A further start makes nothing twice.
    third: TestClient = await aiohttp_client(create_app(settings))
    assert len(await data(third, f"/v1/projects/{old_id}/networks")) == 4
    assert len(await data(third, f"/v1/projects/{old_id}/networkdrivers")) == 1


async def managed_driver(client: TestClient) -> dict[str, Any]:
    return (await data(client, "/v2-beta/networkdrivers?name=vxlan"))[0]


async def test_a_network_is_created_registering_with_its_subnets_then_active(
        client: TestClient) -> None:
    driver = await managed_driver(client)
    status, network = await send(client, "POST", "/v2-beta/networks", {
        "name": "backend", "networkDriverId": driver["id"],
        "subnets": [{"networkAddress": "192.168.10.0/24"}],
        "defaultPolicyAction": "deny",
        "policy": ['{"within": "stack", "action": "allow"}',
                   {"between": {"groupBy": "io.rancher.stack"}, "action": "deny",
                    "ports": ["80/tcp"]}]})
    assert status == 201, network
    assert network["state"] == "registering"
    assert network["subnets"] == [{"networkAddress": "192.168.10.0", "cidrSize": 24,
                                   "gateway": "192.168.10.1", "startAddress": "192.168.10.2",
                                   "endAddress": "192.168.10.254"}]
    assert network["policy"][0] == {"within": "stack", "action": "allow"}
    subnets = await data(client, f"/v2-beta/subnets?networkId={network['id']}")
    assert [s["networkAddress"] for s in subnets] == ["192.168.10.0"]
    status, network = await send(client, "PUT", f"/v2-beta/networks/{network['id']}",
                                 {"defaultPolicyAction": "allow", "policy": None,
                                  "name": "backend-2"})
    assert status == 200, network
    assert (network["defaultPolicyAction"], network["policy"], network["name"]) == \
        ("allow", None, "backend-2")
    status, removed = await send(client, "DELETE", f"/v2-beta/networks/{network['id']}")
    assert status == 200 and removed["state"] == "removed"
    subnets = await data(client, f"/v2-beta/subnets?networkId={network['id']}")
    assert [s["state"] for s in subnets] == ["removed"]
    # The name and the range are free again.
    status, again = await send(client, "POST", "/v2-beta/networks", {
        "name": "backend-2", "networkDriverId": driver["id"],
        "subnets": [{"networkAddress": "192.168.10.0", "cidrSize": 24}]})
    assert status == 201, again


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"networkDriverId": None}, "MissingRequired", "networkDriverId"),
    ({"networkDriverId": "1nd999999"}, "InvalidReference", "networkDriverId"),
    ({"name": "managed"}, "NotUnique", "name"),
    ({"defaultPolicyAction": "maybe"}, "InvalidOption", "defaultPolicyAction"),
    ({"subnets": [{"networkAddress": "10.300.0.0/16"}]}, "InvalidFormat", "subnets"),
    ({"subnets": [{"networkAddress": "192.168.0.1/24"}]}, "InvalidFormat", "subnets"),
    ({"subnets": [{"cidrSize": 24}]}, "MissingRequired", "subnets"),
    ({"subnets": [{"networkAddress": "10.0.0.0", "cidrSize": 4}]}, "MinLimitExceeded",
     "subnets"),
    ({"subnets": [{"networkAddress": "10.42.7.0/24"}]}, "InvalidOption", "subnets"),
    ({"subnets": [{"networkAddress": "10.9.0.0/16"}, {"networkAddress": "10.9.3.0/24"}]},
     "InvalidOption", "subnets"),
    ({"subnets": [{"networkAddress": "10.9.0.0/24", "gateway": "10.8.0.1"}]},
     "InvalidOption", "subnets"),
    ({"policy": [{"action": "allow", "within": "galaxy"}]}, "InvalidOption", "policy"),
    ({"policy": [{"within": "stack"}]}, "MissingRequired", "policy"),
    ({"policy": ["{not json"]}, "InvalidFormat", "policy"),
])
async def test_a_bad_network_is_422_naming_the_field(
        client: TestClient, body: dict[str, Any], code: str, field: str) -> None:
    driver = await managed_driver(client)
    status, error = await send(client, "POST", "/v2-beta/networks",
                               {"networkDriverId": driver["id"], **body})
    assert status == 422, error
    assert (error["code"], error["fieldName"]) == (code, field), error


async def test_a_default_network_cannot_be_removed(client: TestClient) -> None:
    for name in DEFAULT_KINDS:
        network = (await data(client, f"/v2-beta/networks?name={name}"))[0]
        assert "remove" not in network["actions"] and "deactivate" in network["actions"]
        status, error = await send(client, "DELETE", f"/v2-beta/networks/{network['id']}")
        assert status == 422 and error["code"] == "ActionNotAvailable", error


async def test_renaming_a_network_to_a_taken_name_is_422_not_unique(
        client: TestClient) -> None:
    bridge = (await data(client, "/v2-beta/networks?name=bridge"))[0]
    status, error = await send(client, "PUT", f"/v2-beta/networks/{bridge['id']}",
                               {"name": "host"})
    assert status == 422 and (error["code"], error["fieldName"]) == ("NotUnique", "name")
    status, error = await send(client, "PUT", f"/v2-beta/networks/{bridge['id']}",
                               {"defaultPolicyAction": "sometimes"})
    assert status == 422 and error["code"] == "InvalidOption"


async def test_the_vxlan_options_change_with_a_put_and_move_the_managed_subnet(
        client: TestClient) -> None:
    driver = await managed_driver(client)
    url = f"/v2-beta/networkdrivers/{driver['id']}"
    status, changed = await send(client, "PUT", url, {"networkMetadata": {
        "subnetPool": "10.60.0.0/20", "hostSubnetPrefix": 26, "mtu": 1400}})
    assert status == 200, changed
    assert changed["networkMetadata"] == {**VXLAN, "subnetPool": "10.60.0.0/20",
                                          "hostSubnetPrefix": 26, "mtu": 1400}
    managed = (await data(client, "/v2-beta/networks?name=managed"))[0]
    assert managed["subnets"][0]["networkAddress"] == "10.60.0.0"
    assert managed["subnets"][0]["cidrSize"] == 20
    live = await data(client, f"/v2-beta/subnets?networkId={managed['id']}&state=active")
    assert [(s["networkAddress"], s["cidrSize"]) for s in live] == [("10.60.0.0", 20)]


@pytest.mark.parametrize(("options", "code"), [
    ({"subnetPool": "10.42.0.0/33"}, "InvalidFormat"),
    ({"subnetPool": "10.42.0.1/16"}, "InvalidFormat"),
    ({"subnetPool": "fd00::/64"}, "InvalidFormat"),
    ({"hostSubnetPrefix": 12}, "InvalidOption"),
    ({"hostSubnetPrefix": 31}, "InvalidOption"),
    ({"mtu": 100}, "InvalidOption"),
    ({"vni": 2 ** 24}, "InvalidOption"),
    ({"port": "4789"}, "InvalidFormat"),
    ({"colour": "blue"}, "InvalidOption"),
])
async def test_bad_vxlan_options_are_422_naming_network_metadata(
        client: TestClient, options: dict[str, Any], code: str) -> None:
    driver = await managed_driver(client)
    status, error = await send(client, "PUT", f"/v2-beta/networkdrivers/{driver['id']}",
                               {"networkMetadata": options})
    assert status == 422, error
    assert (error["code"], error["fieldName"]) == (code, "networkMetadata"), error


async def test_a_pool_overlapping_another_network_is_422(client: TestClient) -> None:
    driver = await managed_driver(client)
    status, _ = await send(client, "POST", "/v2-beta/networks", {
        "name": "lab", "networkDriverId": driver["id"],
        "subnets": [{"networkAddress": "172.20.0.0/16"}]})
    assert status == 201
    status, error = await send(client, "PUT", f"/v2-beta/networkdrivers/{driver['id']}",
                               {"networkMetadata": {"subnetPool": "172.16.0.0/12"}})
    assert status == 422 and (error["code"], error["fieldName"]) == \
        ("InvalidOption", "networkMetadata")
    assert "network lab" in error["message"]


async def host_subnets(client: TestClient) -> dict[int, str]:
    store = client.app[SERVICES].store
    driver = await managed_driver(client)
    project_id = int(driver["accountId"].removeprefix("1a"))
    managed = await managed_network(store, project_id)
    assert managed is not None
    return {host: str(subnet) for host, subnet in
            (await ipam.host_subnets(store, managed.network.id)).items()}


async def test_hosts_registering_at_once_get_different_subnets_of_the_pool(
        client: TestClient) -> None:
    await asyncio.gather(*(agent_double.register(client, key=f"{i}" * 64) for i in range(6)))
    subnets = await host_subnets(client)
    assert len(subnets) == 6 and len(set(subnets.values())) == 6
    assert all(s.startswith("10.42.") and s.endswith(".0/24") for s in subnets.values())


async def test_a_new_pool_gives_every_host_a_subnet_of_it_or_is_422_if_too_small(
        client: TestClient) -> None:
    for i in range(3):
        await agent_double.register(client, key=f"{i}" * 64)
    driver = await managed_driver(client)
    url = f"/v2-beta/networkdrivers/{driver['id']}"
    status, error = await send(client, "PUT", url, {"networkMetadata": {
        "subnetPool": "10.70.0.0/23", "hostSubnetPrefix": 24}})
    assert status == 422 and (error["code"], error["fieldName"]) == \
        ("InvalidOption", "networkMetadata"), error
    assert "holds 2 /24 subnet(s)" in error["message"] and "3 hosts" in error["message"]
    assert all(s.startswith("10.42.") for s in (await host_subnets(client)).values())
    status, changed = await send(client, "PUT", url, {"networkMetadata": {
        "subnetPool": "10.70.0.0/22", "hostSubnetPrefix": 24}})
    assert status == 200, changed
    subnets = await host_subnets(client)
    assert sorted(subnets.values()) == ["10.70.0.0/24", "10.70.1.0/24", "10.70.2.0/24"]


async def test_the_pool_cannot_change_while_containers_hold_its_addresses(
        client: TestClient) -> None:
    store = client.app[SERVICES].store
    driver = await managed_driver(client)
    managed = await managed_network(store, int(driver["accountId"].removeprefix("1a")))
    assert managed is not None
    await store.transact(lambda tx: ipam.lease_address(
        tx, managed.network.id, IPv4Network("10.42.0.0/24"), 1, 99))
    status, error = await send(client, "PUT", f"/v2-beta/networkdrivers/{driver['id']}",
                               {"networkMetadata": {"subnetPool": "10.80.0.0/16"}})
    assert status == 422 and error["fieldName"] == "networkMetadata", error
    assert "1 container(s) hold addresses" in error["message"]


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.origin}/v2-beta/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_cattle_client_lists_reads_filters_and_creates_networks(api: cattle.Client) -> None:
    types = api.schema.types
    assert {"network", "networkDriver", "subnet", "networkPolicyRule"} <= set(types)
    assert types["network"].resourceFields.defaultPolicyAction.options == ["allow", "deny"]
    names = sorted(n.name for n in api.list_network())
    assert names == ["bridge", "host", "managed", "none"]
    managed = api.list_network(name="managed").data[0]
    assert api.by_id_network(managed.id).kind == "network"
    assert [n.name for n in api.list_network(kind="dockerHost")] == ["host"]
    driver = managed.networkDriver()  # a link, followed by GET
    assert driver.name == "vxlan" and driver.networkMetadata.vni == 42
    assert [s.cidrSize for s in api.list_subnet(networkId=managed.id)] == [16]

    network = api.create_network(name="web", networkDriverId=driver.id,
                                 subnets=[{"networkAddress": "192.168.50.0/24"}])
    assert network.state == "registering"
    network = api.wait_success(network)
    assert network.state == "active" and network.defaultPolicyAction == "allow"
    network = api.update(network, defaultPolicyAction="deny")
    assert network.defaultPolicyAction == "deny"
    with pytest.raises(gdapi.ApiError) as error:
        api.create_network(name="web", networkDriverId=driver.id)
    assert error.value.error.status == 422
    assert (error.value.error.code, error.value.error.fieldName) == ("NotUnique", "name")
    removed = api.wait_success(api.delete(network))
    assert removed.state == "removed"
