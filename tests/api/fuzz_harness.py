"""What the fuzz tests hold a real ``corral-server`` process to, and how they run.

After every example the server must still answer its health check and must not have logged
an ERROR line since the one before. ``check_reply`` is the rule for one HTTP answer: no 5xx
(a 503 naming a disconnected host is the documented answer for a host that is away), and
every 4xx carries Rancher's JSON error body. ``run_each`` runs one Hypothesis property per
case (a schema, an endpoint) with a fixed number of examples and a fixed seed, and reports
every failing case together rather than stopping at the first.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.api.fuzzing import short
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port
from tests.support.timing import seconds, wait_for

T = TypeVar("T")
ADMIN_AUTH = (ACCESS_KEY, SECRET_KEY)
ADMIN_HEADER = "Basic " + base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()
# The documented 5xx: an instruction for a host whose agent is away.
AWAY_CODES = frozenset({"HostNotConnected", "ServiceUnavailable"})
ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ERROR ", re.MULTILINE)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)
RSS_GROWTH_LIMIT = 1.5
ROOT = str(Path(__file__).resolve().parents[2]) + "/"


def fuzz_settings(examples: int) -> settings:
    """Bounded and reproducible: a fixed number of examples, derandomized, no example
    database (CI runs the same examples every time)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    print_blob=False, report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck))


class EdgeFailure(AssertionError):
    """A property the server broke; ``signature`` tells one defect from another (where the
    server raised, or what kind of answer was wrong)."""

    def __init__(self, message: str, signature: str) -> None:
        super().__init__(message)
        self.signature = signature


def signature_of(exc: AssertionError) -> str:
    if isinstance(exc, EdgeFailure):
        return exc.signature
    return str(exc).split(" for ", 1)[0].split(" after ", 1)[0][:120]


def describe_failure(label: str, exc: BaseException) -> str:
    """The failing case, Hypothesis's note of the example, and what the check said."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return f"--- {label}\n{text}"


def drawn(make: Callable[..., T], *parts: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """``make`` applied to values of ``parts``; failure reports show the result's repr."""

    @st.composite
    def build(draw: st.DrawFn) -> T:
        return make(*(draw(part) for part in parts))

    return build()


Case = tuple[str, st.SearchStrategy[T], Sequence[T]]


def run_each(cases: Iterable[Case[T]], check: Callable[[T], None], examples: int,
             known: set[str] | None = None) -> list[str]:
    """Run ``check`` as a property over each case: its probes (explicit examples that every
    run tries: a lone surrogate, 64-bit overflow, deep nesting...) and then ``examples``
    drawn from its strategy. Returns a description of every failing case.

    A defect found in one case is reported once (``known`` holds the defects found so far):
    later cases that meet it again go on looking for others (shrinking the same defect for
    every schema would cost minutes)."""
    failures: list[str] = []
    known = set() if known is None else known
    for label, strategy, probes in cases:

        def prop(case: T) -> None:
            try:
                check(case)
            except AssertionError as exc:
                if signature_of(exc) not in known:
                    raise

        test = given(strategy)(prop)
        for probe in reversed(probes):
            test = example(probe)(test)
        try:
            fuzz_settings(examples)(test)()
        except AssertionError as exc:
            known.add(signature_of(exc))
            failures.append(describe_failure(label, exc))
        except Exception as exc:  # Hypothesis's own errors (flaky, unsatisfiable)
            failures.append(describe_failure(label, exc))
    return failures


# --- the server under test --------------------------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def error_entries(text: str) -> list[str]:
    """The ERROR entries in a log excerpt, each with its traceback."""
    starts = [m.start() for m in LOG_LINE.finditer(text)] + [len(text)]
    return [text[a:b].rstrip() for a, b in itertools.pairwise(starts)
            if ERROR_LINE.match(text, a)]


