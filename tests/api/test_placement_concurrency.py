"""Placement under concurrency, through the API with two real agent sessions: a host port is
claimed by exactly one container per host, however many creates race for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from shared import protocol
from tests.api.agent_double import FACTS, connect, hello, register
from tests.api.test_agent_socket import eventually
from tests.conftest import ADMIN

PORT = 18080


async def answer_instructions(ws: ClientWebSocketResponse) -> None:
    """An agent that carries out every container instruction at once."""
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            return
        request = protocol.parse(msg.data)
        if not isinstance(request, protocol.Request):
            continue
        data: dict[str, Any] = {}
        if request.name in ("instance.create", "instance.start"):
            spec = request.data.get("container") or {}
            data = {"uuid": spec.get("uuid") or request.data.get("uuid"),
                    "dockerId": f"d-{request.resource_id}", "status": "running",
                    "ports": spec.get("ports") or [], "mounts": []}
        await ws.send_str(protocol.dump(protocol.Reply(request_id=request.id, data=data)))


async def test_fifty_creates_of_one_host_port_on_two_hosts_run_two_containers(
        client: TestClient) -> None:
    agents, tasks = [], []
    for n in (1, 2):
        creds = await register(client, key=f"{n}" * 64)
        ws = await connect(client, creds)
        await hello(ws, {**FACTS, "hostname": f"host-{n}"})
        agents.append(ws)
        tasks.append(asyncio.create_task(answer_instructions(ws)))

    async def both_active() -> bool:
        resp = await client.get("/v1/hosts", headers=ADMIN)
        return [h["state"] for h in (await resp.json())["data"]] == ["active", "active"]

    await eventually(both_active)
    body = json.dumps({"imageUuid": "docker:busybox", "ports": [f"{PORT}:80/tcp"]})

    async def create() -> tuple[int, dict[str, Any]]:
        resp = await client.post("/v1/containers", data=body, headers=ADMIN)
        return resp.status, dict(await resp.json())

    results = await asyncio.gather(*(create() for _ in range(50)))
    created = [b for status, b in results if status == 201]
    refused = [b for status, b in results if status != 201]
    try:
        assert len(created) == 2, [b.get("message") for b in refused][:3]
        assert len({c["hostId"] for c in created}) == 2
        assert len(refused) == 48
        for body_ in refused:
            assert body_["status"] == 422 and body_["code"] == "NoHostAvailable"
            assert f"port {PORT}/tcp is already used" in body_["message"]

        async def running() -> bool:
            states = []
            for c in created:
                resp = await client.get(f"/v1/containers/{c['id']}", headers=ADMIN)
                states.append((await resp.json())["state"])
            return states == ["running", "running"]

        await eventually(running)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ws in agents:
            await ws.close()
