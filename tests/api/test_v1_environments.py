"""On /v1 a stack is an ``environment``, as in Rancher 1.x: collection ``environments``, ids
``1e<n>`` (``1st<n>`` taken too), a service's ``environmentId`` and ``environment`` link;
/v2-beta keeps ``stack`` and ``stackId``. Both name the same records."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import cattle
import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_subscribe import next_change
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess

COMPOSE = """\
version: '2'
services:
  web:
    image: busybox
    links:
      - db
  db:
    image: busybox
"""


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    return resp.status, await resp.json()


def path(url: str) -> str:
    return urlsplit(url).path


def number(public_id: str) -> str:
    match = re.fullmatch(r"1[a-z]+([0-9]+)", public_id)
    assert match is not None, public_id
    return match.group(1)


async def test_v1_lists_creates_reads_updates_and_deletes_environments(
        client: TestClient) -> None:
    status, env = await send(client, "POST", "/v1/environments",
                             {"name": "shop", "dockerCompose": COMPOSE})
    assert status == 201, env
    assert env["type"] == "environment" and env["baseType"] == "environment"
    assert env["kind"] == "environment" and env["id"].startswith("1e")
    assert env["links"]["self"].endswith(f"/v1/environments/{env['id']}")
    assert env["links"]["services"].endswith(f"/v1/environments/{env['id']}/services")
    assert all(f"/v1/environments/{env['id']}?action=" in url
               for url in env["actions"].values())
    status, listed = await send(client, "GET", "/v1/environments?name=shop")
    assert status == 200 and listed["resourceType"] == "environment"
    assert [e["id"] for e in listed["data"]] == [env["id"]]
    assert set(listed["createTypes"]) == {"environment"}
    assert listed["links"]["self"].endswith("/v1/environments")
    status, read = await send(client, "GET", f"/v1/environments/{env['id']}")
    assert status == 200 and read["name"] == "shop"
    # Cattle's /v1 took an id with any prefix; Corral takes /v2-beta's one too.
    status, same = await send(client, "GET", f"/v1/environments/1st{number(env['id'])}")
    assert status == 200 and same["id"] == env["id"]
    status, updated = await send(client, "PUT", f"/v1/environments/{env['id']}",
                                 {"description": "the shop"})
    assert status == 200 and updated["description"] == "the shop"
    assert updated["type"] == "environment"
    status, removing = await send(client, "DELETE", f"/v1/environments/{env['id']}")
    assert status == 200 and removing["type"] == "environment"
    assert removing["state"] in ("removing", "removed")


async def test_the_same_stack_is_an_environment_on_v1_and_a_stack_on_v2_beta(
        client: TestClient) -> None:
    _, stack = await send(client, "POST", "/v2-beta/stacks", {"name": "both"})
    assert stack["id"].startswith("1st")
    env_id = "1e" + number(stack["id"])
    status, env = await send(client, "GET", f"/v1/environments/{env_id}")
    assert status == 200 and env["uuid"] == stack["uuid"]
    assert (await send(client, "GET", "/v1/stacks"))[0] == 404
    assert (await send(client, "GET", "/v2-beta/environments"))[0] == 404

    # A service made on /v1 with environmentId reads on /v2-beta with stackId...
    status, made = await send(client, "POST", "/v1/services", {
        "name": "app", "environmentId": env_id, "launchConfig": {"imageUuid": "docker:x"}})
    assert status == 201, made
    assert made["environmentId"] == env_id and "stackId" not in made
    assert made["links"]["environment"].endswith(f"/v1/environments/{env_id}")
    assert "stack" not in made["links"]
    _, seen = await send(client, "GET", f"/v2-beta/services/{made['id']}")
    assert seen["stackId"] == stack["id"] and "environmentId" not in seen
    assert seen["links"]["stack"].endswith(f"/v2-beta/stacks/{stack['id']}")

    # ...and one made on /v2-beta with stackId reads on /v1 with environmentId.
    _, other = await send(client, "POST", "/v2-beta/services", {
        "name": "other", "stackId": stack["id"], "launchConfig": {"imageUuid": "docker:x"}})
    _, seen = await send(client, "GET", f"/v1/services/{other['id']}")
    assert seen["environmentId"] == env_id and "stackId" not in seen


async def test_v1_filters_sorts_includes_and_follows_links_by_environment(
        client: TestClient) -> None:
    _, env = await send(client, "POST", "/v1/environments",
                        {"name": "linked", "dockerCompose": COMPOSE})
    _, other = await send(client, "POST", "/v1/environments", {"name": "empty"})
    status, listed = await send(client, "GET", f"/v1/services?environmentId={env['id']}")
    assert status == 200 and {s["name"] for s in listed["data"]} == {"web", "db"}
    assert listed["filters"]["environmentId"] == [{"modifier": "eq", "value": env["id"]}]
    assert "stackId" not in listed["filters"]
    _, none = await send(client, "GET", f"/v1/services?environmentId={other['id']}")
    assert none["data"] == []
    _, rest = await send(client, "GET", f"/v1/services?environmentId_ne={env['id']}")
    assert all(s["environmentId"] != env["id"] for s in rest["data"])

    _, with_env = await send(client, "GET",
                             f"/v1/services?environmentId={env['id']}&include=environment")
    assert all(s["environment"]["id"] == env["id"] and
               s["environment"]["type"] == "environment" for s in with_env["data"])
    _, one = await send(client, "GET",
                        f"/v1/environments/{env['id']}?include=services")
    assert {s["name"] for s in one["services"]} == {"web", "db"}
    assert all(s["environmentId"] == env["id"] for s in one["services"])

    service = listed["data"][0]
    status, linked = await send(client, "GET", path(service["links"]["environment"]))
    assert status == 200 and linked["id"] == env["id"]
    status, via_link = await send(client, "GET", f"/v1/services/{service['id']}/environment")
    assert status == 200 and via_link["id"] == env["id"]
    status, services = await send(client, "GET", path(env["links"]["services"]))
    assert status == 200 and {s["name"] for s in services["data"]} == {"web", "db"}


async def test_v1_schemas_name_the_environment_and_v2_beta_the_stack(
        client: TestClient) -> None:
    status, schema = await send(client, "GET", "/v1/schemas/environment")
    assert status == 200
    assert schema["id"] == "environment" and schema["pluralName"] == "environments"
    assert schema["baseType"] == "environment"
    assert schema["links"]["collection"].endswith("/v1/environments")
    assert schema["resourceActions"]["upgrade"] == {"input": "environmentUpgrade",
                                                    "output": "environment"}
    assert (await send(client, "GET", "/v1/schemas/environmentUpgrade"))[0] == 200
    assert (await send(client, "GET", "/v1/schemas/stack"))[0] == 404
    _, service = await send(client, "GET", "/v1/schemas/service")
    assert service["resourceFields"]["environmentId"]["type"] == "reference[environment]"
    assert "stackId" not in service["resourceFields"]
    assert "environmentId" in service["collectionFilters"]
    assert "environment" in service["includeableLinks"]

    _, v1 = await send(client, "GET", "/v1/schemas")
    ids = {s["id"] for s in v1["data"]}
    assert {"environment", "environmentUpgrade"} <= ids and not {"stack", "stackUpgrade"} & ids
    _, v2 = await send(client, "GET", "/v2-beta/schemas")
    ids = {s["id"] for s in v2["data"]}
    assert {"stack", "stackUpgrade"} <= ids and not {"environment", "environmentUpgrade"} & ids
    _, root = await send(client, "GET", "/v1")
    assert "environments" in root["links"] and "stacks" not in root["links"]


async def test_v1_errors_name_environment_id(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v1/services", {
        "name": "orphan", "launchConfig": {"imageUuid": "docker:x"}})
    assert status == 422 and body["code"] == "MissingRequired"
    assert body["fieldName"] == "environmentId"
    status, body = await send(client, "POST", "/v1/services", {
        "name": "orphan", "environmentId": "1e999999", "launchConfig": {"imageUuid": "x"}})
    assert status == 422 and body["fieldName"] == "environmentId", body
    status, body = await send(client, "POST", "/v2-beta/services", {
        "name": "orphan", "launchConfig": {"imageUuid": "docker:x"}})
    assert status == 422 and body["fieldName"] == "stackId"


async def test_v1_change_events_name_environments(client: TestClient) -> None:
    v1 = await client.ws_connect("/v1/subscribe?eventNames=resource.change", headers=ADMIN)
    v2 = await client.ws_connect("/v2-beta/subscribe?eventNames=resource.change",
                                 headers=ADMIN)
    _, env = await send(client, "POST", "/v1/environments", {"name": "watched"})
    event = await next_change(v1, "environment")
    assert event["resourceId"] == env["id"]
    resource = event["data"]["resource"]
    assert resource["type"] == "environment" and resource["id"] == env["id"]
    assert resource["links"]["self"].endswith(f"/v1/environments/{env['id']}")
    event = await next_change(v2, "stack")
    assert event["resourceId"] == "1st" + number(env["id"])
    assert event["data"]["resource"]["type"] == "stack"
    await v1.close()
    await v2.close()


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.origin}/v1/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_cattle_on_v1_makes_environments_and_follows_their_services(
        api: cattle.Client) -> None:
    assert list(api.list_environment()) == []
    env = api.wait_success(api.create_environment(name="shop", dockerCompose=COMPOSE))
    assert env.type == "environment" and env.state == "active" and env.id.startswith("1e")
    assert [e.id for e in api.list_environment()] == [env.id]
    assert api.by_id_environment(env.id).name == "shop"
    services = {s.name: s for s in env.services()}
    assert set(services) == {"web", "db"}
    assert all(s.environmentId == env.id for s in services.values())
    assert services["web"].environment().id == env.id
    assert {s.name for s in api.list_service(environmentId=env.id)} == {"web", "db"}
    removed = api.wait_success(api.delete(env))
    assert removed.state == "removed"
