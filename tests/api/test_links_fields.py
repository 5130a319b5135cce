"""Links, ``include=``, container fields and validation wording as Rancher 1.6 has them,
through the REST API with a scripted agent carrying out instructions, and through the real
``cattle`` client where a client call is the natural way in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cattle
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from shared import protocol
from tests.api.agent_double import attach
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY
from tests.support.timing import seconds

CONTAINER_LINKS = {"hosts", "instanceHostMaps", "volumes", "mounts", "ports", "nics",
                   "instanceLabels"}
HOST_LINKS = {"agent", "physicalHost", "storagePools", "ipAddresses", "hostLabels", "instances",
              "volumes", "containerStats"}
# The first address of the first host's subnet: what the server leases and Docker then reports.
CONTAINER_IP = "10.42.0.2"
HOST_SAMPLE = {"containers": 1, "cpuPercent": 12.5, "memoryUsage": 1048576,
               "networkRxBytes": 1, "networkTxBytes": 2, "blockReadBytes": 3,
               "blockWriteBytes": 4}


class ScriptedAgent:
    """Answers every instruction at once, as a healthy host would, and keeps each request."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.requests: list[protocol.Request] = []

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type is not WSMsgType.TEXT:
                return
            request = protocol.parse(msg.data)
            if isinstance(request, protocol.Request):
                self.requests.append(request)
                await self.ws.send_str(protocol.dump(protocol.Reply(
                    request_id=request.id, data=self.answer(request))))

    def answer(self, request: protocol.Request) -> dict[str, Any]:
        if request.name == "host.stats":
            return dict(HOST_SAMPLE)
        if request.name not in ("instance.create", "instance.start"):
            return {}
        spec = request.data.get("container") or {}
        ports = [{**p, "hostIp": p["hostIp"] or "0.0.0.0", "hostPort": p["hostPort"] or 32768}
                 for p in spec.get("ports") or []]
        mounts = [{"type": "volume", "name": v["name"] or "a" * 64, "destination":
                   v["destination"], "driver": "local", "anonymous": v["name"] is None}
                  for v in spec.get("volumes") or []]
        return {"uuid": spec.get("uuid") or request.data.get("uuid"),
                "dockerId": f"d-{request.resource_id}", "status": "running",
                "ipAddress": CONTAINER_IP, "ports": ports, "mounts": mounts}

    def created_specs(self) -> list[dict[str, Any]]:
        return [r.data["container"] for r in self.requests if r.name == "instance.create"]


@pytest.fixture
async def agent(client: TestClient) -> AsyncIterator[ScriptedAgent]:
    ws, _ = await attach(client)
    double = ScriptedAgent(ws)
    task = asyncio.create_task(double.run())

    async def host_active() -> bool:
        hosts = (await get(client, "/v1/hosts"))["data"]
        return bool(hosts) and hosts[0]["state"] == "active"

    await eventually(host_active)
    yield double
    await ws.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def get(client: TestClient, path: str) -> Any:
    resp = await client.get(path, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, data=json.dumps(body), headers=ADMIN)
    return resp.status, await resp.json()


