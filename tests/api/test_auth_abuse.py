"""Failed logins (wrong API key or secret, wrong agent key, wrong registration token) are
throttled per client address with Rancher's JSON error body and 429, and logged at WARNING in
summary: one line per address per interval, never one per guess. Callers that succeed are not
held back by someone else's failures."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cattle
import gdapi
import pytest
from aiohttp.test_utils import TestClient
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from agent.connection import process_exception
from server.api.handlers import SERVICES
from server.app import create_app
from shared.protocol import AGENT_PATH
from tests.conftest import ADMIN, basic, make_settings
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port
from tests.support.timing import seconds, wait_for

BURST = 3
THROTTLE_LOG = "server.api.throttle"
# Linux answers on all of 127.0.0.0/8: a second client address on the same machine.
OTHER_ADDRESS = "127.0.0.2"
GUESS = "guessed-secret-0123456789"


@pytest.fixture
async def strict(tmp_path: Path, database: str | None,
                 aiohttp_client: Any) -> AsyncIterator[TestClient]:
    """A server that allows BURST failures per address and (within a test) no more."""
    settings = make_settings(tmp_path / "data", database_url=database,
                             auth_failure_burst=BURST, auth_failure_rate=0.0001)
    test_client: TestClient = await aiohttp_client(create_app(settings))
    yield test_client


@pytest.fixture
async def elsewhere() -> AsyncIterator[aiohttp.ClientSession]:
    """A client connecting from another address."""
    connector = aiohttp.TCPConnector(local_addr=(OTHER_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def status_of(client: TestClient, path: str, headers: dict[str, str]) -> int:
    resp = await client.get(path, headers=headers)
    await resp.read()
    return resp.status


async def new_api_key(client: TestClient) -> dict[str, Any]:
    """A new API key of the admin, once it is active."""
    resp = await client.post("/v1/apikeys", headers=ADMIN, data="{}")
    key: dict[str, Any] = await resp.json()
    deadline = time.monotonic() + seconds(10)
    state = key["state"]
    while state != "active" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        resp = await client.get(f"/v1/apikeys/{key['id']}", headers=ADMIN)
        state = (await resp.json())["state"]
    assert state == "active", key
    return key


def throttle_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == THROTTLE_LOG]


async def test_wrong_api_keys_get_401_then_429_with_rancher_error_body(
        strict: TestClient) -> None:
    assert await status_of(strict, "/v1/hosts", ADMIN) == 200
    wrong = basic(ACCESS_KEY, "not-the-secret")
    assert [await status_of(strict, "/v1/hosts", wrong) for _ in range(BURST)] == [401] * BURST
    resp = await strict.get("/v1/hosts", headers=wrong)
    body = await resp.json()
    assert resp.status == 429
    assert body["type"] == "error" and body["status"] == 429
    assert body["code"] == "TooManyRequests" and "try again" in body["message"]
    assert resp.headers["X-API-Schemas"].endswith("/v1/schemas")
    # The admin, who succeeded from here before, goes on as if nothing happened.
    for _ in range(5):
        assert await status_of(strict, "/v1/hosts", ADMIN) == 200


async def test_a_throttled_address_cannot_try_new_credentials_even_right_ones(
        strict: TestClient, elsewhere: aiohttp.ClientSession) -> None:
    key = await new_api_key(strict)
    fresh = basic(key["publicValue"], key["secretValue"])
    for _ in range(BURST):
        await status_of(strict, "/v1/hosts", basic("NOSUCHKEY", "x"))
    assert await status_of(strict, "/v1/hosts", fresh) == 429
    # The same key works from an address that did not fail.
    async with elsewhere.get(strict.make_url("/v1/hosts"), headers=fresh) as other:
        assert other.status == 200


async def test_other_addresses_are_not_slowed_by_one_address_failing(
        strict: TestClient, elsewhere: aiohttp.ClientSession) -> None:
    for _ in range(BURST + 5):
        await status_of(strict, "/v1/hosts", basic("NOSUCHKEY", "x"))
    async with elsewhere.get(strict.make_url("/v1/hosts"), headers=ADMIN) as resp:
        assert resp.status == 200
    async with elsewhere.get(strict.make_url("/v1/hosts"),
                             headers=basic("NOSUCHKEY", "x")) as resp:
        assert resp.status == 401  # its own first failure, not the other address's throttle


async def test_a_request_without_credentials_is_a_plain_401_even_when_throttled(
        strict: TestClient) -> None:
    for _ in range(BURST + 1):
        await status_of(strict, "/v1/hosts", basic("NOSUCHKEY", "x"))
    assert await status_of(strict, "/v1/hosts", {}) == 401


async def test_registration_token_guesses_are_throttled_and_summed_up_in_the_log(
        strict: TestClient, elsewhere: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    guesses = [f"guess{i:04d}abcdefghijklmnopqrstuv" for i in range(200)]
    statuses = [await status_of(strict, f"/v1/scripts/{g}", {}) for g in guesses]
    assert statuses == [401] * BURST + [429] * (len(guesses) - BURST)
    lines = throttle_lines(caplog)
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "registration token" in lines[0]

    strict.app[SERVICES].auth_guard.flush()  # what the interval's timer does
    lines = throttle_lines(caplog)
    assert len(lines) == 2
    assert "127.0.0.1" in lines[1]
    assert f"{BURST - 1} failed (registration token {BURST - 1})" in lines[1]
    assert f"{len(guesses) - BURST} refused with 429" in lines[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == THROTTLE_LOG)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert not any(g in caplog.text for g in guesses)  # guesses never reach the log
    # An address that stayed quiet for an interval is forgotten from the log.
    strict.app[SERVICES].auth_guard.flush()
    strict.app[SERVICES].auth_guard.flush()
    assert len(throttle_lines(caplog)) == 2

    # The real token still works from elsewhere, for the script and for registering.
    async with elsewhere.get(strict.make_url("/v1/registrationtokens"), headers=ADMIN) as resp:
        url = (await resp.json())["data"][0]["registrationUrl"]
    token = url.rsplit("/", 1)[1]
    async with elsewhere.get(strict.make_url(f"/v1/scripts/{token}")) as script:
        assert script.status == 200
    async with elsewhere.post(strict.make_url("/v1/register"),
                              headers=basic("registrationToken", token),
                              json={"key": "k" * 40}) as registered:
        assert registered.status == 200


async def test_wrong_registration_tokens_when_registering_are_throttled(
        strict: TestClient) -> None:
    statuses = []
    for i in range(BURST + 2):
        resp = await strict.post("/v1/register", json={"key": "k" * 40},
                                 headers=basic("registrationToken", f"wrong{i}"))
        statuses.append(resp.status)
        await resp.read()
    assert statuses == [401] * BURST + [429, 429]


async def test_wrong_agent_keys_are_throttled(strict: TestClient,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    wrong = basic("NOSUCHAGENTKEY", "secret")
    statuses = [await status_of(strict, AGENT_PATH, wrong) for _ in range(BURST + 2)]
    assert statuses == [401] * BURST + [429, 429]
    assert any("agent key" in line for line in throttle_lines(caplog))


def test_cattle_client_is_told_429_and_the_server_log_sums_it_up(tmp_path: Path) -> None:
    server = ServerProcess(data_dir=tmp_path / "server-data", port=free_port(), extra_env={
        "CORRAL_AUTH_FAILURE_BURST": "2", "CORRAL_AUTH_FAILURE_RATE": "0.0001",
        "CORRAL_AUTH_LOG_INTERVAL": "0.2"}).start()
    try:
        api = cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                            secret_key=SECRET_KEY, headers={"Accept": "application/json"})
        statuses = []
        for _ in range(30):
            with pytest.raises(gdapi.ApiError) as error:
                cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                              secret_key=GUESS, headers={"Accept": "application/json"})
            statuses.append(error.value.error.status)
        assert statuses == [401, 401] + [429] * 28
        assert error.value.error.code == "TooManyRequests"
        assert list(api.list_host()) == []  # the admin's client works on

        def summed_up() -> list[str]:
            lines = [line for line in server.log().splitlines() if "authentication" in line]
            return lines if any("refused with 429" in line for line in lines) else []

        lines = wait_for(summed_up, 20, "the summary line of the failed logins")
        assert len(lines) < 5  # one first line and summaries, not a line per guess
        assert all("WARNING" in line for line in lines)
        assert GUESS not in server.log()
    finally:
        server.stop()


async def raw_status(client: TestClient, request: bytes) -> int:
    """The status of a request sent byte for byte (headers no client library would send)."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize("credentials", [
    b"Basic \xff\xfe\xed\xa0\x80", b"Basic 7aCA", b"Basic //79", b"Basic " + b"QQ==" * 1000])
async def test_undecodable_credentials_are_a_401_never_a_500(
        client: TestClient, credentials: bytes, caplog: pytest.LogCaptureFixture) -> None:
    for path in (b"/v1/hosts", AGENT_PATH.encode(), b"/v1/register"):
        request = b"GET " + path + b" HTTP/1.1\r\nHost: corral\r\nAuthorization: " + \
            credentials + b"\r\nConnection: close\r\n\r\n"
        assert await raw_status(client, request) in (400, 401), path
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_an_agent_told_429_retries_instead_of_exiting() -> None:
    assert process_exception(InvalidStatus(Response(429, "Too Many Requests", Headers()))) \
        is None
