"""Stacks and services over the API: a stack made from compose files posted as text, its
services and links, the 422s of bad files, exportconfig, and the service verbs, through the
real ``cattle`` client and over a real socket."""

from __future__ import annotations

import json
from typing import Any

import cattle
import pytest
import yaml
from aiohttp.test_utils import TestClient

from server.compose import parse_stack
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess

COMPOSE = """\
version: '2'
services:
  web:
    image: busybox
    command: httpd -f -p 80
    links:
      - db
      - db:database
    labels:
      tier: front
  db:
    image: busybox
    command: httpd -f -p 80
    environment:
      ROLE: db
"""
RANCHER = """\
version: '2'
services:
  web:
    scale: 2
    upgrade_strategy:
      batch_size: 1
      start_first: true
"""


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    return resp.status, await resp.json()


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.origin}/v2-beta/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_cattle_makes_a_stack_from_compose_files_and_exports_them_back(
        api: cattle.Client) -> None:
    stack = api.wait_success(api.create_stack(name="shop", dockerCompose=COMPOSE,
                                              rancherCompose=RANCHER))
    assert stack.state == "active" and stack.id.startswith("1st")
    services = {s.name: s for s in api.list_service(stackId=stack.id)}
    assert set(services) == {"web", "db"}
    web, db = services["web"], services["db"]
    assert web.scale == 2 and db.scale == 1 and web.state == "inactive"
    assert web.launchConfig.imageUuid == "docker:busybox"
    assert web.launchConfig.command == ["httpd", "-f", "-p", "80"]
    assert vars(web.linkedServices) == {"db": db.id, "database": db.id}
    assert vars(web.upgradeStrategy) == {"batchSize": 1, "startFirst": True}
    config = stack.exportconfig()
    again = parse_stack(config.dockerComposeConfig, config.rancherComposeConfig)
    assert again == parse_stack(COMPOSE, RANCHER)
    assert yaml.safe_load(config.dockerComposeConfig)["services"]["web"]["links"] == [
        "db", "db:database"]


def test_cattle_upgrades_a_stack_from_new_files_then_rolls_it_back(
        api: cattle.Client) -> None:
    stack = api.wait_success(api.create_stack(name="grow", dockerCompose=COMPOSE,
                                              rancherCompose=RANCHER,
                                              environment={"SIZE": "s"}))
    newer = COMPOSE.replace("ROLE: db", "ROLE: primary") + \
        "  cache:\n    image: busybox\n    command: httpd -f -p 81\n"
    stack = api.wait_success(stack.upgrade(dockerCompose=newer, environment={"SIZE": "m"}))
    assert stack.state == "upgraded"
    assert stack.dockerCompose == newer and vars(stack.environment) == {"SIZE": "m"}
    assert vars(stack.previousEnvironment) == {"SIZE": "s"}
    services = {s.name: s for s in api.list_service(stackId=stack.id)}
    assert set(services) == {"web", "db", "cache"}
    # Nothing runs (the stack did not start its services): db's new launch config is set
    # as it is, and cache is made but not started.
    assert services["db"].state == "inactive"
    assert vars(services["db"].launchConfig.environment) == {"ROLE": "primary"}
    assert services["cache"].state == "inactive"

    stack = api.wait_success(stack.rollback())
    assert stack.state == "active" and stack.dockerCompose == COMPOSE
    assert stack.previousEnvironment is None
    db = api.by_id_service(services["db"].id)
    assert vars(db.launchConfig.environment) == {"ROLE": "db"}
    assert api.by_id_service(services["cache"].id).state in ("removing", "removed")


async def test_an_upgrade_with_bad_files_is_a_422_and_changes_nothing(
        client: TestClient) -> None:
    status, stack = await send(client, "POST", "/v2-beta/stacks",
                               {"name": "steady", "dockerCompose": COMPOSE})
    assert status == 201
    status, body = await send(client, "POST", f"/v2-beta/stacks/{stack['id']}?action=upgrade",
                              {"dockerCompose": "services:\n  web:\n    image: [\n"})
    assert status == 422 and body["fieldName"] == "dockerCompose"
    assert "(line 4, column 1)" in body["message"]
    status, again = await send(client, "GET", f"/v2-beta/stacks/{stack['id']}")
    assert again["state"] == "active" and again["dockerCompose"] == COMPOSE


