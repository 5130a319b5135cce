"""Property-based fuzzing of the REST edge of a real ``corral-server`` process.

For every schema the server serves (read from ``/v1/schemas`` at run time, so a type added
later is covered without editing this file): bodies for create, update and every action,
ids for reads by id, query strings for filtered lists, and odd paths. Whatever is sent, the
answer is a success or a 4xx with Rancher's error body, never a 5xx or a dropped
connection; the server keeps answering its health check, logs no ERROR, and its RSS after
the run stays within 1.5 times what it was before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.api.fuzz_agent import ScriptedAgent, register, registration_token, start_agent
from tests.api.fuzz_harness import (
    ADMIN_AUTH,
    Call,
    Case,
    Watched,
    check_reply,
    collection_path,
    collections,
    drawn,
    fuzzed_server,
    run_each,
    schemas,
)
from tests.api.fuzzing import (
    RAW_PROBES,
    bodies,
    encoded_text,
    ids,
    probe_bodies,
    probe_ids,
    probe_queries,
    queries,
)
from tests.support.processes import ServerProcess

# Examples per schema and endpoint: enough to meet every kind of hostile value, few enough
# for the module to run in about a minute on two cores.
BODY_EXAMPLES = 15
ACTION_EXAMPLES = 5
READ_EXAMPLES = 20
LIST_EXAMPLES = 20
PATH_EXAMPLES = 50
HOSTS_TO_ACT_ON = 3
LINKS = ("account", "hosts", "instances", "volumes", "self", "bogus", "")
ODD_PATHS = ("/v1/%00", "/v1/%0D%0A", "/v1/%ED%A0%80", "/v1/projects/%00", "/v1/projects/%0D",
             "/v1/projects/1a1%00/projects", "/v1/projects/1a1%0A/hosts", "/v1/hosts/%0D%0A",
             f"/v1/projects/1a{'9' * 30}/hosts", "/v2-beta/projects/%0A/schemas",
             "/v1/schemas/%00", "/v1//projects//", "/v1/%2E%2E/%2E%2E/healthz",
             "/v1/projects/" + "x" * 9000)  # a request line longer than aiohttp reads


SEED_HINTS = {"imageUuid": "docker:busybox"}


class Targets:
    """Resources made for the fuzz to update and act on, so that it never removes, purges
    or deactivates what the server started with (the admin's account and key, Default)."""

    def __init__(self, watched: Watched, all_schemas: list[dict[str, Any]]) -> None:
        self._watched = watched
        self._schemas = {s["id"]: s for s in all_schemas}
        self._ids: dict[str, list[str]] = {}
        self._made: dict[str, list[str]] = {}
        self._count = 0
        self.refresh()
        self.original = {i for known in self._ids.values() for i in known}

    def refresh(self) -> None:
        for schema in collections(self._schemas.values()):
            resp = self._watched.api("GET", collection_path(schema) + "?limit=1000")
            self._ids[schema["id"]] = [r["id"] for r in resp.json().get("data", [])]

    def ids_of(self, schema_id: str) -> list[str]:
        return self._ids.get(schema_id, [])

    def foreign_ids(self, schema_id: str) -> list[str]:
        return [ids[0] for other, ids in sorted(self._ids.items()) if other != schema_id and ids]

    def adopt_new(self) -> None:
        """Take what appeared since start-up (hosts registered for the fuzz) as targets."""
        self.refresh()
        for schema_id, known in self._ids.items():
            self._made[schema_id] = [i for i in known if i not in self.original]

    def seed(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """A body that creates one of this type: its required fields, plainly filled."""
        body: dict[str, Any] = {}
        for name, spec in schema["resourceFields"].items():
            if not (spec.get("create") and spec.get("required")):
                continue
            kind = str(spec["type"])
            if spec.get("options"):
                body[name] = spec["options"][0]
            elif kind.startswith("reference["):
                body[name] = (self.ids_of(kind[10:-1]) or ["1x1"])[-1]
            elif kind in ("int", "float"):
                body[name] = spec.get("min") or 1
            elif kind == "boolean":
                body[name] = False
            else:
                body[name] = SEED_HINTS.get(name, f"fuzz-{self._count}")
        return body

    def target(self, schema: Mapping[str, Any], fresh: bool) -> str:
        """An id of this type the fuzz may change: newly made if asked (or if none was made
        yet) and possible."""
        made = self._made.setdefault(schema["id"], [])
        if (fresh or not made) and "POST" in schema["collectionMethods"]:
            self._count += 1
            resp = self._watched.api("POST", collection_path(schema), json=self.seed(schema))
            check_reply(resp.status_code, resp.content, f"creating a {schema['id']} target")
            if resp.status_code == 201:
                made.append(resp.json()["id"])
        return made[-1] if made else f"{schema['id']}-without-target"


@dataclass
class Edge:
    watched: Watched
    targets: Targets
    schemas: list[dict[str, Any]]
    agent: ScriptedAgent
    # Defects found by earlier tests of the module, each reported once.
    known: set[str] = field(default_factory=set)

    def schema(self, schema_id: str) -> Mapping[str, Any]:
        return next(s for s in self.schemas if s["id"] == schema_id)

    def send(self, call: Call, schema: Mapping[str, Any] | None = None) -> None:
        """Send one request and check the answer and the server after it."""
        def exchange() -> None:
            path = call.path
            if "{target}" in path:
                assert schema is not None
                path = path.replace("{target}", self.targets.target(schema, call.fresh_target))
            status, content = self.watched.wire.send(call, path)
            check_reply(status, content, repr(call))

        self.watched.example(repr(call), exchange)

    def verify(self, failures: list[str]) -> None:
        """Fail with every failing case, an ERROR logged late, or memory that grew since the
        module's first example."""
        failures += self.watched.final_failures()
        assert not failures, f"{len(failures)} failing case(s):\n" + "\n\n".join(failures)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with fuzzed_server(tmp_path_factory.mktemp("fuzz-rest") / "server-data") as server:
        yield from _edge(server)


def _edge(server: ServerProcess) -> Iterator[Edge]:
    watched = Watched(server)
    agent = start_agent(server.origin, ADMIN_AUTH)
    try:
        served = schemas(watched)
        targets = Targets(watched, served)
        token = registration_token(server.origin, ADMIN_AUTH)
        for _ in range(HOSTS_TO_ACT_ON):  # registered hosts without an agent
            register(server.origin, token)
        targets.adopt_new()
        watched.start_measuring()
        yield Edge(watched=watched, targets=targets, schemas=served, agent=agent)
    finally:
        agent.stop()
        watched.close()


def project_headers(edge: Edge) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    projects = edge.targets.ids_of("project")
    header = st.one_of(st.sampled_from(projects), encoded_text())
    return st.one_of(st.just(()), header.map(lambda p: (("X-API-Project-Id", p),)),
                     st.just((("Content-Type", "text/plain"),)))


def _fields(edge: Edge, schema_id: str | None) -> Mapping[str, Any]:
    if schema_id is None:
        return {}
    fields: Mapping[str, Any] = edge.schema(schema_id)["resourceFields"]
    return fields


Targeted = tuple[Call, Mapping[str, Any]]


def test_creates_never_break_the_server(edge: Edge) -> None:
    def cases() -> Iterator[Case[Call]]:
        for schema in collections(edge.schemas):
            path, fields = collection_path(schema), schema["resourceFields"]
            probes = probe_bodies(fields, "create", edge.targets.seed(schema))
            yield (f"create {schema['id']}",
                   drawn(lambda b, h, p=path: Call("POST", p, b, h),
                         bodies(fields, "create", edge.targets.ids_of), project_headers(edge)),
                   [Call("POST", path, body) for body in probes])

    edge.verify(run_each(cases(), edge.send, BODY_EXAMPLES, edge.known))


def test_updates_never_break_the_server(edge: Edge) -> None:
    def cases() -> Iterator[Case[Targeted]]:
        for schema in collections(edge.schemas):
            path, fields = collection_path(schema) + "/{target}", schema["resourceFields"]
            probes = probe_bodies(fields, "update", {})
            yield (f"update {schema['id']}",
                   drawn(lambda b, fresh, p=path, s=schema: (Call("PUT", p, b,
                                                                  fresh_target=fresh), s),
                         bodies(fields, "update", edge.targets.ids_of), st.booleans()),
                   [(Call("PUT", path, body, fresh_target=False), schema) for body in probes])

    edge.verify(run_each(cases(), lambda case: edge.send(*case), BODY_EXAMPLES, edge.known))


def test_every_action_never_breaks_the_server(edge: Edge) -> None:
    def cases() -> Iterator[Case[Targeted]]:
        for schema in collections(edge.schemas):
            for action, spec in schema["resourceActions"].items():
                path = f"{collection_path(schema)}/{{target}}?action={action}"
                fields = _fields(edge, spec.get("input"))
                seed = edge.targets.seed(edge.schema(spec["input"])) if spec.get("input") \
                    else {}
                # Without an input the body is only checked to be an object: two probes do.
                probes = probe_bodies(fields, "create", seed) if fields else \
                    [RAW_PROBES[0], RAW_PROBES[-2]]
                yield (f"action {schema['id']}.{action}",
                       drawn(lambda b, fresh, p=path, s=schema: (Call("POST", p, b,
                                                                      fresh_target=fresh), s),
                             bodies(fields, "create", edge.targets.ids_of), st.booleans()),
                       [(Call("POST", path, body), schema) for body in probes])

    edge.verify(run_each(cases(), lambda case: edge.send(*case), ACTION_EXAMPLES, edge.known))


def test_reads_by_id_never_break_the_server(edge: Edge) -> None:
    projects = edge.targets.ids_of("project")
    methods = st.sampled_from(["GET", "GET", "GET", "PATCH", "OPTIONS"])
    tail = st.one_of(st.just(""), st.sampled_from(LINKS).map(lambda link: "/" + link),
                     encoded_text().map(lambda t: "/" + t))

    def cases() -> Iterator[Case[Call]]:
        for schema in collections(edge.schemas):
            own = edge.targets.ids_of(schema["id"])
            foreign = edge.targets.foreign_ids(schema["id"])
            prefix = own[0][:2] if own else "1x"
            path = collection_path(schema)
            scoped = drawn(lambda p, c=path: f"/v1/projects/{p}{c[3:]}", ids("1a", projects, []))
            where = st.one_of(st.just(path), st.just("/v2-beta" + path[3:]), scoped)
            probes = [Call("GET", f"{path}/{i}") for i in probe_ids(prefix, foreign)]
            probes += [Call("GET", f"/v1/projects/{i}{path[3:]}")
                       for i in probe_ids("1a", [])]
            yield (f"read {schema['id']}",
                   drawn(lambda w, i, t, m: Call(m, f"{w}/{i}{t}"), where,
                         ids(prefix, own, foreign), tail, methods),
                   probes)
        names = [s["id"] for s in edge.schemas]
        yield ("read schema", drawn(lambda i: Call("GET", f"/v1/schemas/{i}"),
                                    ids("", names, [])),
               [Call("GET", f"/v1/schemas/{i}") for i in probe_ids("", [])])

    edge.verify(run_each(cases(), edge.send, READ_EXAMPLES, edge.known))


def test_filtered_lists_never_break_the_server(edge: Edge) -> None:
    projects = edge.targets.ids_of("project")

    def cases() -> Iterator[Case[Call]]:
        for schema in collections(edge.schemas):
            path = collection_path(schema)
            where = st.sampled_from([path, "/v2-beta" + path[3:],
                                     *(f"/v1/projects/{p}{path[3:]}" for p in projects)])
            yield (f"list {schema['id']}",
                   drawn(lambda w, q, h: Call("GET", f"{w}?{q}", headers=h), where,
                         queries(schema, edge.targets.ids_of), project_headers(edge)),
                   [Call("GET", f"{path}?{q}") for q in probe_queries(schema)])

    edge.verify(run_each(cases(), edge.send, LIST_EXAMPLES, edge.known))


def test_odd_paths_never_break_the_server(edge: Edge) -> None:
    names = [str(s["links"]["collection"]).rsplit("/", 1)[1] for s in collections(edge.schemas)]
    segment = st.one_of(st.sampled_from([*names, "projects", "schemas", "subscribe"]),
                        encoded_text())
    paths = drawn(lambda version, parts, method: Call(method, f"/{version}/" + "/".join(parts)),
                  st.sampled_from(["v1", "v2-beta"]), st.lists(segment, max_size=5),
                  st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    probes = [Call("GET", p) for p in ODD_PATHS]
    edge.verify(run_each([("paths", paths, probes)], edge.send, PATH_EXAMPLES, edge.known))


def test_the_reply_check_catches_what_the_fuzz_looks_for() -> None:
    """A 4xx with Rancher's body and a documented 503 pass; a bare 4xx or any 500 does not."""
    check_reply(404, b'{"type": "error", "status": 404, "code": "NotFound", "message": "x"}',
                "a 404")
    check_reply(503, b'{"type": "error", "status": 503, "code": "HostNotConnected", '
                b'"message": "away"}', "a host that is away")
    for status, content in ((404, b"not found"), (500, b'{"type": "error", "status": 500}'),
                            (422, b'{"type": "error", "status": 400, "code": "X", '
                                  b'"message": ""}')):
        with pytest.raises(AssertionError):
            check_reply(status, content, "a bad answer")
