"""Schemas: Rancher's schema JSON, actions valid per state, plural names, the registry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.api.schema import (
    BOOL_MODIFIERS,
    COMMON_FIELDS,
    EQUALITY_MODIFIERS,
    NUMBER_MODIFIERS,
    STRING_MODIFIERS,
    Field,
    Schema,
    SchemaRegistry,
    Scope,
)
from server.resources.accounts import ACCOUNT, PROJECT
from server.resources.credentials import API_KEY, REGISTRATION_TOKEN
from server.resources.hosts import HOST, HOST_INSPECTION

BASE = "http://corral.example:8080/v1"
# Accounts start registering and become active, as in Rancher.
LIFECYCLE_STATES = ["registering", "active", "inactive", "removed", "purged"]


def rendered(schema: Schema, base: str = BASE) -> dict[str, Any]:
    out = schema.render(base)
    assert json.loads(json.dumps(out)) == out  # plain JSON all the way down
    return out


# render


def test_account_renders_as_rancher_schema_with_absolute_links() -> None:
    out = rendered(ACCOUNT)
    assert out["id"] == "account"
    assert out["type"] == "schema"
    assert out["links"] == {"self": f"{BASE}/schemas/account",
                            "collection": f"{BASE}/accounts"}
    assert out["pluralName"] == "accounts"
    assert out["baseType"] == "account"
    assert out["collectionMethods"] == ["GET", "POST"]
    assert out["resourceMethods"] == ["GET", "PUT", "DELETE"]
    assert out["actions"] == {}
    assert out["collectionActions"] == {}


def test_links_follow_a_project_scoped_base_url() -> None:
    out = rendered(HOST, "https://corral.example/v1/projects/1a5")
    assert out["links"] == {"self": "https://corral.example/v1/projects/1a5/schemas/host",
                            "collection": "https://corral.example/v1/projects/1a5/hosts"}


def test_resource_fields_include_every_common_field() -> None:
    for schema in (ACCOUNT, API_KEY, HOST):
        assert set(COMMON_FIELDS) <= set(rendered(schema)["resourceFields"])


def test_state_is_an_enum_whose_options_are_the_schema_states() -> None:
    fields = rendered(ACCOUNT)["resourceFields"]
    assert fields["state"] == {"type": "enum", "nullable": False, "create": False,
                               "update": False, "required": False,
                               "options": LIFECYCLE_STATES}
    assert rendered(HOST)["resourceFields"]["state"]["options"] == [
        "registering", "active", "reconnecting", "disconnected", "inactive", "removed", "purged"]


def test_state_has_no_options_when_the_schema_lists_no_states() -> None:
    fields = rendered(Schema(id="thing", scope=Scope.GLOBAL))["resourceFields"]
    assert "options" not in fields["state"]


def test_common_field_render() -> None:
    fields = rendered(ACCOUNT)["resourceFields"]
    assert fields["id"] == {"type": "string", "nullable": False, "create": False,
                            "update": False, "required": False}
    assert fields["name"] == {"type": "string", "nullable": True, "create": True,
                              "update": True, "required": False, "maxLength": 255}
    assert fields["transitioning"]["options"] == ["yes", "no", "error"]
    assert fields["accountId"]["type"] == "reference[account]"
    assert fields["created"]["type"] == "date"


def test_a_type_field_overrides_the_common_one() -> None:
    assert rendered(ACCOUNT)["resourceFields"]["kind"] == {
        "type": "enum", "nullable": False, "create": True, "update": False, "required": False,
        "default": "user", "options": ["admin", "user"]}


def test_field_render_shows_limits_defaults_and_unique_only_when_set() -> None:
    assert Field().render() == {"type": "string", "nullable": True, "create": False,
                                "update": False, "required": False}
    assert Field(type="int", create=True, required=True, nullable=False, default=0, min=0,
                 max=9, unique=True).render() == {
        "type": "int", "nullable": False, "create": True, "update": False, "required": True,
        "default": 0, "min": 0, "max": 9, "unique": True}
    assert Field(min_length=1, max_length=8).render()["minLength"] == 1
    assert Field(min_length=1, max_length=8).render()["maxLength"] == 8


def test_resource_actions_name_their_input_and_output_types() -> None:
    assert rendered(ACCOUNT)["resourceActions"] == {
        name: {"input": None, "output": "account"}
        for name in ("activate", "deactivate", "remove", "purge", "update")}
    assert rendered(HOST)["resourceActions"]["inspect"] == {"input": None,
                                                           "output": "hostInspection"}


def test_host_collection_is_read_only() -> None:
    out = rendered(HOST)
    assert out["collectionMethods"] == ["GET"]
    assert out["resourceMethods"] == ["GET", "PUT", "DELETE"]


def test_collection_filters_give_modifiers_by_field_type() -> None:
    filters = rendered(HOST)["collectionFilters"]
    assert filters["name"] == {"modifiers": list(STRING_MODIFIERS)}
    assert filters["uuid"] == {"modifiers": list(STRING_MODIFIERS)}
    assert filters["state"] == {"modifiers": list(EQUALITY_MODIFIERS)}
    assert filters["agentState"] == {"modifiers": list(STRING_MODIFIERS)}  # an enum
    assert filters["memory"] == {"modifiers": list(NUMBER_MODIFIERS)}
    assert filters["removed"] == {"modifiers": list(NUMBER_MODIFIERS)}  # a date
    assert filters["created"] == {"modifiers": list(NUMBER_MODIFIERS)}
    assert filters["id"] == {"modifiers": list(NUMBER_MODIFIERS)}  # a row number underneath
    assert filters["accountId"] == {"modifiers": list(EQUALITY_MODIFIERS)}


def test_unfilterable_fields_have_no_collection_filter() -> None:
    filters = rendered(HOST)["collectionFilters"]
    for name in ("type", "baseType", "createdTS", "labels", "info", "transitioning", "hostname",
                 "transitioningMessage"):
        assert name not in filters
    assert "secretValue" not in rendered(API_KEY)["collectionFilters"]


@pytest.mark.parametrize(("field", "modifiers"), [
    (Field(type="string"), STRING_MODIFIERS),
    (Field(type="enum"), STRING_MODIFIERS),
    (Field(type="reference[host]"), EQUALITY_MODIFIERS),
    (Field(type="int"), NUMBER_MODIFIERS),
    (Field(type="float"), NUMBER_MODIFIERS),
    (Field(type="date"), NUMBER_MODIFIERS),
    (Field(type="boolean"), BOOL_MODIFIERS),
])
def test_modifiers_per_field_type(field: Field, modifiers: tuple[str, ...]) -> None:
    assert field.modifiers == modifiers
    schema = Schema(id="thing", scope=Scope.GLOBAL, fields={"x": field})
    assert rendered(schema)["collectionFilters"]["x"] == {"modifiers": list(modifiers)}


def test_modifier_lists_are_rancher_s() -> None:
    assert set(STRING_MODIFIERS) == {"eq", "ne", "null", "notnull", "prefix", "like", "notlike"}
    assert set(NUMBER_MODIFIERS) == {"eq", "ne", "lt", "lte", "gt", "gte", "null", "notnull"}
    assert set(BOOL_MODIFIERS) == {"eq", "ne", "null", "notnull"}


def test_credential_types_share_a_base_type_and_render_lowercase_collection_links() -> None:
    out = rendered(API_KEY)
    assert out["baseType"] == "credential"
    assert out["pluralName"] == "apiKeys"
    assert out["links"]["collection"] == f"{BASE}/apikeys"
    assert out["resourceFields"]["secretValue"]["type"] == "password"
    assert rendered(REGISTRATION_TOKEN)["links"]["collection"] == f"{BASE}/registrationtokens"


def test_an_embedded_schema_has_only_its_own_fields_and_no_collection() -> None:
    out = rendered(HOST_INSPECTION)
    assert out["links"] == {"self": f"{BASE}/schemas/hostInspection"}
    assert set(out["resourceFields"]) == {"hostId", "facts", "docker", "durationMs"}
    assert out["resourceFields"]["hostId"]["type"] == "reference[host]"
    assert out["collectionMethods"] == []
    assert out["resourceMethods"] == []
    assert out["collectionFilters"] == {}


# actions per state


@pytest.mark.parametrize(("schema", "state", "actions"), [
    (ACCOUNT, "active", ["deactivate", "remove", "update"]),
    (ACCOUNT, "inactive", ["activate", "remove", "update"]),
    (ACCOUNT, "removed", ["purge"]),
    (ACCOUNT, "purged", []),
    (ACCOUNT, "no-such-state", []),
    (HOST, "registering", ["remove"]),
    (HOST, "active", ["deactivate", "inspect", "dockersocket"]),
    (HOST, "reconnecting", ["deactivate"]),
    (HOST, "disconnected", ["deactivate"]),
    (HOST, "inactive", ["activate", "remove", "dockersocket"]),
    (HOST, "removed", ["purge"]),
    (HOST, "purged", []),
])
def test_valid_actions_per_state(schema: Schema, state: str, actions: list[str]) -> None:
    assert schema.valid_actions(state) == actions


# names and prefixes


@pytest.mark.parametrize(("schema", "plural", "collection"), [
    (Schema(id="host", scope=Scope.PROJECT), "hosts", "hosts"),
    (Schema(id="registrationToken", scope=Scope.PROJECT), "registrationTokens",
     "registrationtokens"),
    (Schema(id="process", scope=Scope.GLOBAL), "processes", "processes"),
    (Schema(id="box", scope=Scope.GLOBAL), "boxes", "boxes"),
    (Schema(id="policy", scope=Scope.GLOBAL, plural="policies"), "policies", "policies"),
    (Schema(id="storagePool", scope=Scope.PROJECT), "storagePools", "storagepools"),
])
def test_plural_and_collection_names(schema: Schema, plural: str, collection: str) -> None:
    assert schema.plural_name == plural
    assert schema.collection_name == collection
    assert rendered(schema)["pluralName"] == plural


@pytest.mark.parametrize(("schema", "prefix"), [
    (HOST, "1h"), (ACCOUNT, "1a"), (PROJECT, "1a"), (API_KEY, "1c"), (REGISTRATION_TOKEN, "1c"),
    (Schema(id="storagePool", scope=Scope.PROJECT), "1sp"),
])
def test_id_prefix_comes_from_the_base_type_unless_given(schema: Schema, prefix: str) -> None:
    assert schema.id_prefix == prefix


# registry


def test_registry_finds_schemas_by_id_and_by_collection_name_in_any_case() -> None:
    registry = SchemaRegistry([ACCOUNT, API_KEY, HOST, HOST_INSPECTION])
    assert registry.get("apiKey") is API_KEY
    assert registry.get("apikey") is None
    assert registry.by_collection("apikeys") is API_KEY
    assert registry.by_collection("apiKeys") is API_KEY
    assert registry.by_collection("hosts") is HOST
    assert registry.by_collection("host") is None
    assert list(registry) == [ACCOUNT, API_KEY, HOST, HOST_INSPECTION]


def test_registry_has_no_collection_for_an_embedded_schema() -> None:
    registry = SchemaRegistry([HOST_INSPECTION])
    assert registry.get("hostInspection") is HOST_INSPECTION
    assert registry.by_collection("hostinspections") is None


def test_registry_rejects_a_schema_registered_twice() -> None:
    registry = SchemaRegistry([HOST])
    with pytest.raises(ValueError, match="'host' registered twice"):
        registry.add(Schema(id="host", scope=Scope.GLOBAL))
    with pytest.raises(ValueError, match="registered twice"):
        SchemaRegistry([ACCOUNT, ACCOUNT])

