"""The resource change stream over a websocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN


async def next_change(ws: ClientWebSocketResponse, resource_type: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if event["resourceType"] == resource_type:
            return dict(event)


async def test_changes_arrive_rendered_as_the_api_renders_them(client: TestClient) -> None:
    ws = await client.ws_connect("/v1/subscribe?eventNames=resource.change", headers=ADMIN)
    resp = await client.post("/v1/apikeys", data='{"name": "watched"}', headers=ADMIN)
    created = await resp.json()
    event = await next_change(ws, "apiKey")
    assert event["name"] == "resource.change" and event["resourceId"] == created["id"]
    resource = event["data"]["resource"]
    assert resource["name"] == "watched" and resource["links"]["self"].startswith("http://")
    assert resource["secretValue"] is None and "secretHash" not in resource
    await client.post(f"/v1/apikeys/{created['id']}?action=deactivate", headers=ADMIN)
    state = (await next_change(ws, "apiKey"))["data"]["resource"]["state"]
    if state == "active":  # the key's activation (created registering) came first
        state = (await next_change(ws, "apiKey"))["data"]["resource"]["state"]
    assert state == "inactive"
    await ws.close()


async def test_an_environment_subscription_sees_only_that_environment(client: TestClient) -> None:
    resp = await client.post("/v1/projects", data='{"name": "Staging"}', headers=ADMIN)
    staging = (await resp.json())["id"]
    ws = await client.ws_connect(f"/v1/projects/{staging}/subscribe", headers=ADMIN)
    await client.post("/v1/registrationtokens", headers=ADMIN)  # in Default: not sent
    resp = await client.post(f"/v1/projects/{staging}/registrationtokens", headers=ADMIN)
    token = await resp.json()
    event = await next_change(ws, "registrationToken")
    assert event["resourceId"] == token["id"]
    assert event["data"]["resource"]["accountId"] == staging
    await ws.close()


async def test_subscribing_needs_credentials_and_known_event_names(client: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/subscribe")
    assert refused.value.status == 401
    resp = await client.get("/v1/subscribe?eventNames=mystery", headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422 and body["fieldName"] == "eventNames"


async def test_a_subscriber_resumes_after_the_last_sequence_it_saw(client: TestClient) -> None:
    ws = await client.ws_connect("/v1/subscribe", headers=ADMIN)
    await client.post("/v1/apikeys", data='{"name": "first"}', headers=ADMIN)
    seen = await next_change(ws, "apiKey")
    await ws.close()
    names = [f"missed-{n}" for n in range(3)]
    for name in names:  # made while nobody listens
        await client.post("/v1/apikeys", data=json.dumps({"name": name}), headers=ADMIN)
    ws = await client.ws_connect(f"/v1/subscribe?since={seen['sequence']}", headers=ADMIN)
    resumed: list[dict[str, Any]] = []
    while len(resumed) < len(names):
        event = await next_change(ws, "apiKey")
        if event["data"]["resource"]["state"] == "registering":  # a create, not an activation
            resumed.append(event)
    await ws.close()
    assert [e["data"]["resource"]["name"] for e in resumed] == names
    sequences = [e["sequence"] for e in resumed]
    assert sequences == sorted(set(sequences)) and sequences[0] > seen["sequence"]


async def test_resuming_from_a_bad_sequence_number_is_a_422(client: TestClient) -> None:
    resp = await client.get("/v1/subscribe?since=soon", headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422 and body["fieldName"] == "since"


async def test_shutdown_closes_subscriptions_with_going_away(aiohttp_client: Any,
                                                             settings: Any) -> None:
    from server.app import create_app

    test_client: TestClient = await aiohttp_client(create_app(settings))
    ws = await test_client.ws_connect("/v1/subscribe", headers=ADMIN)
    closing = asyncio.ensure_future(test_client.server.close())
    msg = await ws.receive(timeout=10)
    await closing
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001
