"""Accounts and API keys as in Rancher 1.6, through the real ``cattle`` client: a key made
with ``accountId`` belongs to (and acts as) that account; given ``publicValue`` and
``secretValue`` are the key's; an account keeps the ``uuid`` it was created with; accounts,
keys and registration tokens start ``registering`` and become ``active``; the last active
admin account can be neither removed nor deactivated."""

from __future__ import annotations

import asyncio
from typing import Any

import cattle
import gdapi
import pytest
import requests
from aiohttp.test_utils import TestClient

from server.api.handlers import SERVICES
from server.resources.accounts import active_admins
from server.store import NewRecord
from shared.ids import parse_id
from tests.api.test_admin_scope import client_for, run
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY


@pytest.fixture
async def api(client: TestClient) -> cattle.Client:
    return await run(client_for, client)


def refusal(error: pytest.ExceptionInfo[gdapi.ApiError]) -> tuple[int, str, str | None]:
    body = error.value.error
    return body.status, body.code, getattr(body, "fieldName", None)


def get_as(client: TestClient, access: str, secret: str, path: str) -> requests.Response:
    return requests.get(str(client.make_url(path)), auth=(access, secret), timeout=10)


async def admin_account(api: cattle.Client) -> Any:
    return (await run(api.list_account, kind="admin", state="active")).data[0]


@pytest.mark.parametrize("create", ["create_account", "create_api_key",
                                    "create_registration_token"])
async def test_accounts_keys_and_tokens_start_registering_and_become_active(
        api: cattle.Client, create: str) -> None:
    created = await run(getattr(api, create))
    assert (created.state, created.transitioning) == ("registering", "yes")
    done = await run(api.wait_success, created)
    assert (done.state, done.transitioning) == ("active", "no")


async def test_a_key_made_for_another_account_belongs_to_it_and_acts_as_it(
        client: TestClient, api: cattle.Client) -> None:
    user = await run(api.wait_success, await run(api.create_account, kind="user", name="u"))
    created = await run(api.create_api_key, accountId=user.id)
    key = await run(api.wait_success, created)
    assert key.accountId == user.id
    assert [k.id for k in await run(api.list_api_key, accountId=user.id)] == [key.id]
    # The user's key is not an admin's: it reaches no admin resource.
    as_user = await run(get_as, client, key.publicValue, created.secretValue, "/v1/projects")
    assert as_user.status_code == 404
    assert as_user.headers["X-API-Account-Id"] == user.id
    mine = await run(api.wait_success, await run(api.create_api_key))
    assert mine.accountId == (await admin_account(api)).id


@pytest.mark.parametrize("owner", ["1a999", "project", "removed"])
async def test_a_key_for_a_missing_removed_or_non_account_is_invalid_reference(
        api: cattle.Client, owner: str) -> None:
    if owner == "project":
        owner = (await run(api.list_project)).data[0].id
    elif owner == "removed":
        gone = await run(api.wait_success, await run(api.create_account, name="gone"))
        owner = (await run(api.wait_success, await run(api.delete, gone))).id
    with pytest.raises(gdapi.ApiError) as refused:
        await run(api.create_api_key, accountId=owner)
    assert refusal(refused) == (422, "InvalidReference", "accountId")


async def test_given_public_and_secret_values_are_the_keys(client: TestClient,
                                                           api: cattle.Client) -> None:
    key = await run(api.create_api_key, publicValue="MYACCESSKEY", secretValue="my-secret")
    assert (key.publicValue, key.secretValue) == ("MYACCESSKEY", "my-secret")
    await run(api.wait_success, key)
    mine = await run(cattle.Client, url=str(client.make_url("/v1/schemas")),
                     access_key="MYACCESSKEY", secret_key="my-secret",
                     headers={"Accept": "application/json"})
    assert (await run(mine.list_project)).data[0].name == "Default"
    with pytest.raises(gdapi.ApiError) as duplicate:
        await run(api.create_api_key, publicValue="MYACCESSKEY", secretValue="other")
    assert refusal(duplicate) == (422, "NotUnique", "publicValue")
    with pytest.raises(gdapi.ApiError) as taken:  # the admin key's own access key
        await run(api.create_api_key, publicValue=ACCESS_KEY)
    assert refusal(taken) == (422, "NotUnique", "publicValue")
    with pytest.raises(gdapi.ApiError) as colon:
        await run(api.create_api_key, publicValue="a:b")
    assert refusal(colon) == (422, "InvalidCharacters", "publicValue")


async def test_an_account_keeps_the_uuid_it_was_created_with(api: cattle.Client) -> None:
    account = await run(api.create_account, uuid="team-alpha-uuid", name="alpha")
    assert account.uuid == "team-alpha-uuid"
    assert (await run(api.by_id_account, account.id)).uuid == "team-alpha-uuid"
    with pytest.raises(gdapi.ApiError) as duplicate:
        await run(api.create_account, uuid="team-alpha-uuid")
    assert refusal(duplicate) == (422, "NotUnique", "uuid")


@pytest.mark.parametrize("how", ["remove", "deactivate", "delete"])
async def test_the_last_active_admin_can_be_neither_removed_nor_deactivated(
        client: TestClient, api: cattle.Client, how: str) -> None:
    admin = await admin_account(api)
    with pytest.raises(gdapi.ApiError) as refused:
        await run(api.delete if how == "delete" else getattr(admin, how), *(
            [admin] if how == "delete" else []))
    status, code, _ = refusal(refused)
    assert (status, code) == (422, "ActionNotAvailable")
    assert "last active admin" in refused.value.error.message
    assert (await run(api.by_id_account, admin.id)).state == "active"
    still = await run(get_as, client, ACCESS_KEY, SECRET_KEY, "/v1/projects")
    assert still.status_code == 200


