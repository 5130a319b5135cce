"""Certificates over a real socket and through the real ``cattle`` client: checked on create
and on change, named uniquely per environment, and their key never shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import cattle
import gdapi
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from server.api.handlers import SERVICES
from server.certificates import KEY_PURPOSE, certificate_bundle
from shared.ids import parse_id
from tests.conftest import ADMIN
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.unit.server.test_certificates import ec_key, key_pem, make_cert, rsa_key

NOW = datetime.now(UTC)


def cert_for(key: Any, cn: str = "www.example.com", **dates: datetime) -> str:
    return make_cert(key, cn=cn, not_before=dates.get("not_before", NOW - timedelta(days=1)),
                     not_after=dates.get("not_after", NOW + timedelta(days=90)))


CERT, KEY = cert_for(rsa_key()), key_pem(rsa_key())
# The first line of each key these tests send, in each form: no response may hold one.
SECRETS = [pem.splitlines()[1] for key in (rsa_key(), ec_key())
           for pem in (key_pem(key), key_pem(key, serialization.PrivateFormat.TraditionalOpenSSL))]


def shows_no_key(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    text = await resp.text()
    assert shows_no_key(text), text
    return resp.status, json.loads(text)


async def create(client: TestClient, **fields: Any) -> tuple[int, Any]:
    body = {"name": "www", "cert": CERT, "key": KEY, **fields}
    return await send(client, "POST", "/v1/certificates", body)


async def test_a_created_certificate_shows_rancher_s_derived_fields_and_no_key(
        client: TestClient) -> None:
    status, cert = await create(client, description="the shop")
    assert status == 201, cert
    assert cert["type"] == "certificate" and cert["id"].startswith("1c")
    assert cert["state"] == "active" and cert["transitioning"] == "no"
    assert cert["cert"] == CERT and cert["certChain"] is None and cert["key"] is None
    assert cert["CN"] == "www.example.com" and cert["keySize"] == 2048
    assert cert["algorithm"] == "SHA256WITHRSA" and cert["version"] == "3"
    assert cert["serialNumber"] == "4242" and cert["subjectAlternativeNames"] == []
    assert cert["issuer"] == "CN=www.example.com,O=Example,C=US"
    assert len(cert["certFingerprint"].split(":")) == 20
    assert cert["expiresAt"].endswith("Z") and isinstance(cert["expiresAtTS"], int)
    assert cert["issuedAt"] < cert["expiresAt"]
    assert set(cert["actions"]) == {"update", "remove"}
    for path in (f"/v1/certificates/{cert['id']}", "/v1/certificates",
                 "/v2-beta/certificates?name=www"):
        status, body = await send(client, "GET", path)
        assert status == 200
        shown = body["data"][0] if body["type"] == "collection" else body
        assert shown["key"] is None and shown["CN"] == "www.example.com"
    _, schema = await send(client, "GET", "/v1/schemas/certificate")
    assert schema["resourceFields"]["key"]["type"] == "password"


async def test_the_stored_record_holds_the_key_encrypted_not_in_plaintext(
        client: TestClient) -> None:
    _, cert = await create(client, key=key_pem(rsa_key(), serialization.PrivateFormat
                                               .TraditionalOpenSSL))
    services = client.app[SERVICES]
    number = parse_id(cert["id"], "1c")
    assert number is not None
    record = await services.store.get(number)
    assert record is not None
    stored = json.dumps(record.data)
    assert "PRIVATE KEY" not in stored and shows_no_key(stored)
    assert "key" not in record.data
    decrypted = services.server_key.decrypt(KEY_PURPOSE, record.data["keyEncrypted"])
    assert decrypted == KEY  # kept as PKCS#8 whatever form was sent
    pem = certificate_bundle(record, services.server_key)
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and pem.endswith(KEY)


@pytest.mark.parametrize(("fields", "field_name", "words"), [
    ({"cert": "not a certificate"}, "cert", "PEM"),
    ({"key": "not a key"}, "key", "private key"),
    ({"key": key_pem(rsa_key(), password=b"pass")}, "key", "passphrase"),
    ({"key": key_pem(ec_key())}, "key", "does not match"),
    ({"cert": cert_for(rsa_key(), not_before=NOW - timedelta(days=100),
                       not_after=NOW - timedelta(days=10))}, "cert", "expired on"),
    ({"certChain": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
     "certChain", "certificates only"),
    ({"certChain": "garbage"}, "certChain", "PEM"),
])
async def test_unusable_parts_are_422_naming_the_field(
        client: TestClient, fields: dict[str, Any], field_name: str, words: str) -> None:
    status, error = await create(client, **fields)
    assert status == 422, error
    assert error["type"] == "error" and error["code"] == "InvalidFormat"
    assert error["fieldName"] == field_name and words in error["message"]
    _, listed = await send(client, "GET", "/v1/certificates")
    assert listed["data"] == []


async def test_missing_and_oversized_parts_are_the_generic_422s(client: TestClient) -> None:
    status, error = await send(client, "POST", "/v1/certificates", {"name": "a", "cert": CERT})
    assert status == 422 and error["code"] == "MissingRequired" and error["fieldName"] == "key"
    status, error = await create(client, cert=CERT + "x" * 65536)
    assert status == 422 and error["code"] == "MaxLengthExceeded"
    assert error["fieldName"] == "cert"


async def test_a_certificate_not_valid_yet_is_accepted(client: TestClient) -> None:
    later = cert_for(rsa_key(), not_before=NOW + timedelta(days=3),
                     not_after=NOW + timedelta(days=93))
    status, cert = await create(client, cert=later)
    assert status == 201 and cert["issuedAt"] > cert["created"]


async def test_a_name_is_unique_in_its_environment_until_removed(client: TestClient) -> None:
    status, first = await create(client)
    assert status == 201
    status, error = await create(client)
    assert status == 422 and error["code"] == "NotUnique" and error["fieldName"] == "name"
    _, staging = await send(client, "POST", "/v1/projects", {"name": "Staging"})
    status, _ = await send(client, "POST", f"/v1/projects/{staging['id']}/certificates",
                           {"name": "www", "cert": CERT, "key": KEY})
    assert status == 201
    status, other = await create(client, name="other")
    status, error = await send(client, "PUT", f"/v1/certificates/{other['id']}",
                               {"name": "www"})
    assert status == 422 and error["code"] == "NotUnique"
    status, removed = await send(client, "DELETE", f"/v1/certificates/{first['id']}")
    assert status == 200 and removed["state"] == "removed" and removed["key"] is None
    status, _ = await create(client)
    assert status == 201


async def test_a_put_re_checks_the_pair_against_the_stored_key(client: TestClient) -> None:
    _, cert = await create(client)
    path = f"/v1/certificates/{cert['id']}"
    # A renewed certificate for the same key needs no key.
    renewed = cert_for(rsa_key(), cn="shop.example.com")
    status, updated = await send(client, "PUT", path, {"cert": renewed})
    assert status == 200, updated
    assert updated["CN"] == "shop.example.com" and updated["cert"] == renewed
    assert updated["certFingerprint"] != cert["certFingerprint"]
    # A certificate for another key, without that key, does not match the stored one.
    status, error = await send(client, "PUT", path, {"cert": cert_for(ec_key())})
    assert status == 422 and error["fieldName"] == "key" and "does not match" in error["message"]
    # Nor does a new key alone.
    status, error = await send(client, "PUT", path, {"key": key_pem(ec_key())})
    assert status == 422 and error["fieldName"] == "key"
    # Both together replace the pair.
    status, updated = await send(client, "PUT", path, {"cert": cert_for(ec_key()),
                                                       "key": key_pem(ec_key())})
    assert status == 200 and updated["algorithm"] == "SHA256WITHECDSA"
    assert updated["keySize"] == 256
    # The update action changes what a PUT would, with the same checks.
    status, error = await send(client, "POST", f"{path}?action=update", {"cert": CERT})
    assert status == 422 and error["fieldName"] == "key"
    status, updated = await send(client, "POST", f"{path}?action=update",
                                 {"description": "renewed"})
    assert status == 200 and updated["description"] == "renewed"
    assert updated["algorithm"] == "SHA256WITHECDSA"


async def test_the_change_stream_never_carries_the_key(client: TestClient) -> None:
    ws = await client.ws_connect("/v1/subscribe?eventNames=resource.change", headers=ADMIN)
    _, cert = await create(client)
    await send(client, "PUT", f"/v1/certificates/{cert['id']}", {"key": KEY, "cert": CERT})
    await send(client, "DELETE", f"/v1/certificates/{cert['id']}")
    states = []
    while "removed" not in states:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.TEXT, msg
        assert shows_no_key(msg.data)
        event = json.loads(msg.data)
        if event.get("resourceType") == "certificate":
            resource = event["data"]["resource"]
            assert resource["key"] is None and "keyEncrypted" not in resource
            states.append(resource["state"])
    assert len(states) == 3
    await ws.close()


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_cattle_client_creates_reads_and_updates_certificates(api: cattle.Client) -> None:
    created = api.wait_success(api.create_certificate(name="shop", cert=CERT, key=KEY))
    assert created.state == "active" and created.cert == CERT and created.key is None
    assert created.CN == "www.example.com" and created.keySize == 2048
    assert created.certFingerprint and created.expiresAt and created.issuedAt
    read = api.by_id_certificate(created.id)
    assert read.key is None and read.serialNumber == "4242"
    assert [c.name for c in api.list_certificate(name="shop")] == ["shop"]
    updated = api.update(read, description="renewed")
    assert updated.description == "renewed" and updated.key is None
    with pytest.raises(gdapi.ApiError) as error:
        api.create_certificate(name="shop", cert=CERT, key=KEY)
    assert error.value.error.status == 422 and error.value.error.code == "NotUnique"
    with pytest.raises(gdapi.ApiError) as error:
        api.create_certificate(name="bad", cert=CERT, key=key_pem(ec_key()))
    assert error.value.error.code == "InvalidFormat" and error.value.error.fieldName == "key"
    removed = api.wait_success(api.delete(read))
    assert removed.state == "removed"
