"""Request bodies checked against a schema: Rancher's 422 codes, defaults, ignored fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server.api.errors import ValidationError
from server.api.schema import Field, Schema, Scope
from server.api.validation import validate_create, validate_update
from server.resources.accounts import ACCOUNT, PROJECT
from server.resources.credentials import API_KEY
from server.resources.hosts import HOST

WIDGET = Schema(
    id="widget",
    scope=Scope.PROJECT,
    fields={
        "serial": Field(create=True, required=True, nullable=False),
        "owner": Field(create=True, update=True, nullable=False),
        "size": Field(type="int", create=True, update=True, min=1, max=10),
        "ratio": Field(type="float", create=True, update=True, min=0, max=1),
        "enabled": Field(type="boolean", create=True, update=True, default=False),
        "color": Field(type="enum", create=True, options=("red", "green"), default="red"),
        "code": Field(create=True, update=True, min_length=2, max_length=4),
        "tags": Field(type="array[string]", create=True, update=True),
        "env": Field(type="map[string]", create=True),
        "hostId": Field(type="reference[host]", create=True),
        "extra": Field(type="json", create=True),
        "readonly": Field(),
    },
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
)
DEFAULTS = {"enabled": False, "color": "red"}

Validate = Callable[[Schema, Any], dict[str, Any]]


def rejected(validate: Validate, schema: Schema, body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate(schema, body)
    assert caught.value.status == 422
    return caught.value


# validate_create


def test_create_applies_defaults_to_fields_not_given() -> None:
    assert validate_create(WIDGET, {"serial": "s1"}) == {"serial": "s1", **DEFAULTS}


def test_create_keeps_given_values_over_defaults() -> None:
    body = {"serial": "s1", "color": "green", "enabled": True}
    assert validate_create(WIDGET, body) == body


def test_create_applies_the_default_when_a_field_is_given_as_null() -> None:
    assert validate_create(WIDGET, {"serial": "s1", "color": None}) == {"serial": "s1",
                                                                        **DEFAULTS}


def test_create_keeps_an_explicit_null_for_a_nullable_field() -> None:
    assert validate_create(WIDGET, {"serial": "s1", "code": None}) == {"serial": "s1",
                                                                       "code": None, **DEFAULTS}


def test_create_of_the_real_account_schema_defaults_kind_to_user() -> None:
    assert validate_create(ACCOUNT, {}) == {"kind": "user"}


def test_create_normalises_numbers_for_float_fields() -> None:
    values = validate_create(WIDGET, {"serial": "s", "ratio": 1})
    assert values["ratio"] == 1.0
    assert isinstance(values["ratio"], float)


@pytest.mark.parametrize(("field", "value"), [
    ("size", 1), ("size", 10), ("ratio", 0), ("ratio", 0.5), ("code", "ab"), ("code", "abcd"),
    ("tags", []), ("tags", ["a", "b"]), ("env", {}), ("env", {"A": "1"}), ("hostId", "1h5"),
    ("extra", [1, {"x": None}]), ("extra", "anything"), ("enabled", True), ("color", "green"),
])
def test_create_accepts_values_within_the_field_rules(field: str, value: Any) -> None:
    assert validate_create(WIDGET, {"serial": "s", field: value})[field] == value


@pytest.mark.parametrize("body", [{}, {"serial": None}, {"owner": "o"}])
def test_create_without_a_required_field_is_missing_required(body: dict[str, Any]) -> None:
    error = rejected(validate_create, WIDGET, body)
    assert (error.code, error.field_name) == ("MissingRequired", "serial")


def test_create_of_a_project_without_a_name_is_missing_required() -> None:
    error = rejected(validate_create, PROJECT, {"description": "d"})
    assert (error.code, error.field_name) == ("MissingRequired", "name")


def test_create_with_null_for_a_non_nullable_field_is_not_nullable() -> None:
    error = rejected(validate_create, WIDGET, {"serial": "s", "owner": None})
    assert (error.code, error.field_name) == ("NotNullable", "owner")


@pytest.mark.parametrize(("field", "value"), [
    ("size", "5"),
    ("size", True),          # bool is an int in Python, not in the API
    ("size", False),
    ("size", 1.5),
    ("ratio", "0.5"),
    ("ratio", True),
    ("enabled", 1),
    ("enabled", "true"),
    ("code", 12),
    ("color", 1),
    ("serial", ["s"]),
    ("tags", "a"),
    ("tags", [1]),
    ("tags", {"a": "b"}),
    ("env", ["A=1"]),
    ("env", {"A": 1}),
    ("hostId", 5),
])
def test_create_with_a_wrong_type_is_invalid_type(field: str, value: Any) -> None:
    body = {"serial": "s", field: value}
    error = rejected(validate_create, WIDGET, body)
    assert (error.code, error.field_name) == ("InvalidType", field)


@pytest.mark.parametrize(("schema", "body", "code", "field"), [
    (WIDGET, {"serial": "s", "code": "abcde"}, "MaxLengthExceeded", "code"),
    (WIDGET, {"serial": "s", "code": "a"}, "MinLengthExceeded", "code"),
    (WIDGET, {"serial": "s", "code": ""}, "MinLengthExceeded", "code"),
    (ACCOUNT, {"externalId": "x" * 256}, "MaxLengthExceeded", "externalId"),
    (ACCOUNT, {"name": "n" * 256}, "MaxLengthExceeded", "name"),
    (PROJECT, {"name": ""}, "MinLengthExceeded", "name"),
    (WIDGET, {"serial": "s", "color": "blue"}, "InvalidOption", "color"),
    (WIDGET, {"serial": "s", "color": "Red"}, "InvalidOption", "color"),
    (ACCOUNT, {"kind": "root"}, "InvalidOption", "kind"),
    (WIDGET, {"serial": "s", "size": 11}, "MaxLimitExceeded", "size"),
    (WIDGET, {"serial": "s", "size": 0}, "MinLimitExceeded", "size"),
    (WIDGET, {"serial": "s", "size": -1}, "MinLimitExceeded", "size"),
    (WIDGET, {"serial": "s", "ratio": 1.01}, "MaxLimitExceeded", "ratio"),
    (WIDGET, {"serial": "s", "ratio": -0.5}, "MinLimitExceeded", "ratio"),
])
def test_create_enforces_lengths_options_and_limits(schema: Schema, body: dict[str, Any],
                                                     code: str, field: str) -> None:
    error = rejected(validate_create, schema, body)
    assert (error.code, error.field_name) == (code, field)
    assert field in str(error)


def test_create_with_an_unknown_field_is_invalid_field_naming_it() -> None:
    error = rejected(validate_create, WIDGET, {"serial": "s", "colour": "red"})
    assert (error.code, error.field_name) == ("InvalidField", "colour")


def test_create_ignores_keys_starting_with_underscore() -> None:
    """gdapi's CLI leaks its own options (``_access_key``...) into request bodies."""
    body = {"serial": "s", "_access_key": "AK", "_secret_key": "SK", "_url": "http://x/v1",
            "_": 1}
    assert validate_create(WIDGET, body) == {"serial": "s", **DEFAULTS}


