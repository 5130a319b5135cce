"""The tokens of streams and proxies are signed by the server, and the key that checks them is
served, as Rancher served its own, at ``/v1/scripts/api.crt``."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.api.agent_double import attach
from tests.api.test_stream_abuse import running_container, stream_request, stream_url
from tests.conftest import ADMIN


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_api_crt_is_the_public_key_that_checks_a_stream_token(
        client: TestClient) -> None:
    resp = await client.get("/v1/scripts/api.crt")  # no credentials: agents fetch it
    assert resp.status == 200
    public = load_pem_public_key(await resp.read())
    assert isinstance(public, Ed25519PublicKey)
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    url = await stream_url(client, container, "logs", {"follow": False})
    token = parse_qs(urlsplit(url).query)["token"][0]
    header, payload, signature = token.split(".")
    public.verify(_unb64(signature), f"{header}.{payload}".encode())  # raises if not
    await agent.close()


async def test_api_crt_stays_the_same_across_requests(client: TestClient) -> None:
    first = await (await client.get("/v1/scripts/api.crt")).read()
    second = await (await client.get("/v1/scripts/api.crt")).read()
    assert first == second and first.startswith(b"-----BEGIN PUBLIC KEY-----")


async def test_a_long_command_still_fits_and_a_too_long_one_is_a_422(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    script = "echo " + "x" * 10_000
    url = await stream_url(client, container, "execute", {"command": ["sh", "-c", script]})
    async with aiohttp.ClientSession() as http, http.ws_connect(url):
        request = await stream_request(agent)
        assert request.data["command"] == ["sh", "-c", script]
    resp = await client.post(f"/v1/containers/{container}?action=execute", headers=ADMIN,
                             data=json.dumps({"command": ["sh", "-c", "x" * 20_000]}))
    body = await resp.json()
    assert (resp.status, body["code"], body["fieldName"]) == (422, "MaxLengthExceeded",
                                                             "command")
    await agent.close()