def where_raised(entry: str) -> str:
    """``file:line:function`` of the innermost frame in the project's own code."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', entry)
    ours = [f for f in frames if f[0].startswith(ROOT) and "/.venv/" not in f[0]]
    if not ours:
        return "no project frame"
    path, line, func = ours[-1]
    return f"{path.removeprefix(ROOT)}:{line}:{func}"


def error_signature(entry: str) -> str:
    """Where the server raised and what: the last line of the traceback names the error."""
    last = entry.strip().splitlines()[-1].split(":", 1)[0]
    return f"{where_raised(entry)} {last}"


@dataclass
class Watched:
    """A running server, the part of its log already checked, and its RSS at the start."""

    server: ServerProcess
    log_offset: int = 0
    rss_before: int = 0
    session: requests.Session = field(default_factory=requests.Session)
    wire: Wire = field(init=False)
    health: Wire = field(init=False)
    late_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session.auth = ADMIN_AUTH
        self.wire = Wire(self.server.origin)
        self.health = Wire(self.server.origin)

    def close(self) -> None:
        self.wire.close()
        self.health.close()
        self.session.close()

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.server.origin}{path}"
        return self.session.request(method, url, timeout=seconds(10), **kw)

    def start_measuring(self) -> None:
        self.rss_before = rss_kib(self.pid)
        self.new_errors()

    def new_errors(self) -> list[str]:
        """ERROR entries the server logged since the last call."""
        assert self.server.log_path is not None
        with self.server.log_path.open("rb") as log:
            log.seek(self.log_offset)
            fresh = log.read()
        self.log_offset += len(fresh)
        return error_entries(fresh.decode("utf-8", "replace"))

    def example(self, what: str, send: Callable[[], None]) -> None:
        """Run one example: ``send`` and its checks, then the checks of the server. An
        ERROR that appears only after its example's checks (a task that failed later) is
        kept, and reported after the run."""
        self.late_errors += self.new_errors()
        try:
            send()
        except AssertionError as exc:
            errors = self.new_errors()
            if not errors:
                raise
            raise EdgeFailure(f"{exc}\nThe server logged an ERROR, raised at "
                              f"{where_raised(errors[0])}:\n{errors[0][-3000:]}",
                              error_signature(errors[0])) from None
        self.check_still_serving(what)

    def check_still_serving(self, what: str) -> None:
        """The server answers its health check and logged no ERROR since the last check."""
        assert self.server.proc is not None and self.server.proc.poll() is None, \
            f"the server exited after {what}"
        status, _ = self.health.send(Call("GET", "/healthz"), what=f"the health check after "
                                                                   f"{what}", auth=False)
        assert status == 200, f"health check {status} after {what}"
        errors = self.new_errors()
        if errors:
            raise EdgeFailure(f"ERROR logged after {what}, raised at "
                              f"{where_raised(errors[0])}:\n{errors[0][-3000:]}",
                              error_signature(errors[0]))

    def check_memory(self) -> None:
        after = rss_kib(self.pid)
        assert after <= self.rss_before * RSS_GROWTH_LIMIT, \
            f"RSS grew from {self.rss_before} KiB to {after} KiB"

    def final_failures(self) -> list[str]:
        """What the checks after a run found: a late ERROR, a server gone, memory grown."""
        failures = []
        for final in (self.check_still_serving, lambda _: self.check_memory()):
            try:
                final("the last example")
            except AssertionError as exc:
                failures.append(f"--- after the run\n{exc}")
        late = {error_signature(entry): entry for entry in self.late_errors}
        failures += [f"--- an ERROR logged after its example was checked, raised at "
                     f"{where_raised(entry)}:\n{entry[-3000:]}" for entry in late.values()]
        self.late_errors.clear()
        return failures



def is_error_body(body: Any, status: int) -> bool:
    return isinstance(body, dict) and body.get("type") == "error" and \
        body.get("status") == status and isinstance(body.get("code"), str) and \
        "message" in body


def check_reply(status: int, content: bytes | bytearray, what: str) -> None:
    """No 5xx (but a host that is away), and a Rancher error body on every 4xx."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if status >= 500:
        away = is_error_body(body, status) and body["code"] in AWAY_CODES  # type: ignore[index]
        assert status == 503 and away, f"{status} for {what}: {bytes(content[:500])!r}"
    if 400 <= status < 500:
        assert is_error_body(body, status), \
            f"{status} without Rancher's error body for {what}: {bytes(content[:500])!r}"


def schemas(watched: Watched) -> list[dict[str, Any]]:
    """Every schema the server serves, read at run time."""
    resp = watched.api("GET", "/v1/schemas")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def collections(all_schemas: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [s for s in all_schemas if s["links"].get("collection")]


def collection_path(schema: Mapping[str, Any]) -> str:
    return "/v1/" + str(schema["links"]["collection"]).rsplit("/", 1)[1]


def wait_until(check: Callable[[], T | None], what: str) -> T:
    return wait_for(check, 15, what, interval=0.02)


# --- requests as sent on the wire -------------------------------------------------------

class Call:
    """One HTTP request, its path already percent-encoded; ``{target}`` in the path is the
    id of a resource the fuzz made (a fresh one, or the one made before). Its repr is what a
    failure report shows, long bodies shortened."""

    def __init__(self, method: str, path: str, body: bytes = b"",
                 headers: tuple[tuple[str, str], ...] = (), fresh_target: bool = True) -> None:
        self.method, self.path, self.body = method, path, body
        self.headers, self.fresh_target = headers, fresh_target

    def __repr__(self) -> str:
        body = short(self.body.decode("utf-8", "backslashreplace"))
        target = "" if "{target}" not in self.path else \
            f" target={'fresh' if self.fresh_target else 'previous'}"
        headers = f" headers={list(self.headers)}" if self.headers else ""
        return f"<{self.method} {short(self.path, 200)} body={body}{headers}{target}>"


class Wire:
    """One keep-alive HTTP connection to the server, sending requests exactly as given
    (http.client leaves the path alone). A connection the server closed after its previous
    answer is opened again; a request that gets no answer on a fresh connection fails."""

    def __init__(self, origin: str) -> None:
        host, port = origin.removeprefix("http://").rsplit(":", 1)
        self._address = (host, int(port))
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=seconds(15))
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, call: Call, path: str | None = None, what: str | None = None,
             auth: bool = True) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", **dict(call.headers)}
        if auth:
            headers.setdefault("Authorization", ADMIN_HEADER)
        for attempt in (1, 2):
            fresh = self._conn is None
            conn = self._connection()
            try:
                conn.request(call.method, path or call.path, body=call.body or None,
                             headers=headers)
                response = conn.getresponse()
                content = response.read()
            except (ConnectionError, http.client.HTTPException) as exc:
                self.close()
                if fresh or attempt == 2:
                    raise AssertionError(f"the connection dropped for {what or repr(call)}: "
                                         f"{exc!r}") from None
                continue
            if response.will_close:
                self.close()
            return response.status, content
        raise AssertionError("unreachable")


@contextlib.contextmanager
def fuzzed_server(data_dir: Path) -> Iterator[ServerProcess]:
    """A real ``corral-server`` on ``data_dir``, as conftest's ``server`` starts it; the fuzz
    modules share one per module, so that memory is measured over the whole run."""
    proc = ServerProcess(data_dir=data_dir, port=free_port()).start()
    try:
        yield proc
    finally:
        proc.stop()
