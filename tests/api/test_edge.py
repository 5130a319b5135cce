"""The API edge against hostile input: whatever a client sends, the answer is a 4xx in
Rancher's error body, never a 500, a dropped connection or an ERROR line in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from server.api.query import MAX_LIMIT
from tests.conftest import ADMIN

NESTED_ARRAY = b"[" * 1000 + b"]" * 1000


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def send_raw(client: TestClient, method: str, path: str,
                   raw: bytes) -> tuple[int, Any]:
    resp = await client.request(method, path, data=raw, headers=ADMIN)
    return resp.status, await resp.json()


async def get_json(client: TestClient, path: str, **headers: str) -> tuple[int, Any, Any]:
    resp = await client.get(path, headers=headers or ADMIN)
    return resp.status, await resp.json(), resp.headers


def assert_error(status: int, body: Any, expected: int, code: str,
                 field: str | None = None) -> None:
    assert (status, body["type"], body["status"], body["code"]) == \
        (expected, "error", expected, code), body
    if field is not None:
        assert body["fieldName"] == field


# 1. nesting


@pytest.mark.parametrize("raw", [
    NESTED_ARRAY,
    b'{"name": "x", "description": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}",
    b'{"name": ' + b"[" * 65 + b"]" * 65 + b"}",
])
async def test_a_deeply_nested_body_is_422_invalid_body_content(
        client: TestClient, raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    status, body = await send_raw(client, "POST", "/v1/apikeys", raw)
    assert_error(status, body, 422, "InvalidBodyContent")
    no_errors_logged(caplog)


async def test_not_a_number_constants_are_not_json(client: TestClient) -> None:
    status, body = await send_raw(client, "POST", "/v1/apikeys", b'{"name": NaN}')
    assert_error(status, body, 422, "InvalidBodyContent")


# 2. text that is not text


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"name": "\\ud800"}', "name"),
    (b'{"description": "ok \\udfff"}', "description"),
    (b'{"name": "a\\u0000b"}', "name"),
    (b'{"name": "ok", "_options": {"deep": ["\\ud800"]}}', "_options"),
    (b'{"\\ud800": "key"}', "\\ud800"),
])
async def test_a_string_that_cannot_be_stored_is_422_invalid_characters(
        client: TestClient, raw: bytes, field: str,
        caplog: pytest.LogCaptureFixture) -> None:
    status, body = await send_raw(client, "POST", "/v1/apikeys", raw)
    assert_error(status, body, 422, "InvalidCharacters", field)
    no_errors_logged(caplog)


async def test_a_lone_surrogate_on_update_is_422_naming_the_field(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    status, key = await send_raw(client, "POST", "/v1/apikeys", b'{"name": "fine"}')
    assert status == 201
    status, body = await send_raw(client, "PUT", f"/v1/apikeys/{key['id']}",
                                  b'{"description": "\\ud800"}')
    assert_error(status, body, 422, "InvalidCharacters", "description")
    no_errors_logged(caplog)


async def test_a_number_out_of_64_bits_in_a_body_is_422(client: TestClient) -> None:
    raw = json.dumps({"name": "n", "_x": [2**64]}).encode()
    status, body = await send_raw(client, "POST", "/v1/apikeys", raw)
    assert_error(status, body, 422, "InvalidFormat", "_x")


# 3. numbers in query strings


@pytest.mark.parametrize(("query", "field"), [
    ("memory_gte=100000000000000000000000", "memory"),
    ("memory=-9223372036854775809", "memory"),
    ("removed_lt=100000000000000000000000", "removed"),
    ("created_gt=" + "1" * 5000, "created"),
    ("created_gt=99999-01-01T00:00:00Z", "created"),
    ("id_gt=1h99999999999999999999", "id"),
    ("marker=m100000000000000000000000", "marker"),
    ("name=%ED%A0%80", None),
    ("name=a%00b", "name"),
])
async def test_a_filter_value_the_store_cannot_take_is_422_naming_it(
        client: TestClient, query: str, field: str | None,
        caplog: pytest.LogCaptureFixture) -> None:
    status, body, _ = await get_json(client, f"/v1/hosts?{query}")
    if field is None:   # decoded as a replacement character: a value like any other
        assert status == 200
    else:
        assert_error(status, body, 422, "InvalidFormat" if field != "name"
                     else "InvalidCharacters", field)
    no_errors_logged(caplog)


@pytest.mark.parametrize("path", ["/v1/hosts/1h999999999999999999",
                                  "/v1/projects/1a999999999999999999/hosts"])
async def test_an_id_beyond_every_row_is_404(client: TestClient, path: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    status, body, _ = await get_json(client, path)
    assert_error(status, body, 404, "NotFound")
    no_errors_logged(caplog)


@pytest.mark.parametrize("query", ["id=1i100000000000000000000000",
                                   "id=1i999999999999999999",
                                   "accountId=1a999999999999999999",
                                   "id_ne=1i100000000000000000000000",
                                   "hostId=1h999999999999999999",
                                   "limit=100000000000000000000000"])
async def test_big_ids_and_limits_are_answered(client: TestClient, query: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    status, body, _ = await get_json(client, f"/v1/containers?{query}")
    assert status == 200 and body["type"] == "collection"
    no_errors_logged(caplog)


# 4. request text in headers


@pytest.mark.parametrize("segment", ["%0d", "%0a", "%00", "%0d%0aX-Evil:%201", "%E2%80%A8"])
async def test_control_characters_in_the_project_segment_never_reach_a_header(
        client: TestClient, segment: str, caplog: pytest.LogCaptureFixture) -> None:
    for headers in ({"X-API-No-Challenge": "true"}, ADMIN):
        resp = await client.get(f"/v1/projects/{segment}/hosts", headers=headers)
        body = await resp.json()
        assert resp.status in (401, 404) and body["type"] == "error"
        schemas = resp.headers["X-API-Schemas"]
        assert schemas.isascii() and schemas.isprintable(), schemas
        assert "X-Evil" not in resp.headers
    no_errors_logged(caplog)


# 5. limit and sort


async def test_limit_is_capped_at_rancher_s_3000(client: TestClient) -> None:
    assert MAX_LIMIT == 3000
    status, body, _ = await get_json(client, "/v1/containers?limit=5000")
    assert status == 200 and body["pagination"]["limit"] == 3000


CONTAINER_SORTS = {"id", "name", "state", "created", "removed", "uuid", "kind", "description",
                   "transitioning", "hostId", "externalId"}


@pytest.mark.parametrize("field", sorted(CONTAINER_SORTS))
async def test_containers_sort_on_every_indexed_field(client: TestClient, field: str) -> None:
    status, body, _ = await get_json(client, f"/v1/containers?sort={field}&order=desc")
    assert status == 200, body
    assert body["sort"]["name"] == field


async def test_sort_links_list_exactly_the_sortable_fields(client: TestClient) -> None:
    _, body, _ = await get_json(client, "/v1/containers")
    assert set(body["sortLinks"]) == CONTAINER_SORTS
    for link in body["sortLinks"].values():
        resp = await client.get(URL(link).path_qs, headers=ADMIN)
        assert resp.status == 200, link
    _, body, _ = await get_json(client, "/v1/apikeys")
    assert set(body["sortLinks"]) == CONTAINER_SORTS - {"hostId", "externalId"}


async def test_a_field_that_is_not_indexed_cannot_be_sorted_on(client: TestClient) -> None:
    status, body, _ = await get_json(client, "/v1/containers?sort=memory")
    assert_error(status, body, 422, "InvalidOption", "sort")


# 8. the subscribe schema


@pytest.mark.parametrize("version", ["v1", "v2-beta"])
async def test_schemas_describe_subscribe(client: TestClient, version: str) -> None:
    _, body, _ = await get_json(client, f"/{version}/schemas")
    schemas = {s["id"]: s for s in body["data"]}
    subscribe = schemas["subscribe"]
    assert subscribe["collectionMethods"] == ["GET", "POST"]
    assert subscribe["links"]["collection"].endswith(f"/{version}/subscribe")
    assert set(subscribe["resourceFields"]) == {"eventNames", "agentId"}
    assert subscribe["resourceFields"]["eventNames"]["type"] == "array[string]"
    assert subscribe["collectionFilters"] == {"eventNames": {"modifiers": ["eq"]}}
    status, one, _ = await get_json(client, f"/{version}/schemas/subscribe")
    assert status == 200 and one == subscribe
