"""Compare the schemas Corral serves with Rancher 1.6's, as ``tests/data/rancher/`` describes them.

The description is data checked into the tree, so nothing here needs the network or
Rancher's repositories. The comparison functions are pure; the ``served_*`` functions at the
end fetch what they compare from a running server (the test's in-process one, or the refresh
script's). Each difference is one line, ``<version> <type> <aspect>: <detail>``, so that the
allowed list (``tests/data/rancher/allowed_differences.txt``) can name every tolerated one
exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.api.dialect import dialect_for
from tests.api.agent_double import attach

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "rancher"
ALLOWED_FILE = DATA_DIR / "allowed_differences.txt"
VERSIONS = ("v1", "v2-beta")

# Field attributes compared whenever Rancher's description has them.
COMPARED_ATTRIBUTES = ("type", "nullable", "create", "update", "required", "options")
# Links every resource has in both servers; they say nothing about the type.
COMMON_LINKS = frozenset({"self", "schemas"})


def load_rancher() -> dict[str, dict[str, Any]]:
    """Every type Rancher's description covers, by schema id."""
    types: dict[str, dict[str, Any]] = {}
    for path in sorted(DATA_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        types[doc["type"]] = doc
    return types


def rancher_version(doc: Mapping[str, Any], version: str) -> Mapping[str, Any] | None:
    described: Mapping[str, Any] | None = doc["versions"].get(version)
    return described


def schema_differences(version: str, rancher: Mapping[str, Mapping[str, Any]],
                       served: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every difference between Rancher's schemas and the served ones, for one API version.

    ``served`` maps schema ids to the schema JSON Corral renders.
    """
    out: list[str] = []
    for type_id in sorted(set(rancher) | set(served)):
        doc = rancher.get(type_id)
        theirs = rancher_version(doc, version) if doc else None
        ours = served.get(type_id)
        prefix = f"{version} {type_id}"
        if theirs is None and ours is None:
            continue
        if ours is None:
            out.append(f"{prefix} type: not served")
        elif theirs is None:
            out.append(f"{prefix} type: not in Rancher")
        else:
            out.extend(f"{prefix} {line}" for line in _type_differences(theirs, ours))
    return out


def _type_differences(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> Iterator[str]:
    for key in ("pluralName", "baseType"):
        if theirs.get(key) and theirs[key] != ours.get(key):
            yield f"{key}: rancher={theirs[key]} corral={ours.get(key)}"
    for key in ("collectionMethods", "resourceMethods"):
        want, got = sorted(theirs[key]), sorted(ours.get(key) or [])
        if want != got:
            yield f"{key}: rancher={_show(want)} corral={_show(got)}"
    yield from _field_differences(theirs["resourceFields"], ours.get("resourceFields") or {})
    yield from _action_differences(theirs["resourceActions"], ours.get("resourceActions") or {})
    # Filters on a field only one side has add nothing to that field's own difference.
    shared = set(theirs["resourceFields"]) & set(ours.get("resourceFields") or {})
    yield from _filter_differences(
        {k: v for k, v in theirs["collectionFilters"].items() if k in shared},
        {k: v for k, v in (ours.get("collectionFilters") or {}).items() if k in shared})


def _field_differences(theirs: Mapping[str, Mapping[str, Any]],
                       ours: Mapping[str, Mapping[str, Any]]) -> Iterator[str]:
    for name in sorted(set(theirs) | set(ours)):
        if name not in ours:
            yield f"field {name}: missing"
            continue
        if name not in theirs:
            yield f"field {name}: extra"
            continue
        want, got = theirs[name], ours[name]
        for attribute in COMPARED_ATTRIBUTES:
            expected = _normal(attribute, want.get(attribute))
            actual = _normal(attribute, got.get(attribute))
            if expected != actual:
                yield f"field {name}.{attribute}: rancher={_show(expected)} corral={_show(actual)}"
        if "default" in want and want["default"] != got.get("default"):
            yield (f"field {name}.default: rancher={_show(want['default'])} "
                   f"corral={_show(got.get('default'))}")


def _action_differences(theirs: Mapping[str, Mapping[str, Any]],
                        ours: Mapping[str, Mapping[str, Any]]) -> Iterator[str]:
    for name in sorted(set(theirs) | set(ours)):
        if name not in ours:
            yield f"action {name}: missing"
        elif name not in theirs:
            yield f"action {name}: extra"
        else:
            for key in ("input", "output"):
                want, got = theirs[name].get(key), ours[name].get(key)
                if want != got:
                    yield f"action {name}.{key}: rancher={_show(want)} corral={_show(got)}"


def _filter_differences(theirs: Mapping[str, Mapping[str, Any]],
                        ours: Mapping[str, Mapping[str, Any]]) -> Iterator[str]:
    for name in sorted(set(theirs) | set(ours)):
        if name not in ours:
            yield f"filter {name}: missing"
        elif name not in theirs:
            yield f"filter {name}: extra"
        else:
            want, got = sorted(theirs[name]["modifiers"]), sorted(ours[name].get("modifiers", []))
            if want != got:
                yield f"filter {name}.modifiers: rancher={_show(want)} corral={_show(got)}"


def link_differences(version: str, type_id: str, rancher: Mapping[str, Mapping[str, Any]],
                     links: Iterable[str], served_types: Iterable[str]) -> list[str]:
    """Differences between Rancher's resource links for a type and a served resource's links.

    Only Rancher's links to types the server serves count (``served_types``: names of served
    schemas, their plurals and base types): a link to a type Corral lacks has nowhere to lead,
    and it starts to count as soon as that type is served. Rancher's stats links lead to no
    type and always count. Names are compared without case:
    Rancher's v1 schemas spell them in lower case (``instancelinks``) where v2-beta spells
    them in camel case (``instanceLinks``).
    """
    theirs = rancher_version(rancher[type_id], version)
    assert theirs is not None
    targets = {name.lower() for name in served_types}
    known = {name.lower(): name for name in theirs["links"]}
    want = {key for key in known if key in targets}
    stats = {name.lower(): name for name in theirs.get("statsLinks", [])}
    known.update(stats)
    want |= set(stats)
    got = {name.lower(): name for name in links if name not in COMMON_LINKS}
    prefix = f"{version} {type_id} link"
    out = [f"{prefix} {known[key]}: missing" for key in sorted(want - set(got))]
    out += [f"{prefix} {got[key]}: extra" for key in sorted(set(got) - set(known))]
    return out


def link_targets(served: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """What a link may be named after: each served type's id, plural, base type and its plural."""
    names: set[str] = set()
    for schema_id, schema in served.items():
        base = schema.get("baseType") or schema_id
        names |= {schema_id, schema.get("pluralName") or schema_id, base, base + "s"}
    return names


def _normal(attribute: str, value: Any) -> Any:
    """Absent flags mean false; options are a set, whatever their order."""
    if attribute in ("nullable", "create", "update", "required"):
        return bool(value)
    if attribute == "options" and value is not None:
        return sorted(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return json.dumps(value) if not isinstance(value, str) else value


@dataclass(frozen=True)
class Allowed:
    """One tolerated difference and the one-line reason it is tolerated."""

    difference: str
    reason: str
    group: str


def load_allowed(path: Path = ALLOWED_FILE) -> list[Allowed]:
    """The allowed list: ``<difference> | <reason>`` lines under ``## <group>`` headings."""
    entries: list[Allowed] = []
    group = ""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if line.startswith("## "):
            group = line[3:].strip()
            continue
        if not line or line.startswith("#"):
            continue
        difference, sep, reason = line.partition(" | ")
        if not sep or not reason.strip():
            raise ValueError(f"{path.name}:{number}: an entry needs ' | ' and a reason")
        entries.append(Allowed(difference.strip(), reason.strip(), group))
    return entries


def render_allowed(entries: Iterable[Allowed], header: str) -> str:
    """The allowed list as text, grouped by type and sorted, for the refresh script."""
    by_group: dict[str, list[Allowed]] = {}
    for entry in entries:
        by_group.setdefault(entry.group, []).append(entry)
    lines = [header.rstrip(), ""]
    for group in sorted(by_group):
        lines.append(f"## {group}")
        lines.extend(f"{e.difference} | {e.reason}"
                     for e in sorted(by_group[group], key=lambda e: e.difference))
        lines.append("")
    return "\n".join(lines)


def group_of(difference: str) -> str:
    """The type a difference is about: the allowed list is grouped by it."""
    return difference.split(" ", 2)[1]


async def served_schemas(client: Any, version: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The schemas a server lists for one API version, by id (``client``: an aiohttp client)."""
    resp = await client.get(f"/{version}/schemas", params={"limit": "1000"}, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return {schema["id"]: schema for schema in body["data"]}


# Resources the comparison creates, in order, and the body each is created with; a host
# (and its storage pool) come from a scripted agent first.
CREATABLE: Mapping[str, Mapping[str, Any]] = {
    "account": {"name": "conformance", "kind": "user"},
    "project": {"name": "conformance"},
    "apiKey": {"name": "conformance"},
    "registrationToken": {},
    "registry": {"serverAddress": "conformance.test"},
    "registryCredential": {"publicValue": "user", "secretValue": "secret"},
    "volume": {"name": "conformance", "driver": "local"},
    "container": {"imageUuid": "docker:busybox", "startOnCreate": False},
}
ENVIRONMENT_TYPES = frozenset({"registrationToken", "registry", "registryCredential", "volume",
                               "container"})


async def served_links(client: Any, version: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The link names of one resource of each type in ``CREATABLE``, plus host, storagePool
    and the managed network, its driver and subnet."""
    resp = await client.get(f"/{version}/projects", params={"name": "Default"}, headers=headers)
    scoped = f"/{version}/projects/" + (await resp.json())["data"][0]["id"]
    ws, welcome = await attach(client, key=("a" if version == "v1" else "b") * 64)
    try:
        found = {"host": await _get(client, f"{scoped}/hosts/{welcome.host_id}", headers)}
        pools = await _get(client, f"{scoped}/storagepools", headers)
        found["storagePool"] = next(p for p in pools if welcome.host_id in p["hostIds"])
        # Every environment's own: its managed network, that network's driver and subnet.
        managed = (await _get(client, f"{scoped}/networks?name=managed", headers))[0]
        found["network"] = managed
        network_url = f"{scoped}/networks/{managed['id']}"
        found["networkDriver"] = await _get(client, f"{network_url}/networkDriver", headers)
        found["subnet"] = (await _get(client, f"{network_url}/subnets", headers))[0]
        for type_id, body in CREATABLE.items():
            # Names unique per version: the refresh script asks one server for both.
            values = {key: value.replace("conformance", f"conformance-{version}")
                      if isinstance(value, str) else value for key, value in body.items()}
            if type_id == "registryCredential":
                values["registryId"] = found["registry"]["id"]
            if type_id == "container":
                values["requestedHostId"] = found["host"]["id"]
            root = scoped if type_id in ENVIRONMENT_TYPES else f"/{version}"
            resp = await client.post(f"{root}/{_collection(type_id)}", json=values,
                                     headers=headers)
            assert resp.status in (200, 201), await resp.text()
            found[type_id] = await resp.json()
    finally:
        await ws.close()
    return {type_id: sorted(resource["links"]) for type_id, resource in found.items()}


def _collection(type_id: str) -> str:
    return "registries" if type_id == "registry" else f"{type_id.lower()}s"


async def _get(client: Any, path: str, headers: Mapping[str, str]) -> Any:
    """A resource, or a collection's data."""
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return body["data"] if body["type"] == "collection" else body


async def served_differences(client: Any, version: str, headers: Mapping[str, str]) -> list[str]:
    """Every difference from Rancher 1.6 a running server shows for one API version."""
    rancher = load_rancher()
    served = await served_schemas(client, version, headers)
    # Rancher's description files a type under one name (``stack``) whatever a version
    # calls it (``environment`` on /v1): compare each served schema with its own type's.
    dialect = dialect_for(version)
    out = schema_differences(version, rancher,
                             {dialect.type_in(k) or k: v for k, v in served.items()})
    for type_id, links in (await served_links(client, version, headers)).items():
        if rancher_version(rancher[type_id], version) is None:
            continue  # a type this version lacks: its "type" difference says so
        out.extend(link_differences(version, type_id, rancher, links, link_targets(served)))
    return sorted(out)