def test_cattle_lists_every_kind_of_service_under_services(api: cattle.Client) -> None:
    stack = api.create_stack(name="kinds")
    api.create_service(name="app", stackId=stack.id, launchConfig={"imageUuid": "docker:x"})
    api.create_dnsService(name="alias", stackId=stack.id)
    external = api.create_externalService(name="ext", stackId=stack.id,
                                          externalIpAddresses=["192.0.2.10"])
    kinds = {s.name: s.type for s in api.list_service(stackId=stack.id)}
    assert kinds == {"app": "service", "alias": "dnsService", "ext": "externalService"}
    assert api.by_id_service(external.id).externalIpAddresses == ["192.0.2.10"]


def test_service_links_are_set_added_and_removed(api: cattle.Client) -> None:
    stack = api.create_stack(name="links")
    one, two, three = (api.create_service(name=n, stackId=stack.id,
                                          launchConfig={"imageUuid": "docker:x"})
                       for n in ("one", "two", "three"))
    one = one.setservicelinks(serviceLinks=[{"serviceId": two.id, "name": "second"}])
    assert vars(one.linkedServices) == {"second": two.id}
    one = one.addservicelink(serviceLink={"serviceId": three.id})
    assert vars(one.linkedServices) == {"second": two.id, "three": three.id}
    one = one.removeservicelink(serviceLink={"serviceId": two.id, "name": "second"})
    assert vars(one.linkedServices) == {"three": three.id}


async def test_a_compose_syntax_error_is_a_422_with_line_and_column(
        client: TestClient) -> None:
    status, body = await send(client, "POST", "/v2-beta/stacks", {
        "name": "broken", "dockerCompose": "services:\n  web:\n    image: [busybox\n"})
    assert status == 422, body
    assert body["fieldName"] == "dockerCompose"
    assert "line 4, column 1" in body["message"]


async def test_unknown_compose_keys_are_all_listed_in_one_422(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v2-beta/stacks", {
        "name": "unknown", "dockerCompose":
            "version: '2'\nservices:\n  web:\n    image: busybox\n    colour: red\n"
            "    flavour: mint\n"})
    assert status == 422, body
    assert "colour" in body["message"] and "flavour" in body["message"]
    status, _ = await send(client, "GET", "/v2-beta/stacks?name=unknown")
    assert status == 200
    _, listed = await send(client, "GET", "/v2-beta/stacks?name=unknown")
    assert listed["data"] == []  # nothing was made


async def test_a_link_to_a_missing_service_is_a_422_naming_it(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v2-beta/stacks", {
        "name": "lonely", "dockerCompose":
            "version: '2'\nservices:\n  web:\n    image: busybox\n    links: [db]\n"})
    assert status == 422, body
    assert "db" in body["message"] and body["fieldName"] == "dockerCompose"


async def test_a_bad_launch_config_is_a_422_naming_its_field(client: TestClient) -> None:
    _, stack = await send(client, "POST", "/v2-beta/stacks", {"name": "bad"})
    status, body = await send(client, "POST", "/v2-beta/services", {
        "name": "web", "stackId": stack["id"],
        "launchConfig": {"imageUuid": "docker:x", "networkMode": "bogus"}})
    assert status == 422, body
    assert body["fieldName"] == "launchConfig.networkMode"
    status, body = await send(client, "POST", "/v2-beta/services", {
        "name": "web", "stackId": "1st999", "launchConfig": {"imageUuid": "docker:x"}})
    assert status == 422 and body["fieldName"] == "stackId", body


async def test_a_stack_name_must_be_a_dns_label_and_unique(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v2-beta/stacks", {"name": "no spaces"})
    assert status == 422 and body["fieldName"] == "name", body
    assert (await send(client, "POST", "/v2-beta/stacks", {"name": "once"}))[0] == 201
    status, body = await send(client, "POST", "/v2-beta/stacks", {"name": "once"})
    assert status == 422 and body["code"] == "NotUnique", body


async def test_removing_a_stack_removes_its_services(client: TestClient) -> None:
    _, stack = await send(client, "POST", "/v2-beta/stacks", {
        "name": "gone", "dockerCompose": COMPOSE})
    status, removing = await send(client, "DELETE", f"/v2-beta/stacks/{stack['id']}")
    assert status == 200 and removing["state"] in ("removing", "removed"), removing
    import asyncio

    for _ in range(100):
        _, services = await send(client, "GET", f"/v2-beta/services?stackId={stack['id']}")
        if all(s["state"] == "removed" for s in services["data"]):
            break
        await asyncio.sleep(0.05)
    assert [s["state"] for s in services["data"]] == ["removed", "removed"]
