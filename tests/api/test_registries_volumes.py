"""Registries (one per server address in an environment, credentials removed with them) and
volumes (``uri``, a required driver, ``sizeMb``), over a real socket and through the real
``cattle`` client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cattle
import gdapi
import pytest
from aiohttp.test_utils import TestClient

from server.api.handlers import SERVICES
from server.resources.volumes import create_local_pool
from server.store import NewRecord, Record
from shared.ids import parse_id
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    return resp.status, await resp.json()


async def registry_with_credential(client: TestClient, server: str) -> tuple[Any, Any]:
    status, registry = await send(client, "POST", "/v1/registries", {"serverAddress": server})
    assert status == 201, registry
    status, credential = await send(client, "POST", "/v1/registrycredentials", {
        "registryId": registry["id"], "publicValue": "robot", "secretValue": "s3cret"})
    assert status == 201, credential
    return registry, credential


def container_of(project_id: int, image: str) -> Record:
    """A container record as RegistryAuth reads it (only its environment and image)."""
    return Record(id=1, type="container", kind="container", uuid="u", name=None,
                  description=None, state="creating", project_id=project_id,
                  account_id=None, created=0, removed=None, transitioning="yes",
                  transitioning_message=None, transitioning_progress=None, lookup_key=None,
                  data={"spec": {"image": image}}, version=1)


async def test_a_second_registry_for_the_same_address_is_400_server_address_used(
        client: TestClient) -> None:
    status, first = await send(client, "POST", "/v1/registries",
                               {"serverAddress": "quay.io"})
    assert status == 201
    # The same registry however it is spelled.
    for spelling in ("quay.io", "https://Quay.IO/", "QUAY.io"):
        status, error = await send(client, "POST", "/v1/registries",
                                   {"serverAddress": spelling})
        assert status == 400, spelling
        assert error["type"] == "error" and error["status"] == 400
        assert error["code"] == "ServerAddressUsed"
    # Another environment may have its own.
    _, staging = await send(client, "POST", "/v1/projects", {"name": "Staging"})
    status, _ = await send(client, "POST", f"/v1/projects/{staging['id']}/registries",
                           {"serverAddress": "quay.io"})
    assert status == 201
    # Removing the registry frees its address.
    status, _ = await send(client, "DELETE", f"/v1/registries/{first['id']}")
    assert status == 200
    status, again = await send(client, "POST", "/v1/registries", {"serverAddress": "quay.io"})
    assert status == 201 and again["id"] != first["id"]


async def test_concurrent_creates_for_one_address_make_one_registry(
        client: TestClient) -> None:
    results = await asyncio.gather(*(send(client, "POST", "/v1/registries",
                                          {"serverAddress": "ghcr.io"}) for _ in range(6)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201, 400, 400, 400, 400, 400]
    _, listed = await send(client, "GET", "/v1/registries?serverAddress=ghcr.io")
    assert len(listed["data"]) == 1


async def test_removing_a_registry_removes_its_credentials(client: TestClient) -> None:
    registry, credential = await registry_with_credential(client, "registry.example.com")
    services = client.app[SERVICES]
    project_id = parse_id(registry["accountId"], "1a")
    assert project_id is not None
    container = container_of(project_id, "registry.example.com/team/app:1")
    assert (await services.registries.auth_for(container) or {}).get("username") == "robot"

    status, removed = await send(client, "DELETE", f"/v1/registries/{registry['id']}")
    assert status == 200 and removed["state"] == "removed"
    _, credential = await send(client, "GET", f"/v1/registrycredentials/{credential['id']}")
    assert credential["state"] == "removed"
    assert await services.registries.auth_for(container) is None
    # A registry made again at that address starts without credentials.
    status, _ = await send(client, "POST", "/v1/registries",
                           {"serverAddress": "registry.example.com"})
    assert status == 201
    assert await services.registries.auth_for(container) is None
    # And the removed registry takes no new ones.
    status, error = await send(client, "POST", "/v1/registrycredentials", {
        "registryId": registry["id"], "publicValue": "robot", "secretValue": "x"})
    assert status == 422 and error["code"] == "InvalidReference"


async def test_a_volume_shows_its_uri_as_rancher_does(client: TestClient) -> None:
    status, volume = await send(client, "POST", "/v1/volumes",
                                {"name": "db-data", "driver": "local"})
    assert status == 201, volume
    assert volume["uri"] == "local:///db-data"
    status, plugin = await send(client, "POST", "/v1/volumes",
                                {"name": "shared", "driver": "rexray/ebs"})
    assert status == 201 and plugin["uri"] == "rexray/ebs:///shared"
    _, listed = await send(client, "GET", "/v1/volumes?name=db-data")
    assert [v["uri"] for v in listed["data"]] == ["local:///db-data"]


async def test_a_volume_without_a_driver_is_422_missing_required(client: TestClient) -> None:
    for body in ({"name": "nodriver"}, {"name": "nodriver", "driver": None},
                 {"name": "nodriver", "driver": ""}):
        status, error = await send(client, "POST", "/v1/volumes", body)
        assert status == 422, body
        assert error["code"] in ("MissingRequired", "NotNullable", "MinLengthExceeded"), body
        assert error["fieldName"] == "driver"
    status, error = await send(client, "POST", "/v1/volumes", {"name": "nodriver"})
    assert error["code"] == "MissingRequired"


async def test_volume_size_mb_is_a_field_refused_where_no_driver_takes_a_size(
        client: TestClient) -> None:
    _, schema = await send(client, "GET", "/v1/schemas/volume")
    assert schema["resourceFields"]["sizeMb"]["type"] == "int"
    assert schema["resourceFields"]["sizeMb"]["create"] is True
    status, error = await send(client, "POST", "/v1/volumes",
                               {"name": "sized", "driver": "local", "sizeMb": 1024})
    assert status == 422
    assert error["code"] == "InvalidOption" and error["fieldName"] == "sizeMb"
    status, error = await send(client, "POST", "/v1/volumes",
                               {"name": "sized", "driver": "local", "sizeMb": 0})
    assert status == 422 and error["code"] == "MinLimitExceeded"
    status, volume = await send(client, "POST", "/v1/volumes",
                                {"name": "sized", "driver": "local", "sizeMb": None})
    assert status == 201 and volume["sizeMb"] is None


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_cattle_client_sees_server_address_used_and_volume_rules(api: cattle.Client) -> None:
    registry = api.wait_success(api.create_registry(serverAddress="server1.io", name="one"))
    assert registry.serverAddress == "server1.io"
    with pytest.raises(gdapi.ApiError) as error:
        api.create_registry(serverAddress="server1.io", name="two")
    assert error.value.error.status == 400
    assert error.value.error.code == "ServerAddressUsed"

    credential = api.create_registry_credential(registryId=registry.id, publicValue="rancher",
                                                secretValue="rancher")
    removed = api.wait_success(api.delete(registry))
    assert removed.state == "removed"
    assert api.reload(credential).state == "removed"

    with pytest.raises(gdapi.ApiError) as error:
        api.create_volume(name="nodriver")
    assert error.value.error.status == 422
    assert error.value.error.code == "MissingRequired"
    assert error.value.error.fieldName == "driver"
    volume = api.create_volume(name="cache", driver="local")
    assert volume.uri == "local:///cache"
    assert "sizeMb" in api.schema.types["volume"].resourceFields.__dict__



async def follow(client: TestClient, resource: Any, link: str) -> Any:
    url = resource["links"][link]
    resp = await client.get(url[url.index("/v1/"):], headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_registry_and_credential_link_to_each_other(client: TestClient) -> None:
    registry, credential = await registry_with_credential(client, "links.example.com")
    credentials = await follow(client, registry, "credentials")
    assert [c["id"] for c in credentials["data"]] == [credential["id"]]
    # A registry is a storage pool on no host, holding no volume.
    assert (await follow(client, registry, "hosts"))["data"] == []
    assert (await follow(client, registry, "volumes"))["data"] == []
    assert (await follow(client, credential, "registry"))["id"] == registry["id"]


async def test_volume_and_pool_link_to_their_host_pool_volumes_and_mounts(
        client: TestClient) -> None:
    store = client.app[SERVICES].store
    status, volume = await send(client, "POST", "/v1/volumes", {"name": "data",
                                                                "driver": "local"})
    assert status == 201, volume
    project_id = parse_id(volume["accountId"], "1a")
    host = await store.create(NewRecord(type="host", kind="docker", state="active",
                                        name="h1", project_id=project_id))
    pool = await create_local_pool(store, host)
    container = await store.create(NewRecord(
        type="container", kind="container", state="running", project_id=project_id,
        data={"hostId": host.id, "spec": {"image": "busybox", "volumes": [
            {"name": "data", "destination": "/data", "mode": "rw"}]}}))
    number = parse_id(volume["id"], "1v")
    assert number is not None
    await store.update(number, {}, {"hostId": host.id, "storagePoolId": pool.id,
                                    "mounts": [{"instanceId": container.id, "path": "/data"}]})
    status, volume = await send(client, "GET", f"/v1/volumes/{volume['id']}")
    assert (await follow(client, volume, "host"))["id"] == volume["hostId"]
    pools = await follow(client, volume, "storagePools")
    assert [p["id"] for p in pools["data"]] == [volume["storagePoolId"]]
    mounts = (await follow(client, volume, "mounts"))["data"]
    assert [(m["type"], m["volumeId"], m["path"], m["permissions"]) for m in mounts] == [
        ("mount", volume["id"], "/data", "rw")]
    assert await follow(client, volume, "instance") == {}
    pool_json = pools["data"][0]
    assert [h["id"] for h in (await follow(client, pool_json, "hosts"))["data"]] == [
        volume["hostId"]]
    assert [v["id"] for v in (await follow(client, pool_json, "volumes"))["data"]] == [
        volume["id"]]
    assert (await follow(client, pool_json, "credentials"))["data"] == []


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/registries", {"serverAddress": "update.example.com"}),
    ("/v1/volumes", {"name": "updated", "driver": "local"}),
])
async def test_the_update_action_answers_the_resource_unchanged(
        client: TestClient, path: str, body: Any) -> None:
    status, created = await send(client, "POST", path, body)
    assert status == 201, created
    assert "update" in created["actions"]
    status, updated = await send(client, "POST", created["actions"]["update"][
        created["actions"]["update"].index("/v1/"):])
    assert status in (200, 202), updated
    assert (updated["id"], updated["state"]) == (created["id"], created["state"])


async def test_the_update_action_changes_what_a_put_would(client: TestClient) -> None:
    status, created = await send(client, "POST", "/v1/registries",
                                 {"serverAddress": "action-update.example.com"})
    assert status == 201, created
    url = created["actions"]["update"]
    status, updated = await send(client, "POST", url[url.index("/v1/"):],
                                 {"description": "changed by the action"})
    assert status == 200, updated
    assert updated["description"] == "changed by the action"
    status, refused = await send(client, "POST", url[url.index("/v1/"):], {"name": 5})
    assert status == 422 and refused["fieldName"] == "name", refused
