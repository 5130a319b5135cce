"""The Rancher REST framework over a real socket: discovery, auth, collections, errors."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, basic
from tests.support.timing import seconds


async def get(client: TestClient, path: str, **kw: Any) -> tuple[int, Any, Any]:
    resp = await client.get(path, headers={**kw.pop("headers", ADMIN)}, **kw)
    return resp.status, await resp.json(), resp.headers


async def send(client: TestClient, method: str, path: str, body: Any = None,
               raw: bytes | None = None, **kw: Any) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    resp = await client.request(method, path, data=data,
                                headers={**kw.pop("headers", ADMIN)}, **kw)
    return resp.status, await resp.json()


async def active(client: TestClient, path: str) -> None:
    """Wait (bounded) until the resource at ``path`` is active."""
    deadline = time.monotonic() + seconds(10)
    while (await (await client.get(path, headers=ADMIN)).json())["state"] != "active":
        assert time.monotonic() < deadline, f"{path} never became active"
        await asyncio.sleep(0.02)


def base(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_every_response_names_the_schemas_url_absolutely(client: TestClient) -> None:
    for path in ("/", "/v1", "/v1/schemas", "/v1/hosts", "/v1/nothing", "/v2-beta"):
        resp = await client.get(path, headers=ADMIN)
        assert resp.headers["X-API-Schemas"].startswith("http://"), path
    resp = await client.get("/v1/hosts")  # no credentials: an error still carries it
    assert resp.status == 401
    assert resp.headers["X-API-Schemas"] == f"{base(client)}/v1/schemas"


async def test_missing_or_wrong_credentials_get_401_json_with_challenge(
        client: TestClient) -> None:
    for headers in ({}, basic("TESTADMINACCESSKEY01", "wrong"), basic("nobody", "x")):
        resp = await client.get("/v1/hosts", headers=headers)
        body = await resp.json()
        assert resp.status == 401
        assert body["type"] == "error" and body["status"] == 401
        assert body["code"] == "Unauthorized" and body["message"]
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
    resp = await client.get("/v1/hosts", headers={"X-API-No-Challenge": "true"})
    assert "WWW-Authenticate" not in resp.headers
    resp = await client.get("/v1/hosts", headers={"Authorization": "Basic !!!notbase64"})
    assert resp.status == 401


async def test_version_root_links_collections_and_schemas(client: TestClient) -> None:
    status, body, _ = await get(client, "/v1")
    assert status == 200 and body["type"] == "apiVersion"
    assert body["links"]["schemas"] == f"{base(client)}/v1/schemas"
    assert body["links"]["hosts"] == f"{base(client)}/v1/hosts"
    status, versions, _ = await get(client, "/")
    assert [v["id"] for v in versions["data"]] == ["v1", "v2-beta"]


async def test_schemas_describe_types_fields_actions_and_filters(client: TestClient) -> None:
    status, body, _ = await get(client, "/v1/schemas")
    assert status == 200 and body["type"] == "collection"
    ids = {s["id"] for s in body["data"]}
    assert {"account", "project", "apiKey", "registrationToken", "host"} <= ids
    status, host, _ = await get(client, "/v1/schemas/host")
    assert host["type"] == "schema"
    assert host["links"]["collection"] == f"{base(client)}/v1/hosts"
    assert host["collectionMethods"] == ["GET"]
    assert "DELETE" in host["resourceMethods"]
    assert host["resourceFields"]["state"]["type"] == "enum"
    assert "disconnected" in host["resourceFields"]["state"]["options"]
    assert set(host["resourceActions"]) >= {"activate", "deactivate", "remove", "purge"}
    assert "lt" in host["collectionFilters"]["memory"]["modifiers"]
    assert "prefix" in host["collectionFilters"]["name"]["modifiers"]
    status, missing, _ = await get(client, "/v1/schemas/nothing")
    assert status == 404 and missing["code"] == "NotFound"


async def test_resources_carry_rancher_common_fields_and_absolute_links(
        client: TestClient) -> None:
    _, projects, _ = await get(client, "/v1/projects")
    project = projects["data"][0]
    for name in ("id", "type", "baseType", "kind", "uuid", "name", "description", "state",
                 "transitioning", "transitioningMessage", "transitioningProgress", "created",
                 "createdTS", "removed", "links", "actions"):
        assert name in project, name
    assert project["id"].startswith("1a") and project["name"] == "Default"
    assert project["transitioning"] == "no"
    assert project["created"].endswith("Z") and isinstance(project["createdTS"], int)
    assert project["links"]["self"] == f"{base(client)}/v1/projects/{project['id']}"
    assert all(url.startswith("http://") for url in project["actions"].values())
    assert set(project["actions"]) == {"deactivate", "remove", "update"}


async def test_api_key_secret_is_shown_once_and_works(client: TestClient) -> None:
    status, key = await send(client, "POST", "/v1/apikeys", {"name": "ci"})
    assert status == 201 and key["secretValue"] and key["publicValue"]
    status, again, _ = await get(client, f"/v1/apikeys/{key['id']}")
    assert again["secretValue"] is None and "secretHash" not in again
    await active(client, f"/v1/apikeys/{key['id']}")  # created registering, as in Rancher
    auth = basic(key["publicValue"], key["secretValue"])
    status, _, _ = await get(client, "/v1/hosts", headers=auth)
    assert status == 200
    status, deactivated = await send(client, "POST", f"/v1/apikeys/{key['id']}?action=deactivate")
    assert deactivated["state"] == "inactive"
    status, _, _ = await get(client, "/v1/hosts", headers=auth)
    assert status == 401


async def test_actions_are_offered_and_accepted_only_in_valid_states(
        client: TestClient) -> None:
    _, key = await send(client, "POST", "/v1/apikeys", {})
    assert "activate" not in key["actions"]
    status, body = await send(client, "POST", f"/v1/apikeys/{key['id']}?action=activate")
    assert status == 422 and body["code"] == "ActionNotAvailable"
    status, body = await send(client, "POST", f"/v1/apikeys/{key['id']}?action=explode")
    assert status == 422 and body["code"] == "InvalidAction"
    status, body = await send(client, "POST", f"/v1/apikeys/{key['id']}")
    assert status == 405


async def test_delete_returns_the_removed_resource_still_readable(client: TestClient) -> None:
    _, token = await send(client, "POST", "/v1/registrationtokens", {})
    status, removed = await send(client, "DELETE", f"/v1/registrationtokens/{token['id']}")
    assert status == 200 and removed["state"] == "removed" and removed["removed"]
    assert removed["command"] is None
    status, again, _ = await get(client, f"/v1/registrationtokens/{token['id']}")
    assert status == 200 and again["state"] == "removed"
    assert set(again["actions"]) == {"purge"}


async def test_pagination_follows_next_links_keeping_filters(client: TestClient) -> None:
    for i in range(5):
        await send(client, "POST", "/v1/apikeys", {"name": f"page-{i}"})
    await send(client, "POST", "/v1/apikeys", {"name": "other"})
    seen: list[str] = []
    url: str | None = "/v1/apikeys?name_prefix=page-&limit=2"
    while url:
        resp = await client.get(url, headers=ADMIN)
        body = await resp.json()
        assert body["pagination"]["limit"] == 2
        seen += [k["name"] for k in body["data"]]
        url = body["pagination"]["next"]
        assert body["pagination"]["partial"] is (url is not None)
        if url:
            assert url.startswith(base(client)) and "name_prefix=page-" in url
            url = url[len(base(client)):]
    assert seen == [f"page-{i}" for i in range(5)]


async def test_filters_with_modifiers_and_sort(client: TestClient) -> None:
    for name in ("alpha", "beta", "gamma"):
        await send(client, "POST", "/v1/apikeys", {"name": name})
    _, body, _ = await get(client, "/v1/apikeys?name_like=%25a&sort=name&order=desc")
    assert [k["name"] for k in body["data"]] == ["gamma", "beta", "alpha"]
    _, body, _ = await get(client, "/v1/apikeys?name_ne=beta&name_notnull=&sort=name")
    assert [k["name"] for k in body["data"]] == ["admin", "alpha", "gamma"]
    _, body, _ = await get(client, "/v1/apikeys?name=beta")
    assert [k["name"] for k in body["data"]] == ["beta"]
    assert body["filters"]["name"] == [{"modifier": "eq", "value": "beta"}]
    _, body, _ = await get(client, "/v1/apikeys?description_null=&unknownParam=1&_role=x")
    assert len(body["data"]) >= 4
    _, body, _ = await get(client, "/v1/apikeys?sort=name")
    assert body["sortLinks"]["name"].startswith("http://")


async def test_ids_and_dates_filter_in_order_as_in_rancher(client: TestClient) -> None:
    made = [(await send(client, "POST", "/v1/apikeys", {"name": f"k{i}"}))[1] for i in range(3)]
    first, middle, last = (key["id"] for key in made)
    _, body, _ = await get(client, f"/v1/apikeys?id_gt={first}&id_lte={last}&sort=id")
    assert [k["id"] for k in body["data"]] == [middle, last]
    _, body, _ = await get(client, f"/v1/apikeys?id_ne={middle}&name_prefix=k&sort=id")
    assert [k["id"] for k in body["data"]] == [first, last]
    created = made[2]["created"]
    _, body, _ = await get(client, "/v1/apikeys", params={"created_gte": created,
                                                          "name_prefix": "k"})
    assert last in [k["id"] for k in body["data"]]
    assert all(k["createdTS"] >= made[2]["createdTS"] for k in body["data"])
    _, body, _ = await get(client, "/v1/apikeys", params={
        "created_lt": str(made[0]["createdTS"]), "name_prefix": "k"})
    assert body["data"] == []
    _, body, _ = await get(client, "/v1/apikeys?created_notnull=&name_prefix=k")
    assert len(body["data"]) == 3


async def test_references_and_state_filter_by_equality(client: TestClient) -> None:
    _, key = await send(client, "POST", "/v1/apikeys", {"name": "mine"})
    _, body, _ = await get(client, f"/v1/apikeys?accountId={key['accountId']}&name=mine")
    assert [k["id"] for k in body["data"]] == [key["id"]]
    _, body, _ = await get(client, f"/v1/apikeys?accountId_ne={key['accountId']}&name=mine")
    assert body["data"] == []
    _, body, _ = await get(client, "/v1/apikeys?state_ne=removed&accountId_notnull=&name=mine")
    assert [k["id"] for k in body["data"]] == [key["id"]]


async def test_filters_and_modifiers_rancher_lacks_get_422(client: TestClient) -> None:
    cases = {
        "/v1/apikeys?state_like=act%25": "state",
        "/v1/apikeys?accountId_prefix=1a": "accountId",
        "/v1/apikeys?transitioning=no": "transitioning",
        "/v1/containers?imageUuid=docker:busybox": "imageUuid",
        "/v1/apikeys?id_gt=1h5": "id",          # a host's id has no place among api keys
        "/v1/apikeys?created_gt=soon": "created",
    }
    for path, field_name in cases.items():
        status, body, _ = await get(client, path)
        assert status == 422, path
        assert body["fieldName"] == field_name, path


async def test_bad_filters_sort_and_paging_get_422_naming_the_field(client: TestClient) -> None:
    cases = {
        "/v1/hosts?memory_gt=lots": ("InvalidFormat", "memory"),
        "/v1/hosts?name_lt=x": ("InvalidOption", "name"),
        "/v1/hosts?info=x": ("InvalidOption", "info"),
        "/v1/hosts?sort=nonexistent": ("InvalidOption", "sort"),
        "/v1/hosts?order=sideways": ("InvalidOption", "order"),
        "/v1/hosts?limit=ten": ("InvalidFormat", "limit"),
        "/v1/hosts?limit=0": ("MinLimitExceeded", "limit"),
        "/v1/hosts?marker=forged": ("InvalidFormat", "marker"),
    }
    for path, (code, field_name) in cases.items():
        status, body, _ = await get(client, path)
        assert status == 422, path
        assert (body["code"], body["fieldName"]) == (code, field_name), path


async def test_bad_bodies_get_clear_4xx_errors(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v1/projects", raw=b"{not json")
    assert status == 422 and body["code"] == "InvalidBodyContent"
    status, body = await send(client, "POST", "/v1/projects", raw=b"[1, 2]")
    assert status == 422 and body["code"] == "InvalidBodyContent"
    status, body = await send(client, "POST", "/v1/projects", {})
    assert (status, body["code"], body["fieldName"]) == (422, "MissingRequired", "name")
    status, body = await send(client, "POST", "/v1/projects", {"name": 5})
    assert (status, body["code"], body["fieldName"]) == (422, "InvalidType", "name")
    status, body = await send(client, "POST", "/v1/projects", {"name": "x" * 300})
    assert (status, body["code"]) == (422, "MaxLengthExceeded")
    status, body = await send(client, "POST", "/v1/projects", {"name": "p", "colour": "red"})
    assert (status, body["code"], body["fieldName"]) == (422, "InvalidField", "colour")
    resp = await client.post("/v1/projects", headers=ADMIN,
                             data=io.BytesIO(b"{" + b" " * 2_000_000 + b"}"))
    assert resp.status == 413 and (await resp.json())["type"] == "error"


async def test_json_body_parses_without_content_type_and_ignores_client_options(
        client: TestClient) -> None:
    resp = await client.post("/v1/projects", data=b'{"name": "Staging", "_access_key": "x"}',
                             headers={**ADMIN, "Content-Type": ""})
    body = await resp.json()
    assert resp.status == 201 and body["name"] == "Staging"


async def test_unknown_types_ids_and_methods_get_404_and_405(client: TestClient) -> None:
    status, body, _ = await get(client, "/v1/widgets")
    assert (status, body["code"]) == (404, "NotFound")
    status, body, _ = await get(client, "/v1/hosts/1h999")
    assert (status, body["code"]) == (404, "NotFound")
    status, body, _ = await get(client, "/v1/hosts/1a1")  # an account's id is not a host's
    assert status == 404
    status, body, _ = await get(client, "/v1/hosts/garbage")
    assert status == 404
    status, body = await send(client, "POST", "/v1/hosts", {})
    assert status == 405 and body["type"] == "error"
    status, body = await send(client, "PATCH", "/v1/hosts")
    assert status == 405
    resp = await client.get("/no/such/page", headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["type"] == "error"


async def test_project_scoping_by_url_and_by_header(client: TestClient) -> None:
    _, staging = await send(client, "POST", "/v1/projects", {"name": "Staging"})
    _, default, _ = await get(client, "/v1/projects?name=Default")
    default_id = default["data"][0]["id"]
    status, token = await send(client, "POST", f"/v1/projects/{staging['id']}/registrationtokens/")
    assert status == 201 and token["accountId"] == staging["id"]
    assert token["links"]["self"].startswith(f"{base(client)}/v1/projects/{staging['id']}/")
    _, scoped, headers = await get(client, f"/v1/projects/{staging['id']}/registrationtokens")
    assert [t["id"] for t in scoped["data"]] == [token["id"]]
    assert headers["X-API-Schemas"] == f"{base(client)}/v1/projects/{staging['id']}/schemas"
    _, by_header, _ = await get(client, "/v1/registrationtokens",
                                headers={**ADMIN, "X-API-Project-Id": staging["id"]})
    assert [t["id"] for t in by_header["data"]] == [token["id"]]
    _, unscoped, _ = await get(client, "/v1/registrationtokens")
    # As in Rancher, the admin with no environment in scope lists across environments.
    assert {default_id, staging["id"]} <= {t["accountId"] for t in unscoped["data"]}
    status, _, _ = await get(client, f"/v1/projects/{default_id}/registrationtokens/{token['id']}")
    assert status == 404
    status, body, _ = await get(client, "/v1/projects/1a999/hosts")
    assert status == 404 and "environment" in body["message"]


async def test_v2_beta_serves_the_same_resources(client: TestClient) -> None:
    status, body, headers = await get(client, "/v2-beta/projects")
    assert status == 200 and body["data"][0]["links"]["self"].startswith(
        f"{base(client)}/v2-beta/projects/")
    assert headers["X-API-Schemas"] == f"{base(client)}/v2-beta/schemas"


async def test_update_by_put_changes_updatable_fields_only(client: TestClient) -> None:
    _, project = await send(client, "POST", "/v1/projects", {"name": "Old"})
    status, updated = await send(client, "PUT", f"/v1/projects/{project['id']}",
                                 {"name": "New", "uuid": "ignored", "description": "d"})
    assert status == 200 and updated["name"] == "New" and updated["description"] == "d"
    assert updated["uuid"] == project["uuid"]
    status, body = await send(client, "PUT", f"/v1/projects/{project['id']}", {"name": None})
    assert (status, body["code"]) == (422, "NotNullable")