async def test_an_admin_can_go_while_another_active_admin_stays(api: cattle.Client) -> None:
    admin = await admin_account(api)
    second = await run(api.wait_success,
                       await run(api.create_account, kind="admin", name="second"))
    off = await run(api.wait_success, await run(second.deactivate))
    assert off.state == "inactive"
    with pytest.raises(gdapi.ApiError) as refused:  # the only active admin again
        await run(admin.deactivate)
    assert refusal(refused)[1] == "ActionNotAvailable"
    on = await run(api.wait_success, await run(off.activate))
    removed = await run(api.wait_success, await run(api.delete, on))
    assert removed.state == "removed"


async def test_two_admins_removing_each_other_at_once_leave_one(
        client: TestClient, api: cattle.Client) -> None:
    first = await admin_account(api)
    second = await run(api.wait_success,
                       await run(api.create_account, kind="admin", name="second"))

    async def remove(account_id: str) -> int:
        resp = await client.post(f"/v1/accounts/{account_id}?action=remove", headers=ADMIN)
        return resp.status

    statuses = await asyncio.gather(remove(first.id), remove(second.id))
    assert sorted(statuses) == [200, 422]
    # Our own key may be gone with its account: ask the store.
    assert len(await active_admins(client.app[SERVICES].store)) == 1


async def get_json(client: TestClient, url: str) -> Any:
    resp = await client.get(url.replace(str(client.make_url("")).rstrip("/"), ""),
                            headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_an_environment_links_to_its_own_resources(
        client: TestClient, api: cattle.Client) -> None:
    project = (await get_json(client, "/v1/projects"))["data"][0]
    token = await run(api.wait_success, await run(api.create_registration_token))
    links = project["links"]
    assert {"hosts", "instances", "volumes", "storagePools", "credentials"} <= set(links)
    credentials = await get_json(client, links["credentials"])
    assert credentials["resourceType"] == "credential"
    assert token.id in [c["id"] for c in credentials["data"]]
    # A link named after a collection is that collection, scoped to the environment.
    hosts = await get_json(client, links["hosts"])
    assert (hosts["resourceType"], hosts["data"]) == ("host", [])
    included = await get_json(client, f"/v1/projects/{project['id']}?include=credentials")
    assert [c["id"] for c in included["credentials"]] == [
        c["id"] for c in credentials["data"]]


async def test_an_account_links_to_its_api_keys_and_owns_no_hosts(
        client: TestClient, api: cattle.Client) -> None:
    user = await run(api.wait_success, await run(api.create_account, kind="user", name="u"))
    key = await run(api.wait_success, await run(api.create_api_key, accountId=user.id))
    account = await get_json(client, f"/v1/accounts/{user.id}")
    credentials = await get_json(client, account["links"]["credentials"])
    assert [c["id"] for c in credentials["data"]] == [key.id]
    assert (await get_json(client, account["links"]["hosts"]))["data"] == []


async def test_an_environment_gathers_its_hosts_and_containers_parts(
        client: TestClient) -> None:
    project = (await get_json(client, "/v1/projects"))["data"][0]
    project_id = parse_id(project["id"], "1a")
    store = client.app[SERVICES].store
    host = await store.create(NewRecord(
        type="host", kind="docker", state="active", name="h1", project_id=project_id,
        data={"hostname": "h1", "agentIpAddress": "10.0.0.9", "reportedLabels": {"zone": "a"}}))
    await store.create(NewRecord(
        type="container", kind="container", state="running", project_id=project_id,
        data={"hostId": host.id, "labels": {"app": "web"}, "spec": {
            "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}],
            "binds": [{"source": "/srv", "destination": "/srv", "mode": "ro"}]}}))
    links = project["links"]

    async def data(name: str) -> list[Any]:
        collection = await get_json(client, links[name])
        return list(collection["data"])

    assert sorted((label["key"], label["kind"]) for label in await data("labels")) == [
        ("app", "container"), ("zone", "host")]
    assert [(p["privatePort"], p["publicPort"]) for p in await data("ports")] == [(80, 8080)]
    assert [(m["kind"], m["path"]) for m in await data("mounts")] == [("bind", "/srv")]
    assert [a["address"] for a in await data("ipAddresses")] == ["10.0.0.9"]
    assert [h["name"] for h in await data("physicalHosts")] == ["h1"]
    # An account holds no hosts nor containers: its lists are empty.
    account = await get_json(client, "/v1/accounts")
    assert (await get_json(client, account["data"][0]["links"]["labels"]))["data"] == []


async def test_the_update_action_is_offered_while_active_or_inactive(
        api: cattle.Client) -> None:
    key = await run(api.wait_success, await run(api.create_api_key))
    assert "update" in vars(key.actions)
    updated = await run(api.action, key, "update")
    assert (updated.id, updated.state) == (key.id, "active")
    inactive = await run(api.wait_success, await run(api.action, key, "deactivate"))
    assert "update" in vars(inactive.actions)
    removed = await run(api.wait_success, await run(api.action, inactive, "remove"))
    assert "update" not in vars(removed.actions)


async def test_an_environment_keeps_the_uuid_it_was_created_with(api: cattle.Client) -> None:
    project = await run(api.create_project, name="with-uuid", uuid="env-uuid-1")
    assert project.uuid == "env-uuid-1"
    with pytest.raises(gdapi.ApiError) as taken:
        await run(api.create_project, name="again", uuid="env-uuid-1")
    assert refusal(taken) == (422, "NotUnique", "uuid")
