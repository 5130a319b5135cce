"""The per-version rename table (server.api.dialect), without a server: /v1 calls a stack an
environment; /v2-beta renames nothing and hands back what it is given."""

from __future__ import annotations

from typing import Any

from multidict import MultiDict

from server.api.dialect import DIALECTS, IDENTITY
from server.api.errors import invalid
from server.api.schema import Action, Field, Schema, Scope
from server.resources import build_types
from shared.ids import prefix_for

V1 = DIALECTS["v1"]
STACK = Schema(id="stack", scope=Scope.PROJECT, prefix="1st", links=("services",),
               fields={"environment": Field(type="map[string]", create=True)},
               actions={"upgrade": Action(frozenset({"active"}), "stackUpgrade", "stack"),
                        "remove": Action(frozenset({"active"}))})
SERVICE = Schema(id="service", scope=Scope.PROJECT, links=("stack",),
                 fields={"stackId": Field(type="reference[stack]", create=True),
                         "hostIds": Field(type="array[reference[host]]")})


def rendered_service() -> dict[str, Any]:
    return {"id": "1s9", "type": "service", "baseType": "service", "kind": "service",
            "stackId": "1st5", "hostIds": ["1h1"],
            "links": {"self": "http://h/v1/services/1s9", "stack": "http://h/v1/stacks/1st5",
                      "instances": "http://h/v1/services/1s9/instances"},
            "actions": {"remove": "http://h/v1/services/1s9?action=remove"}}


def test_v1_describes_the_stack_schema_as_environment() -> None:
    schema = V1.schema(STACK).render("http://h/v1")
    assert schema["id"] == "environment" and schema["pluralName"] == "environments"
    assert schema["baseType"] == "environment"
    assert schema["links"]["collection"] == "http://h/v1/environments"
    assert schema["resourceActions"] == {
        "upgrade": {"input": "environmentUpgrade", "output": "environment"},
        "remove": {"input": None, "output": "environment"}}
    assert "environment" in schema["resourceFields"]  # a field, not the type
    service = V1.schema(SERVICE).render("http://h/v1")
    assert service["resourceFields"]["environmentId"]["type"] == "reference[environment]"
    assert service["includeableLinks"] == ["environment"]
    assert V1.schema(STACK) is V1.schema(STACK)


def test_v1_renames_a_rendered_service_its_reference_links_and_urls() -> None:
    out = V1.resource_out(SERVICE, rendered_service())
    assert out["environmentId"] == "1e5" and "stackId" not in out
    assert out["hostIds"] == ["1h1"]
    assert out["links"] == {"self": "http://h/v1/services/1s9",
                            "environment": "http://h/v1/environments/1e5",
                            "instances": "http://h/v1/services/1s9/instances"}


def test_v1_renames_a_rendered_stack_its_id_type_kind_and_urls() -> None:
    out = V1.resource_out(STACK, {
        "id": "1st5", "type": "stack", "baseType": "stack", "kind": "stack",
        "links": {"self": "http://h/v1/projects/1a5/stacks/1st5",
                  "services": "http://h/v1/projects/1a5/stacks/1st5/services"},
        "actions": {"upgrade": "http://h/v1/projects/1a5/stacks/1st5?action=upgrade"}})
    assert (out["id"], out["type"], out["baseType"], out["kind"]) == (
        "1e5", "environment", "environment", "environment")
    assert out["links"]["services"] == "http://h/v1/projects/1a5/environments/1e5/services"
    assert out["actions"]["upgrade"] == "http://h/v1/projects/1a5/environments/1e5?action=upgrade"


def test_v1_takes_its_own_names_and_either_id_prefix() -> None:
    assert V1.collection_in("environments") == "stacks"
    assert V1.collection_in("stacks") is None and V1.type_in("stack") is None
    assert V1.type_in("environmentUpgrade") == "stackUpgrade" and V1.type_in("host") == "host"
    assert V1.parse_id("1e5", "1st") == 5 and V1.parse_id("1st5", "1st") == 5
    assert V1.parse_id("1s5", "1st") is None
    assert V1.body_in(SERVICE, {"environmentId": "1e5", "name": "a", "type": "service"}) == {
        "stackId": "1st5", "name": "a", "type": "service"}
    params = V1.query_in(STACK, MultiDict([("id_ne", "1e3"), ("include", "services")]))
    assert list(params.items()) == [("id_ne", "1st3"), ("include", "services")]
    params = V1.query_in(SERVICE, MultiDict([("environmentId_ne", "1e3"),
                                             ("sort", "environmentId"),
                                             ("include", "environment"), ("name", "x")]))
    assert list(params.items()) == [("stackId_ne", "1e3"), ("sort", "stackId"),
                                    ("include", "stack"), ("name", "x")]


def test_v1_errors_name_the_field_as_the_client_sent_it() -> None:
    error = invalid("MissingRequired", "stackId", "stackId is required")
    V1.error_out(error)
    assert (error.field_name, error.message) == ("environmentId", "environmentId is required")


def test_the_v1_table_agrees_with_the_schemas_and_rancher_s_id_rule() -> None:
    """Each renamed type's collection and prefix are the ones its v1 name gives (cattle
    formatted a v1 stack's id for the type ``environment``: ``1e``)."""
    types = build_types()
    for own, wire in V1.types.items():
        schema = types.schema(own)
        assert schema is not None, own
        if schema.embedded:
            continue
        renamed = V1.schema(schema)
        assert V1.collections[schema.collection_name] == renamed.collection_name
        assert V1.prefixes[schema.id_prefix] == prefix_for(wire) == "1e"


def test_v2_beta_renames_nothing() -> None:
    out = rendered_service()
    assert IDENTITY.resource_out(SERVICE, out) is out and out == rendered_service()
    assert IDENTITY.schema(STACK) is STACK
    params = MultiDict([("stackId", "1st5")])
    assert IDENTITY.query_in(SERVICE, params) is params
    assert IDENTITY.collection_in("stacks") == "stacks" and IDENTITY.parse_id("1e5", "1st") is None
