"""The admin's reach, as in Rancher 1.6: with no environment in scope it lists across
environments, filters by ``accountId`` and creates where ``accountId`` says; with one in scope
(URL or ``X-API-Project-Id``) it stays there. Driven through the real ``cattle`` client (in a
thread: it blocks) against the in-process server, with a scripted agent for the hosts.
Responses name the caller's account and address (``X-API-Account-Id``, ``X-API-Client-Ip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cattle
import gdapi
import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from server.api.dialect import dialect_for
from server.api.handlers import SERVICES
from server.api.schema import Scope
from server.app import create_app
from tests.api.agent_double import FACTS, connect, hello, register
from tests.api.test_placement_concurrency import answer_instructions
from tests.conftest import ADMIN, make_settings
from tests.support.processes import ACCESS_KEY, SECRET_KEY

T = TypeVar("T")
HEADERS = {"Accept": "application/json"}


async def run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call, off the loop the server runs on."""
    return await asyncio.to_thread(call, *args, **kwargs)


def client_for(client: TestClient, path: str = "/v1/schemas",
               **headers: str) -> cattle.Client:
    return cattle.Client(url=str(client.make_url(path)), access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={**HEADERS, **headers})


@dataclass
class Environment:
    id: str
    host_id: str


@pytest.fixture
async def api(client: TestClient) -> cattle.Client:
    return await run(client_for, client)


@pytest.fixture
async def other_env(client: TestClient, api: cattle.Client) -> AsyncIterator[Environment]:
    """A second environment with one active host, whose agent carries out every
    instruction at once."""
    project = await run(api.create_project, name="Other")
    token = await run(api.create_registration_token, accountId=project.id)
    token = await run(api.wait_success, token)
    creds = await register(client, key="b" * 64, tok=token.token)
    ws: ClientWebSocketResponse = await connect(client, creds)
    await hello(ws, {**FACTS, "hostname": "other-1"})
    task = asyncio.create_task(answer_instructions(ws))
    try:
        host = await run(api.wait_success, await run(api.by_id_host, creds["hostId"]))
        assert host.state == "active"
        yield Environment(project.id, host.id)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ws.close()


async def default_env(api: cattle.Client) -> str:
    return str((await run(api.list_project, name="Default")).data[0].id)


async def test_the_admin_with_no_environment_in_scope_lists_hosts_of_every_environment(
        client: TestClient, api: cattle.Client, other_env: Environment) -> None:
    hosts = await run(api.list_host)
    assert [(h.id, h.accountId) for h in hosts] == [(other_env.host_id, other_env.id)]
    default = await default_env(api)
    by_url = await run(client_for, client, f"/v1/projects/{default}")
    assert list(await run(by_url.list_host)) == []
    by_header = await run(client_for, client, **{"X-API-Project-Id": default})
    assert list(await run(by_header.list_host)) == []
    assert await run(by_header.by_id_host, other_env.host_id) is None
    scoped = await run(client_for, client, f"/v1/projects/{other_env.id}")
    assert [h.id for h in await run(scoped.list_host)] == [other_env.host_id]


async def test_the_admin_creates_where_account_id_says_and_filters_by_it(
        client: TestClient, api: cattle.Client, other_env: Environment) -> None:
    default = await default_env(api)
    created = await run(api.create_container, imageUuid="docker:busybox",
                        accountId=other_env.id)
    assert created.accountId == other_env.id and created.hostId == other_env.host_id
    running = await run(api.wait_success, created)
    assert running.state == "running"
    listed = await run(api.list_container, accountId=other_env.id)
    assert [c.id for c in listed] == [created.id]
    assert list(await run(api.list_container, accountId=default)) == []
    assert [c.id for c in await run(api.list_container)] == [created.id]
    # Reads by id, links and actions work on a resource of any environment.
    assert (await run(running.host)).id == other_env.host_id
    labelled = await run(running.setlabels, labels={"team": "b"})
    assert labelled.labels.team == "b"
    hosts_containers = await run((await run(api.by_id_host, other_env.host_id)).containers)
    assert [c.id for c in hosts_containers] == [created.id]


