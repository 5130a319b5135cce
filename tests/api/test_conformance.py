"""Conformance: the schemas Corral serves against Rancher 1.6's, for /v1 and /v2-beta.

Rancher's side is data in ``tests/data/rancher/`` (one file per type, every fact naming the
public source it was read from). Every difference found must be listed in
``tests/data/rancher/allowed_differences.txt`` with a reason, and every listed difference
must still occur, so the list stays true as the gaps close. Refresh the list with
``.venv/bin/python scripts/refresh_conformance.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.conformance import (
    VERSIONS,
    Allowed,
    group_of,
    link_differences,
    link_targets,
    load_allowed,
    load_rancher,
    schema_differences,
    served_differences,
)
from tests.conftest import ADMIN

REFRESH = "run .venv/bin/python scripts/refresh_conformance.py and give each new entry a reason"


@pytest.mark.parametrize("version", VERSIONS)
async def test_served_schemas_differ_from_rancher_only_as_allowed(
        client: TestClient, version: str) -> None:
    """Every difference is allowed, and every allowed difference still occurs."""
    found = set(await served_differences(client, version, ADMIN))
    allowed = {e.difference for e in load_allowed() if e.difference.startswith(f"{version} ")}
    unexpected = sorted(found - allowed)
    stale = sorted(allowed - found)
    assert not unexpected, f"differences not allowed ({REFRESH}):\n" + "\n".join(unexpected)
    assert not stale, ("allowed differences that no longer occur (remove them, or "
                       f"{REFRESH}):\n" + "\n".join(stale))


def test_allowed_differences_are_unique_grouped_by_type_and_give_a_reason() -> None:
    entries = load_allowed()
    differences = [e.difference for e in entries]
    assert len(differences) == len(set(differences))
    for entry in entries:
        assert entry.difference.split(" ", 1)[0] in VERSIONS, entry
        assert entry.group == group_of(entry.difference), entry
        assert len(entry.reason) > 10 and "\n" not in entry.reason, entry


def test_the_description_covers_the_types_corral_serves_with_sourced_facts() -> None:
    rancher = load_rancher()
    assert {"account", "project", "apiKey", "registrationToken", "host", "container",
            "registry", "registryCredential", "volume", "storagePool", "subscribe"} <= set(rancher)
    for type_id, doc in rancher.items():
        assert doc["type"] == type_id
        for version in doc["versions"].values():
            if version is None:
                continue
            for name, described in version["resourceFields"].items():
                assert described["type"], (type_id, name)
                for source in described["source"].split("+"):
                    assert source in doc["sources"], (type_id, name, source)


def test_a_running_container_offers_the_actions_rancher_offers() -> None:
    """The lifecycle data agrees with cattle's own ``test_actions_based_on_state``."""
    lifecycle = load_rancher()["container"]["lifecycle"]
    process = lifecycle["processActionsByState"]["running"]
    api = lifecycle["apiActionsByState"]["running"]
    assert set(process + api["v2-beta"]) == {"migrate", "restart", "stop", "update", "execute",
                                             "logs", "proxy"}
    assert set(api["v1"]) - set(api["v2-beta"]) == {"setlabels"}


RANCHER: dict[str, Any] = {
    "thing": {"type": "thing", "versions": {"v1": {
        "collectionMethods": ["GET", "POST"], "resourceMethods": ["GET"],
        "resourceFields": {
            "size": {"type": "int", "nullable": True, "create": True, "default": 5},
            "mode": {"type": "enum", "options": ["a", "b"], "create": True},
            "gone": {"type": "string"},
        },
        "resourceActions": {"stop": {"input": "thingStop", "output": "thing"},
                            "start": {"input": None, "output": "thing"}},
        "collectionFilters": {"size": {"modifiers": ["eq", "gt"]}, "gone": {"modifiers": ["eq"]}},
        "links": ["hosts", "instanceLinks"],
    }}},
}


def test_comparison_names_each_missing_extra_and_changed_part() -> None:
    served: dict[str, Any] = {"thing": {
        "collectionMethods": ["POST", "GET"], "resourceMethods": ["GET", "PUT"],
        "resourceFields": {
            "size": {"type": "int", "nullable": True, "create": True},
            "mode": {"type": "enum", "options": ["b", "a"], "create": True, "update": True},
            "added": {"type": "string"},
        },
        "resourceActions": {"stop": {"input": None, "output": "thing"},
                            "extra": {"input": None, "output": "thing"}},
        "collectionFilters": {"size": {"modifiers": ["gt", "lt"]}, "mode": {"modifiers": []},
                              "added": {"modifiers": []}},
    }, "own": {"resourceFields": {}}}
    assert schema_differences("v1", RANCHER, served) == [
        "v1 own type: not in Rancher",
        "v1 thing resourceMethods: rancher=[GET] corral=[GET,PUT]",
        "v1 thing field added: extra",
        "v1 thing field gone: missing",
        "v1 thing field mode.update: rancher=false corral=true",
        "v1 thing field size.default: rancher=5 corral=null",
        "v1 thing action extra: extra",
        "v1 thing action start: missing",
        "v1 thing action stop.input: rancher=thingStop corral=null",
        "v1 thing filter mode: extra",
        "v1 thing filter size.modifiers: rancher=[eq,gt] corral=[gt,lt]",
    ]
    assert schema_differences("v1", {**RANCHER, "lost": RANCHER["thing"]}, {}) == [
        "v1 lost type: not served", "v1 thing type: not served"]


def test_links_compare_without_case_and_only_to_served_types() -> None:
    served = ["host", "hosts", "instanceLink", "instanceLinks"]
    links = ["self", "instancelinks", "stats"]
    assert link_differences("v1", "thing", RANCHER, links, served) == [
        "v1 thing link hosts: missing", "v1 thing link stats: extra"]
    assert link_differences("v1", "thing", RANCHER, links, ["instanceLinks"]) == [
        "v1 thing link stats: extra"]
    # A link Rancher has is never extra, even to a type that is not served.
    assert link_differences("v1", "thing", RANCHER, ["hosts"], []) == []


def test_links_may_name_a_served_type_its_plural_or_its_base_type() -> None:
    served = {"container": {"pluralName": "containers", "baseType": "instance"}}
    assert link_targets(served) == {"container", "containers", "instance", "instances"}


def test_an_entry_without_a_reason_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "allowed.txt"
    path.write_text("## thing\nv1 thing field gone: missing | not served yet\n")
    assert load_allowed(path) == [Allowed("v1 thing field gone: missing", "not served yet",
                                          "thing")]
    path.write_text("v1 thing field gone: missing\n")
    with pytest.raises(ValueError, match="reason"):
        load_allowed(path)