async def running(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    status, created = await post(client, "/v1/containers", {"imageUuid": "docker:busybox",
                                                            **body})
    assert status == 201, created
    url = f"/v1/containers/{created['id']}"

    async def settled() -> bool:
        return str((await get(client, url))["state"]) == "running"

    await eventually(settled)
    return dict(await get(client, url))


async def follow(client: TestClient, resource: dict[str, Any], link: str) -> Any:
    url = str(resource["links"][link])
    return await get(client, url[url.index("/v1/"):])


async def test_container_links_are_rancher_collections_of_what_corral_knows(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {"ports": ["8081:81"], "labels": {"tier": "web"},
                                       "dataVolumes": ["cache:/cache", "/srv:/srv:ro"]})
    assert set(container["links"]) >= CONTAINER_LINKS
    linked = {name: await follow(client, container, name) for name in CONTAINER_LINKS}
    for name, collection in linked.items():
        assert collection["type"] == "collection", name
        assert collection["links"]["self"] == container["links"][name]
    assert [h["id"] for h in linked["hosts"]["data"]] == [container["hostId"]]
    assert linked["instanceHostMaps"]["data"][0]["hostId"] == container["hostId"]
    port = linked["ports"]["data"][0]
    assert (port["type"], port["privatePort"], port["publicPort"], port["protocol"]) == \
        ("port", 81, 8081, "tcp")
    assert linked["nics"]["data"][0]["ipAddress"] == CONTAINER_IP
    labels = {label["key"]: label["value"] for label in linked["instanceLabels"]["data"]}
    assert labels["tier"] == "web"
    assert [v["name"] for v in linked["volumes"]["data"]] == ["cache"]
    mounts = {m["path"]: m for m in linked["mounts"]["data"]}
    assert mounts["/cache"]["volumeId"] == linked["volumes"]["data"][0]["id"]
    assert (mounts["/srv"]["kind"], mounts["/srv"]["permissions"]) == ("bind", "ro")


async def test_include_embeds_links_in_a_resource_and_in_a_collection(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {"dataVolumes": ["data:/data"]})
    one = await get(client, f"/v1/containers/{container['id']}?include=hosts&include=volumes")
    assert [h["id"] for h in one["hosts"]] == [container["hostId"]]
    assert [v["name"] for v in one["volumes"]] == ["data"]
    assert "nics" not in one
    listed = await get(client, "/v1/containers?include=nics&include=nosuchlink")
    assert [n["ipAddress"] for n in listed["data"][0]["nics"]] == [CONTAINER_IP]
    assert "nosuchlink" not in listed["data"][0]
    host = await get(client, f"/v1/hosts/{container['hostId']}?include=agent&include=instances")
    assert host["agent"]["state"] == "active"
    assert [c["id"] for c in host["instances"]] == [container["id"]]


async def test_schemas_name_includeable_links_and_describe_the_linked_types(
        client: TestClient) -> None:
    container = await get(client, "/v1/schemas/container")
    assert set(container["includeableLinks"]) == CONTAINER_LINKS
    host = await get(client, "/v1/schemas/host")
    assert set(host["includeableLinks"]) == HOST_LINKS
    for schema_id in ("instanceHostMap", "port", "nic", "mount", "label", "agent",
                      "physicalHost", "ipAddress", "hostStats", "restartPolicy",
                      "logConfig", "dockerBuild", "blkioDeviceOption"):
        assert (await get(client, f"/v1/schemas/{schema_id}"))["id"] == schema_id
    fields = container["resourceFields"]
    assert fields["restartPolicy"]["type"] == "restartPolicy"
    assert fields["logConfig"]["type"] == "logConfig"
    for name in ("allocationState", "removeTime", "data", "count", "build",
                 "dataVolumeMounts", "registryCredentialId", "validHostIds",
                 "publishAllPorts", "blkioWeight", "blkioDeviceOptions"):
        assert name in fields, name


async def test_host_links_lead_to_its_agent_pools_addresses_labels_and_containers(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {})
    host = await get(client, f"/v1/hosts/{container['hostId']}")
    assert set(host["links"]) >= HOST_LINKS
    assert "dockersocket" in host["actions"]  # the Docker socket, relayed by its agent
    agent_ = await follow(client, host, "agent")
    assert (agent_["type"], agent_["state"], agent_["hostId"]) == ("agent", "active", host["id"])
    physical = await follow(client, host, "physicalHost")
    assert (physical["type"], physical["name"]) == ("physicalHost", "double-1")
    pools = (await follow(client, host, "storagePools"))["data"]
    assert [p["type"] for p in pools] == ["storagePool"]
    addresses = (await follow(client, host, "ipAddresses"))["data"]
    assert [a["address"] for a in addresses] == [host["agentIpAddress"]]
    labels = {x["key"]: x["value"] for x in (await follow(client, host, "hostLabels"))["data"]}
    assert labels["zone"] == "a"
    instances = await follow(client, host, "instances")
    assert (instances["resourceType"], [c["id"] for c in instances["data"]]) == \
        ("container", [container["id"]])


async def test_host_volumes_link_lists_the_volumes_placed_on_it(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {"dataVolumes": ["cache:/cache"]})
    host = await get(client, f"/v1/hosts/{container['hostId']}")
    volumes = await follow(client, host, "volumes")
    assert (volumes["resourceType"], [v["name"] for v in volumes["data"]]) == \
        ("volume", ["cache"])
    included = await get(client, f"/v1/hosts/{host['id']}?include=volumes")
    assert [v["name"] for v in included["volumes"]] == ["cache"]


async def test_host_stats_link_samples_the_host_as_its_stats_link_does(
        client: TestClient, agent: ScriptedAgent) -> None:
    host = (await get(client, "/v1/hosts"))["data"][0]
    sample = await follow(client, host, "hostStats")
    assert (sample["type"], sample["cpuPercent"]) == ("hostStats", HOST_SAMPLE["cpuPercent"])


async def test_host_container_stats_link_samples_each_running_container_on_it(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {})
    host = await get(client, f"/v1/hosts/{container['hostId']}")
    stats = await follow(client, host, "containerStats")
    assert (stats["resourceType"], [s["id"] for s in stats["data"]]) == \
        ("containerStats", [container["id"]])
    assert any(r.name == "instance.stats" for r in agent.requests)


async def test_embedded_parts_declare_the_states_and_kinds_rancher_declares(
        client: TestClient) -> None:
    for schema_id, field, options in (("port", "state", "active"), ("mount", "state", "inactive"),
                                      ("agent", "state", "reconnecting"),
                                      ("ipAddress", "state", "active")):
        declared = (await get(client, f"/v1/schemas/{schema_id}"))["resourceFields"][field]
        assert (declared["type"], declared["nullable"]) == ("enum", False), schema_id
        assert options in declared["options"], schema_id
    for schema_id, field in (("port", "protocol"), ("mount", "kind"), ("label", "kind")):
        declared = (await get(client, f"/v1/schemas/{schema_id}"))["resourceFields"][field]
        assert (declared["type"], declared.get("options")) == ("string", None), schema_id
    host = (await get(client, "/v1/schemas/host"))["resourceFields"]["agentState"]
    assert (host["type"], host.get("options")) == ("string", None)
    access = (await get(client, "/v1/schemas/hostAccess"))["resourceFields"]
    assert (access["url"]["nullable"], access["token"]["nullable"]) == (False, False)


async def test_project_host_stats_samples_each_connected_host(
        client: TestClient, agent: ScriptedAgent) -> None:
    project = (await get(client, "/v1/projects"))["data"][0]
    stats = await follow(client, project, "hostStats")
    assert stats["resourceType"] == "hostStats"
    assert [s["cpuPercent"] for s in stats["data"]] == [HOST_SAMPLE["cpuPercent"]]
    assert any(r.name == "host.stats" for r in agent.requests)


async def test_new_container_fields_reach_the_agent_and_read_back_typed(
        client: TestClient, agent: ScriptedAgent) -> None:
    project = (await get(client, "/v1/projects"))["data"][0]
    container = await running(client, {
        "publishAllPorts": True, "blkioWeight": 500, "expose": ["80"],
        "blkioDeviceOptions": {"/dev/sda": {"readBps": 1024, "weight": 100}},
        "restartPolicy": "on-failure:2", "logConfig": {"driver": "json-file"},
        "labels": {"io.rancher.environment.uuid": "forged"}, "count": 1})
    spec = agent.created_specs()[-1]
    assert (spec["publishAllPorts"], spec["blkioWeight"]) == (True, 500)
    assert spec["blkioDeviceOptions"] == [{"path": "/dev/sda", "weight": 100, "readBps": 1024,
                                           "writeBps": None, "readIops": None,
                                           "writeIops": None}]
    assert spec["labels"]["io.rancher.environment.uuid"] == project["uuid"]
    assert container["labels"]["io.rancher.environment.uuid"] == project["uuid"]
    assert container["restartPolicy"] == {"name": "on-failure", "maximumRetryCount": 2}
    assert container["logConfig"] == {"driver": "json-file", "config": {}}
    assert container["allocationState"] == "active"
    assert container["removeTime"] is None
    inspect = container["data"]["dockerInspect"]
    assert inspect["Id"] == container["externalId"]
    assert inspect["HostConfig"]["PublishAllPorts"] is True
    assert inspect["NetworkSettings"]["IPAddress"] == CONTAINER_IP


async def test_references_in_container_fields_are_checked_and_take_effect(
        client: TestClient, agent: ScriptedAgent) -> None:
    status, volume = await post(client, "/v1/volumes", {"name": "shared", "driver": "local"})
    assert status == 201, volume
    container = await running(client, {"dataVolumeMounts": {"/shared": volume["id"]}})
    assert {"name": "shared", "destination": "/shared", "mode": "rw", "driver": "local"} in \
        agent.created_specs()[-1]["volumes"]
    host_id = container["hostId"]
    await running(client, {"validHostIds": [host_id]})
    for body, field in [({"validHostIds": ["1h999"]}, "validHostIds"),
                        ({"registryCredentialId": "1c999"}, "registryCredentialId"),
                        ({"dataVolumeMounts": {"/x": "1v999"}}, "dataVolumeMounts")]:
        status, error = await post(client, "/v1/containers",
                                   {"imageUuid": "docker:busybox", **body})
        assert (status, error["code"], error["fieldName"]) == \
            (422, "InvalidReference", field), body


async def test_validation_is_worded_as_rancher_words_it(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {"ports": [80, "8081:81"], "devices": "/dev/fuse"})
    assert [(p["containerPort"], p["hostPort"]) for p in agent.created_specs()[-1]["ports"]] \
        == [(80, None), (81, 8081)]
    assert agent.created_specs()[-1]["devices"][0]["pathOnHost"] == "/dev/fuse"
    assert container["state"] == "running"
    for body, code, field in [
            ({"ports": ["80:80:80:80"]}, "PortWrongFormat", "ports"),
            ({"ports": ["99999:80"]}, "PortWrongFormat", "ports"),
            ({"networkMode": "foo"}, "InvalidReference", "networkMode"),
            ({"build": {"context": "."}}, "InvalidOption", "build"),
            ({"blkioWeight": 5}, "MinLimitExceeded", "blkioWeight")]:
        status, error = await post(client, "/v1/containers",
                                   {"imageUuid": "docker:busybox", **body})
        assert (status, error["code"], error["fieldName"]) == (422, code, field), body


async def test_cattle_client_follows_container_links_and_reads_included_ones(
        client: TestClient, agent: ScriptedAgent) -> None:
    container = await running(client, {"ports": ["8082:82"]})
    url = str(client.make_url("/v1/schemas"))

    def with_cattle() -> tuple[list[str], list[int], list[str]]:
        api = cattle.Client(url=url, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                            headers={"Accept": "application/json"})
        found = api.by_id_container(container["id"])
        hosts = [h.id for h in found.hosts()]
        ports = [p.publicPort for p in found.ports_link()]  # the field is named ports too
        included = api.by_id_container(container["id"], include="instanceLabels")
        keys = [label.key for label in included.instanceLabels]
        return hosts, ports, keys

    hosts, ports, keys = await asyncio.to_thread(with_cattle)
    assert hosts == [container["hostId"]]
    assert ports == [8082]
    assert "io.rancher.environment.uuid" in keys


async def test_a_named_registry_credential_is_the_one_used_to_pull(
        client: TestClient, agent: ScriptedAgent) -> None:
    status, registry = await post(client, "/v1/registries", {"serverAddress": "quay.io"})
    assert status == 201, registry
    credentials = []
    for user in ("first", "second"):
        status, credential = await post(client, "/v1/registrycredentials", {
            "registryId": registry["id"], "publicValue": user, "secretValue": "s3cret"})
        assert status == 201, credential
        credentials.append(credential)
    await running(client, {"imageUuid": "docker:quay.io/team/app:1",
                           "registryCredentialId": credentials[1]["id"]})
    create = [r for r in agent.requests if r.name == "instance.create"][-1]
    assert create.data["registryAuth"]["username"] == "second"
