"""Collection query strings: filters with modifiers, sort, order, limit and markers."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from server.api.errors import ValidationError
from server.api.query import DEFAULT_LIMIT, MAX_LIMIT, CollectionQuery, parse_collection_query
from server.api.schema import Field, Schema, Scope
from server.resources.hosts import HOST
from server.store import Condition

GADGET = Schema(
    id="gadget",
    scope=Scope.PROJECT,
    fields={
        "flag": Field(type="boolean"),
        "ratio": Field(type="float"),
        "count": Field(type="int"),
        "secret": Field(filterable=False),
    },
)


def parse(schema: Schema = HOST, *pairs: tuple[str, str]) -> CollectionQuery:
    return parse_collection_query(schema, MultiDict(pairs))


def rejected(schema: Schema, *pairs: tuple[str, str]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(schema, *pairs)
    assert caught.value.status == 422
    return caught.value


# defaults


def test_no_parameters_give_the_first_page_in_id_order() -> None:
    assert parse(HOST) == CollectionQuery(conditions=[], filters={}, sort=None, descending=False,
                                          limit=DEFAULT_LIMIT, offset=0)
    assert DEFAULT_LIMIT == 100


# filters


def test_a_bare_field_filters_by_equality() -> None:
    query = parse(HOST, ("name", "web-1"))
    assert query.conditions == [Condition(field="name", op="eq", value="web-1", kind="string")]
    assert query.filters == {"name": [{"modifier": "eq", "value": "web-1"}]}


@pytest.mark.parametrize("modifier", ["eq", "ne", "prefix", "like", "notlike"])
def test_string_modifiers(modifier: str) -> None:
    query = parse(HOST, (f"agentState_{modifier}", "node%"))
    assert query.conditions == [Condition(field="agentState", op=modifier,
                                          value="node%", kind="string")]
    assert query.filters == {"agentState": [{"modifier": modifier, "value": "node%"}]}


@pytest.mark.parametrize("modifier", ["eq", "ne", "lt", "lte", "gt", "gte"])
def test_number_modifiers_convert_the_value_to_a_number(modifier: str) -> None:
    query = parse(HOST, (f"memory_{modifier}", "1024"))
    assert query.conditions == [Condition(field="memory", op=modifier,
                                          value=1024, kind="int")]


@pytest.mark.parametrize("modifier", ["null", "notnull"])
@pytest.mark.parametrize(("field", "kind"), [("name", "string"), ("memory", "int"),
                                             ("removed", "int")])
def test_null_modifiers_ignore_the_value(modifier: str, field: str, kind: str) -> None:
    query = parse(HOST, (f"{field}_{modifier}", "whatever"))
    assert query.conditions == [Condition(field=field, op=modifier,
                                          value=None, kind=kind)]


@pytest.mark.parametrize(("schema", "pair", "condition"), [
    (GADGET, ("ratio_gt", "0.5"), Condition("ratio", "gt", 0.5, "float")),
    (GADGET, ("ratio", "2"), Condition("ratio", "eq", 2.0, "float")),
    (GADGET, ("count_lte", "-3"), Condition("count", "lte", -3, "int")),
    (GADGET, ("flag", "true"), Condition("flag", "eq", True, "bool")),
    (GADGET, ("flag_ne", "FALSE"), Condition("flag", "ne", False, "bool")),
    (HOST, ("removed_gte", "1700000000000"),
     Condition("removed", "gte", 1_700_000_000_000, "int")),
    (HOST, ("state", "active"), Condition("state", "eq", "active", "string")),
    (HOST, ("agentState_ne", "active"), Condition("agentState", "ne", "active", "string")),
])
def test_values_are_converted_by_field_type(schema: Schema, pair: tuple[str, str],
                                            condition: Condition) -> None:
    assert parse(schema, pair).conditions == [condition]


def test_repeated_and_combined_filters_all_apply() -> None:
    query = parse(HOST, ("memory_gt", "1"), ("memory_lt", "9"), ("name", "a"), ("name", "b"))
    assert query.conditions == [
        Condition("memory", "gt", 1, "int"), Condition("memory", "lt", 9, "int"),
        Condition("name", "eq", "a"), Condition("name", "eq", "b"),
    ]
    assert query.filters["name"] == [{"modifier": "eq", "value": "a"},
                                     {"modifier": "eq", "value": "b"}]


@pytest.mark.parametrize("pair", [
    ("bogus", "1"),
    ("name_bogus", "1"),        # a known field with an unknown modifier is not ours
    ("_", "1700000000"),        # cache busters
    ("_access_key", "AK"),
    ("include", "instances"),
    ("action", "remove"),
    ("projectId", "1a5"),
])
def test_unknown_parameters_are_ignored(pair: tuple[str, str]) -> None:
    assert parse(HOST, pair) == parse(HOST)


@pytest.mark.parametrize(("pair", "field"), [
    (("memory_like", "1%"), "memory"),
    (("memory_prefix", "1"), "memory"),
    (("memory_notlike", "1"), "memory"),
    (("name_lt", "b"), "name"),
    (("name_gte", "b"), "name"),
    (("flag_gt", "true"), "flag"),
    (("flag_prefix", "t"), "flag"),
    (("removed_like", "1%"), "removed"),
])
def test_a_modifier_that_does_not_fit_the_field_type_is_invalid_option(
        pair: tuple[str, str], field: str) -> None:
    error = rejected(GADGET if field == "flag" else HOST, pair)
    assert (error.code, error.field_name) == ("InvalidOption", field)
    assert field in str(error)


@pytest.mark.parametrize(("schema", "param"), [(HOST, "labels"), (HOST, "info"),
                                               (HOST, "type"), (GADGET, "secret"),
                                               (GADGET, "secret_ne")])
def test_a_field_that_is_not_filterable_is_invalid_option(schema: Schema, param: str) -> None:
    error = rejected(schema, (param, "x"))
    assert (error.code, error.field_name) == ("InvalidOption", param.split("_")[0])


@pytest.mark.parametrize(("schema", "pair", "field"), [
    (HOST, ("memory", "lots"), "memory"),
    (HOST, ("memory_gt", "1.5"), "memory"),
    (HOST, ("memory", ""), "memory"),
    (HOST, ("removed_lt", "yesterday"), "removed"),
    (GADGET, ("ratio", "half"), "ratio"),
    (GADGET, ("count", "0x10"), "count"),
    (GADGET, ("flag", "yes"), "flag"),
    (GADGET, ("flag", "1"), "flag"),
    (GADGET, ("flag", ""), "flag"),
])
def test_a_value_that_does_not_fit_the_field_type_is_invalid_format(
        schema: Schema, pair: tuple[str, str], field: str) -> None:
    error = rejected(schema, pair)
    assert (error.code, error.field_name) == ("InvalidFormat", field)


# ids


@pytest.mark.parametrize(("pair", "condition"), [
    (("id", "1h5"), Condition("id", "eq", 5, "int")),
    (("id_ne", "1h12"), Condition("id", "ne", 12, "int")),
    (("id", "1i5"), Condition("id", "eq", -1, "int")),      # another type's id matches nothing
    (("id", "5"), Condition("id", "eq", -1, "int")),
    (("id", "1h05"), Condition("id", "eq", -1, "int")),
    (("id", "garbage"), Condition("id", "eq", -1, "int")),
    (("id_null", ""), Condition("id", "null", None, "int")),
])
def test_id_filter_uses_the_row_number_and_matches_nothing_for_a_foreign_id(
        pair: tuple[str, str], condition: Condition) -> None:
    query = parse(HOST, pair)
    assert query.conditions == [condition]
    assert query.filters == {"id": [{"modifier": condition.op, "value": pair[1]}]}


# pagination


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("5", 5), ("100", 100), ("999", 999),
                                            ("3000", 3000), ("3001", MAX_LIMIT),
                                            ("5000000", MAX_LIMIT), ("", DEFAULT_LIMIT)])
def test_limit_is_taken_and_capped_at_the_maximum(raw: str, limit: int) -> None:
    assert MAX_LIMIT == 3000
    assert parse(HOST, ("limit", raw)).limit == limit


@pytest.mark.parametrize(("raw", "code"), [("ten", "InvalidFormat"), ("1.5", "InvalidFormat"),
                                           ("0", "MinLimitExceeded"),
                                           ("-5", "MinLimitExceeded")])
def test_a_bad_limit_is_a_422(raw: str, code: str) -> None:
    error = rejected(HOST, ("limit", raw))
    assert (error.code, error.field_name) == (code, "limit")


@pytest.mark.parametrize(("marker", "offset"), [("m0", 0), ("m100", 100), ("m250", 250),
                                                ("", 0)])
def test_marker_gives_the_offset(marker: str, offset: int) -> None:
    assert parse(HOST, ("marker", marker)).offset == offset


@pytest.mark.parametrize("marker", ["100", "m", "m-1", "mx", "n100", "m1.5", "m 1",
                                    "eyJvZmZzZXQiOjEwMH0="])
def test_a_marker_this_server_did_not_issue_is_invalid_format(marker: str) -> None:
    error = rejected(HOST, ("marker", marker))
    assert (error.code, error.field_name) == ("InvalidFormat", "marker")


def test_a_marker_with_a_non_decimal_digit_is_invalid_format() -> None:
    error = rejected(HOST, ("marker", "m²"))
    assert (error.code, error.field_name) == ("InvalidFormat", "marker")


# sort and order


@pytest.mark.parametrize(("pairs", "sort", "descending"), [
    ([("sort", "name")], "name", False),
    ([("sort", "created"), ("order", "desc")], "created", True),
    ([("sort", "state"), ("order", "DESC")], "state", True),
    ([("order", "asc")], None, False),
    ([("order", "desc")], None, True),
    ([("sort", ""), ("order", "")], None, False),
])
def test_sort_and_order(pairs: list[tuple[str, str]], sort: str | None,
                        descending: bool) -> None:
    query = parse(HOST, *pairs)
    assert (query.sort, query.descending) == (sort, descending)


@pytest.mark.parametrize("field", ["bogus", "labels", "type", "Name", "memory"])
def test_sort_by_an_unknown_or_unfilterable_field_is_invalid_option(field: str) -> None:
    error = rejected(HOST, ("sort", field))
    assert (error.code, error.field_name) == ("InvalidOption", "sort")


def test_an_order_other_than_asc_or_desc_is_invalid_option() -> None:
    error = rejected(HOST, ("order", "sideways"))
    assert (error.code, error.field_name) == ("InvalidOption", "order")


def test_everything_together() -> None:
    pairs: list[tuple[str, Any]] = [("state", "active"), ("sort", "name"), ("order", "desc"),
                                    ("limit", "10"), ("marker", "m20"), ("_", "1")]
    assert parse(HOST, *pairs) == CollectionQuery(
        conditions=[Condition("state", "eq", "active")],
        filters={"state": [{"modifier": "eq", "value": "active"}]},
        sort="name", descending=True, limit=10, offset=20)


# modifiers as Rancher 1.6 gives them per field


@pytest.mark.parametrize(("pair", "condition"), [
    (("id_gt", "1h5"), Condition("id", "gt", 5, "int")),
    (("id_lte", "1h12"), Condition("id", "lte", 12, "int")),
    (("id_notnull", ""), Condition("id", "notnull", None, "int")),
])
def test_ids_order_by_row_number(pair: tuple[str, str], condition: Condition) -> None:
    assert parse(HOST, pair).conditions == [condition]


@pytest.mark.parametrize("raw", ["1i5", "5", "garbage", "1h99999999999"])
def test_an_id_that_names_no_row_here_cannot_be_ordered_against(raw: str) -> None:
    error = rejected(HOST, ("id_lt", raw))
    assert (error.code, error.field_name) == ("InvalidFormat", "id")


@pytest.mark.parametrize(("pair", "condition"), [
    (("created_gte", "1700000000000"), Condition("created", "gte", 1700000000000, "int")),
    (("created_lt", "2023-11-14T22:13:20Z"), Condition("created", "lt", 1700000000000, "int")),
    (("created", "2023-11-14T22:13:20.5Z"), Condition("created", "eq", 1700000000500, "int")),
    (("removed_gt", "2023-11-14T22:13:20"), Condition("removed", "gt", 1700000000000, "int")),
    (("created_lt", "2023-11-15T00:13:20+02:00"),
     Condition("created", "lt", 1700000000000, "int")),
])
def test_a_date_filter_takes_milliseconds_or_a_timestamp(
        pair: tuple[str, str], condition: Condition) -> None:
    assert parse(HOST, pair).conditions == [condition]


@pytest.mark.parametrize("raw", ["yesterday", "2023-13-01T00:00:00Z", "", "1e9"])
def test_a_date_filter_with_no_date_is_invalid_format(raw: str) -> None:
    error = rejected(HOST, ("created_gt", raw))
    assert (error.code, error.field_name) == ("InvalidFormat", "created")


@pytest.mark.parametrize(("pair", "field"), [
    (("state_like", "run%"), "state"),
    (("state_prefix", "run"), "state"),
    (("accountId_like", "1a%"), "accountId"),
    (("accountId_gt", "1a5"), "accountId"),
    (("name_gt", "b"), "name"),
])
def test_modifiers_rancher_does_not_offer_on_a_field_are_invalid_option(
        pair: tuple[str, str], field: str) -> None:
    error = rejected(HOST, pair)
    assert (error.code, error.field_name) == ("InvalidOption", field)


@pytest.mark.parametrize("param", ["transitioning", "transitioning_ne", "hostname"])
def test_filters_rancher_does_not_offer_are_invalid_option(param: str) -> None:
    error = rejected(HOST, (param, "yes"))
    assert (error.code, error.field_name) == ("InvalidOption", param.split("_")[0])


def test_references_filter_by_equality_and_presence() -> None:
    query = parse(HOST, ("accountId_ne", "1a5"), ("accountId_notnull", ""))
    assert query.conditions == [Condition("accountId", "ne", 5, "int"),
                                Condition("accountId", "notnull", None, "int")]
