"""A scripted agent speaking the real protocol over a real websocket, for session tests."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from shared import protocol
from tests.conftest import ADMIN, basic

FACTS: dict[str, Any] = {
    "hostname": "double-1",
    "labels": {"io.rancher.host.os": "linux", "zone": "a"},
    "info": {"memoryInfo": {"memTotal": 2048, "memAvailable": 1024},
             "cpuInfo": {"count": 2, "mhz": 2000.0},
             "diskInfo": {"mountPoints": {"/": {"total": 10000, "used": 1, "free": 9999}}},
             "osInfo": {"kernelVersion": "6.1.0", "dockerVersion": "20.10.24"}},
}


async def token(client: TestClient) -> str:
    resp = await client.get("/v1/registrationtokens", headers=ADMIN)
    return str((await resp.json())["data"][0]["token"])


async def register(client: TestClient, key: str = "k" * 64,
                   tok: str | None = None) -> dict[str, Any]:
    tok = tok or await token(client)
    resp = await client.post("/v1/register", data=json.dumps({"key": key}),
                             headers=basic("registrationToken", tok))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def connect(client: TestClient, creds: dict[str, Any],
                  autoping: bool = True) -> ClientWebSocketResponse:
    return await client.ws_connect(protocol.AGENT_PATH, autoping=autoping,
                                   headers=basic(creds["accessKey"], creds["secretKey"]))


async def hello(ws: ClientWebSocketResponse,
                facts: dict[str, Any] | None = None) -> protocol.Welcome:
    await ws.send_str(protocol.dump(protocol.Hello(agent_version="double",
                                                   facts=facts or FACTS)))
    welcome = protocol.parse((await ws.receive(timeout=5)).data)
    assert isinstance(welcome, protocol.Welcome)
    return welcome


async def attach(client: TestClient, key: str = "k" * 64,
                 autoping: bool = True) -> tuple[ClientWebSocketResponse, protocol.Welcome]:
    ws = await connect(client, await register(client, key), autoping=autoping)
    return ws, await hello(ws)