@pytest.mark.parametrize("named", ["1a999", "removed", "host"])
async def test_creating_in_a_missing_or_removed_environment_is_invalid_reference(
        api: cattle.Client, other_env: Environment, named: str) -> None:
    if named == "removed":
        gone = await run(api.create_project, name="Gone")
        await run(api.wait_success, await run(api.delete, gone))
        named = gone.id
    elif named == "host":
        named = other_env.host_id
    with pytest.raises(gdapi.ApiError) as refused:
        await run(api.create_container, imageUuid="docker:busybox", accountId=named)
    assert (refused.value.error.status, refused.value.error.code,
            refused.value.error.fieldName) == (422, "InvalidReference", "accountId")


async def test_with_an_environment_in_scope_account_id_cannot_leave_it(
        client: TestClient, api: cattle.Client, other_env: Environment) -> None:
    default = await default_env(api)
    scoped = await run(client_for, client, f"/v1/projects/{default}")
    with pytest.raises(gdapi.ApiError) as refused:
        await run(scoped.create_registration_token, accountId=other_env.id)
    assert (refused.value.error.code, refused.value.error.fieldName) == \
        ("InvalidReference", "accountId")
    token = await run(scoped.create_registration_token, accountId=default)
    assert token.accountId == default
    assert list(await run(scoped.list_host, accountId=other_env.id)) == []


async def test_account_id_is_a_filter_of_every_environment_scoped_type(
        client: TestClient, api: cattle.Client) -> None:
    scoped = [t.schema.id for t in client.app[SERVICES].types.types()
              if t.schema.scope is Scope.PROJECT]
    assert {"host", "container", "registrationToken", "volume"} <= set(scoped)
    names = dialect_for("v1")  # the client reads /v1/schemas, where a stack is an environment
    for type_id in scoped:
        name = names.type_out(type_id)
        assert hasattr(api.schema.types[name].collectionFilters, "accountId"), name


# --- X-API-Account-Id and X-API-Client-Ip -------------------------------------------------


async def test_responses_name_the_callers_account_and_address(client: TestClient) -> None:
    resp = await client.get("/v1/projects", headers=ADMIN)
    accounts = await (await client.get("/v1/accounts?kind=admin", headers=ADMIN)).json()
    assert resp.headers["X-API-Account-Id"] == accounts["data"][0]["id"]
    assert resp.headers["X-API-Client-Ip"] == "127.0.0.1"
    forged = await client.get("/v1/projects",
                              headers={**ADMIN, "X-Forwarded-For": "203.0.113.9"})
    assert forged.headers["X-API-Client-Ip"] == "127.0.0.1"  # no proxy is trusted
    missing = await client.get("/v1/no-such-things", headers=ADMIN)
    assert missing.status == 404 and missing.headers["X-API-Account-Id"].startswith("1a")
    anonymous = await client.get("/v1/projects")
    assert anonymous.status == 401 and "X-API-Account-Id" not in anonymous.headers
    assert anonymous.headers["X-API-Client-Ip"] == "127.0.0.1"


@pytest.fixture
async def behind_proxy(tmp_path: Path, aiohttp_client: Any) -> TestClient:
    """The server with this machine's loopback as its trusted proxy."""
    settings = make_settings(tmp_path / "data",
                             trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    test_client: TestClient = await aiohttp_client(create_app(settings))
    return test_client


async def test_a_trusted_proxy_forwards_the_client_address(behind_proxy: TestClient) -> None:
    resp = await behind_proxy.get("/v1/projects", headers={
        **ADMIN, "X-Forwarded-For": "198.51.100.7, 127.0.0.2"})
    assert resp.status == 200
    # Read from the right: 127.0.0.2 is a trusted proxy too, 198.51.100.7 is not.
    assert resp.headers["X-API-Client-Ip"] == "198.51.100.7"
    plain = await behind_proxy.get("/v1/projects", headers=ADMIN)
    assert plain.headers["X-API-Client-Ip"] == "127.0.0.1"
    junk = await behind_proxy.get("/v1/projects",
                                  headers={**ADMIN, "X-Forwarded-For": "not-an-address"})
    assert junk.headers["X-API-Client-Ip"] == "127.0.0.1"