@pytest.mark.parametrize(("field", "value"), [
    ("readonly", "x"),
    ("readonly", 5),         # ignored, so not even type-checked
    ("state", "active"),
    ("id", "1w5"),
    ("uuid", "u"),
    ("transitioning", "yes"),
])
def test_create_ignores_fields_that_are_not_creatable(field: str, value: Any) -> None:
    assert validate_create(WIDGET, {"serial": "s", field: value}) == {"serial": "s", **DEFAULTS}


def test_create_of_an_api_key_takes_the_keys_given_as_rancher_does() -> None:
    body = {"name": "ci", "publicValue": "AK", "secretValue": "SK", "state": "inactive"}
    assert validate_create(API_KEY, body) == {"name": "ci", "publicValue": "AK",
                                              "secretValue": "SK"}


@pytest.mark.parametrize("body", [[], ["serial"], "serial=s", 5, True])
@pytest.mark.parametrize("validate", [validate_create, validate_update])
def test_a_body_that_is_not_an_object_is_invalid_body_content(validate: Validate,
                                                              body: Any) -> None:
    error = rejected(validate, WIDGET, body)
    assert (error.code, error.field_name) == ("InvalidBodyContent", None)


def test_an_empty_body_counts_as_an_empty_object() -> None:
    assert validate_create(ACCOUNT, None) == {"kind": "user"}
    assert validate_update(WIDGET, None) == {}
    error = rejected(validate_create, WIDGET, None)
    assert (error.code, error.field_name) == ("MissingRequired", "serial")


# validate_update


def test_update_returns_only_the_given_updatable_fields_without_defaults() -> None:
    assert validate_update(WIDGET, {"size": 3, "code": "abc"}) == {"size": 3, "code": "abc"}
    assert validate_update(WIDGET, {}) == {}


@pytest.mark.parametrize(("schema", "body"), [
    (WIDGET, {"serial": "s2"}),
    (WIDGET, {"color": "green"}),
    (WIDGET, {"env": "not even a map"}),
    (WIDGET, {"readonly": "x"}),
    (ACCOUNT, {"kind": "admin"}),
    (PROJECT, {"orchestration": "kubernetes"}),
    (API_KEY, {"publicValue": "AK"}),
    (HOST, {"state": "active", "memory": 5}),
])
def test_update_ignores_fields_that_are_not_updatable(schema: Schema,
                                                      body: dict[str, Any]) -> None:
    assert validate_update(schema, body) == {}


def test_update_can_clear_a_nullable_field() -> None:
    assert validate_update(WIDGET, {"code": None}) == {"code": None}


@pytest.mark.parametrize(("schema", "field"), [(WIDGET, "owner"), (PROJECT, "name")])
def test_update_to_null_of_a_non_nullable_field_is_not_nullable(schema: Schema,
                                                                field: str) -> None:
    error = rejected(validate_update, schema, {field: None})
    assert (error.code, error.field_name) == ("NotNullable", field)


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"size": 11}, "MaxLimitExceeded", "size"),
    ({"size": True}, "InvalidType", "size"),
    ({"code": "abcde"}, "MaxLengthExceeded", "code"),
    ({"tags": ["a", 2]}, "InvalidType", "tags"),
    ({"colour": "red"}, "InvalidField", "colour"),
])
def test_update_checks_updatable_values_like_create(body: dict[str, Any], code: str,
                                                    field: str) -> None:
    error = rejected(validate_update, WIDGET, body)
    assert (error.code, error.field_name) == (code, field)


def test_update_ignores_keys_starting_with_underscore() -> None:
    assert validate_update(WIDGET, {"size": 2, "_access_key": "AK"}) == {"size": 2}


def test_update_of_host_labels_checks_the_map_values() -> None:
    assert validate_update(HOST, {"labels": {"zone": "eu"}}) == {"labels": {"zone": "eu"}}
    error = rejected(validate_update, HOST, {"labels": {"zone": 1}})
    assert (error.code, error.field_name) == ("InvalidType", "labels")
