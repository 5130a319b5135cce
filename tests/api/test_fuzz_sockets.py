"""Property-based fuzzing of every websocket endpoint of a real ``corral-server`` process:
the agent socket (handshake credentials, the hello, then session messages after a valid
hello), ``/v1/subscribe`` (paths, query strings, client frames), ``/v1/stream`` (tokens,
then client frames on a real logs or exec stream relayed through a scripted agent) and
``/v1/dockersocket`` (tokens, then client frames on a host's Docker socket stream).

Whatever is sent, a refused handshake is a 4xx with Rancher's error body; an open socket
still answers a ping, or the server closed it with a close code and a reason (never a reset,
never 1011); the server keeps answering its health check, logs no ERROR, and its RSS after
the run stays within 1.5 times what it was before.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from shared import protocol
from tests.api.fuzz_agent import FACTS, ScriptedAgent, register, registration_token, start_agent
from tests.api.fuzz_frames import (
    MAX_FRAME,
    RAW_FRAMES,
    Frame,
    hello_probes,
    hellos,
    message,
    raw_frames,
    session_messages,
    session_probes,
    stream_frames,
    stream_probes,
)
from tests.api.fuzz_harness import (
    ADMIN_AUTH,
    ADMIN_HEADER,
    Case,
    Watched,
    check_reply,
    drawn,
    fuzzed_server,
    run_each,
    wait_until,
)
from tests.api.fuzzing import encoded_text, short
from tests.conftest import basic
from tests.support.processes import ServerProcess
from tests.support.timing import seconds

HELLO_EXAMPLES = 15
SESSION_EXAMPLES = 15
SUBSCRIBE_EXAMPLES = 20
STREAM_EXAMPLES = 15
OVERSIZED = Frame("text", "x" * (MAX_FRAME + 1))
# Codes that say the server failed rather than refused: abnormal closure, internal error.
BROKEN_CLOSE_CODES = frozenset({1006, 1011})
# RFC 6455 codes the websocket layer sends by itself for a frame it cannot take (protocol
# error, unsupported data, invalid UTF-8, too big): the code is the reason. Every other close
# the server starts must say why.
SELF_EXPLAINING_CODES = frozenset({1002, 1003, 1007, 1009})
# A peer that stops reading a frame larger than its limit and closes resets the connection
# while the frame's rest is still arriving (TCP discards its close frame): no defect of ours.
LARGEST_READ_FRAME = 1024 * 1024
# What to do on a socket still open after an attempt's frames (before the outcome check).
AfterOpen = Callable[["Sockets", ClientConnection], None] | None


class Attempt:
    """One connection: where, with which headers, then which frames."""

    def __init__(self, path: str, headers: tuple[tuple[str, str], ...],
                 frames: Sequence[Frame]) -> None:
        self.path, self.headers, self.frames = path, headers, list(frames)

    def __repr__(self) -> str:
        auth = dict(self.headers).get("Authorization", "")
        who = "admin" if auth == ADMIN_HEADER else short(auth, 30) if auth else "nobody"
        extra = [h for h in self.headers if h[0] != "Authorization"]
        return f"<{short(self.path, 160)} as {who}{f' {extra}' if extra else ''} " \
               f"frames={self.frames}>"


class StreamAttempt(Attempt):
    """Frames for a fresh logs or exec stream; its ticket is asked for when it is tried.
    The scripted agent never ends a stream by itself: if the server ends one, a frame of
    ours was refused, and the close must say so (not 1000, as if the command had ended)."""

    def __init__(self, action: str, frames: Sequence[Frame]) -> None:
        path = "/v1/dockersocket" if action == "dockersocket" else "/v1/stream"
        super().__init__(f"{path}?token=<a fresh {action} ticket>", (), frames)
        self.action = action


@dataclass
class Sockets:
    watched: Watched
    agent: ScriptedAgent
    fuzz_host: dict[str, Any]  # agent credentials of a host for the fuzz to connect as
    container_id: str  # a running container on the scripted agent's host
    known: set[str] = field(default_factory=set)
    markers: int = 0

    @property
    def ws_origin(self) -> str:
        return self.watched.server.origin.replace("http", "ws", 1)

    def agent_headers(self) -> tuple[tuple[str, str], ...]:
        auth = basic(self.fuzz_host["accessKey"], self.fuzz_host["secretKey"])
        return tuple(auth.items())

    def ticket_path(self, action: str) -> str:
        """The path of a fresh stream of the container (or of the scripted agent's Docker
        socket), as the action's answer gives it."""
        if action == "dockersocket":
            resp = self.watched.api("POST", f"/v1/hosts/{self.agent.host_id}?action={action}")
            assert resp.status_code == 200, resp.text
            access = resp.json()
            url = str(access["url"])
            return f"{url[url.index('/v1/dockersocket'):]}?token={access['token']}"
        body = {"command": ["sh"], "tty": True} if action == "execute" else {"follow": True}
        resp = self.watched.api("POST", f"/v1/containers/{self.container_id}?action={action}",
                                data=json.dumps(body))
        assert resp.status_code == 200, resp.text
        url = str(resp.json()["url"])
        return url[url.index("/v1/stream"):]

    def run(self, cases: Sequence[Case[Attempt]], examples: int,
            after_open: AfterOpen = None) -> None:
        def check(attempt: Attempt) -> None:
            self.watched.example(repr(attempt), lambda: self.attempt(attempt, after_open))

        failures = run_each(cases, check, examples, self.known)
        failures += self.watched.final_failures()
        assert not failures, f"{len(failures)} failing case(s):\n" + "\n\n".join(failures)

    def attempt(self, attempt: Attempt, after_open: AfterOpen = None) -> None:
        path = self.ticket_path(attempt.action) if isinstance(attempt, StreamAttempt) \
            else attempt.path
        try:
            ws = connect(self.ws_origin + path, additional_headers=list(attempt.headers),
                         open_timeout=seconds(10), close_timeout=seconds(10), max_size=None,
                         max_queue=None, compression=None)
        except InvalidStatus as refused:
            response = refused.response
            check_reply(response.status_code, response.body or b"",
                        f"the handshake of {attempt!r}")
            return
        except (InvalidHandshake, ConnectionError, EOFError) as exc:
            raise AssertionError(f"the handshake of {attempt!r} broke: {exc!r}") from None
        with ws:
            for frame in attempt.frames:
                if not send(ws, frame):
                    break
            if after_open is not None and ws.state is State.OPEN:
                after_open(self, ws)
            oversized = any(len(frame.data) > LARGEST_READ_FRAME for frame in attempt.frames)
            check_outcome(ws, repr(attempt), reset_allowed=oversized,
                          normal_close_allowed=not isinstance(attempt, StreamAttempt))


def send(ws: ClientConnection, frame: Frame) -> bool:
    """Send one frame; False when the server already closed the socket."""
    try:
        if frame.kind == "text-bytes":
            ws.send(frame.data, text=True)
        else:
            ws.send(frame.data)
    except ConnectionClosed:
        return False
    return True


def check_outcome(ws: ClientConnection, what: str, reset_allowed: bool = False,
                  normal_close_allowed: bool = True) -> None:
    """The socket answers a ping (then closes cleanly when asked), or the server closed it
    with a close frame holding a code and a reason."""
    try:
        pong = ws.ping(ack_on_close=True)
        answered = pong.wait(seconds(10))
    except ConnectionClosed:
        answered = True
    if ws.state is State.OPEN:
        if not answered:
            raise AssertionError(f"no pong within 10 s after {what}")
        ws.close()
        if ws.protocol.close_rcvd is None:
            raise AssertionError(f"the server did not answer our close after {what}")
        return
    ws.close()
    close = ws.protocol.close_rcvd
    if close is None:
        if reset_allowed:
            return
        raise AssertionError(f"the connection dropped without a close frame after {what}")
    if close.code in BROKEN_CLOSE_CODES:
        raise AssertionError(f"closed with {close.code} ({close.reason!r}) after {what}")
    if ws.protocol.close_rcvd_then_sent and not close.reason and \
            close.code not in SELF_EXPLAINING_CODES:
        raise AssertionError(f"closed with {close.code} and no reason after {what}")
    if ws.protocol.close_rcvd_then_sent and close.code == 1000 and not normal_close_allowed:
        raise AssertionError(f"ended with 1000 ({close.reason!r}) though nothing ended, "
                             f"after {what}")


@pytest.fixture(scope="module")
def sockets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sockets]:
    with fuzzed_server(tmp_path_factory.mktemp("fuzz-sockets") / "server-data") as server:
        yield from _sockets(server)


def _running_container(watched: Watched, host_id: str) -> str:
    resp = watched.api("POST", "/v1/containers", json={
        "imageUuid": "docker:busybox", "requestedHostId": host_id, "name": "streamed"})
    assert resp.status_code == 201, resp.text
    container_id = str(resp.json()["id"])

    def running() -> bool:
        return bool(watched.api("GET", f"/v1/containers/{container_id}").json()["state"]
                    == "running")

    wait_until(running, "the streamed container to run")
    return container_id


def _sockets(server: ServerProcess) -> Iterator[Sockets]:
    watched = Watched(server)
    agent = start_agent(server.origin, ADMIN_AUTH)
    try:
        fuzz_host = register(server.origin, registration_token(server.origin, ADMIN_AUTH),
                             key=secrets.token_hex(20))
        container_id = _running_container(watched, agent.host_id)
        watched.start_measuring()
        yield Sockets(watched=watched, agent=agent, fuzz_host=fuzz_host,
                      container_id=container_id)
    finally:
        agent.stop()
        watched.close()


def credentials(sockets: Sockets) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Mostly the right ones; sometimes none, the admin's (the wrong kind) or garbage."""
    garbage = st.sampled_from(["Basic", "Basic !!!", "Bearer x", "Basic " + base64.b64encode(
        b"\xff\xfe:\x00").decode(), "Basic " + base64.b64encode(b"nocolon").decode()])
    right = st.just(sockets.agent_headers())
    return st.one_of(right, right, right, st.just(()),
                     st.just((("Authorization", ADMIN_HEADER),)),
                     garbage.map(lambda auth: (("Authorization", auth),)))


def test_agent_handshakes_and_hellos_never_break_the_server(sockets: Sockets) -> None:
    """Credentials and a first frame (the hello, or anything else) of any shape."""
    frames = st.lists(st.one_of(hellos(), hellos(), raw_frames(), session_messages()),
                      min_size=1, max_size=2)
    probes = [Attempt(protocol.AGENT_PATH, sockets.agent_headers(), [frame])
              for frame in [*hello_probes(FACTS), OVERSIZED]]
    case = drawn(lambda headers, fs: Attempt(protocol.AGENT_PATH, headers, fs),
                 credentials(sockets), frames)
    sockets.run([("agent hello", case, probes)], HELLO_EXAMPLES)


def _reports_handled(sockets: Sockets, ws: ClientConnection) -> None:
    """A last facts report naming a fresh hostname, once on the host, shows that every
    report the example sent before it was handled."""
    sockets.markers += 1
    marker = f"fuzz-marker-{sockets.markers}"
    if not send(ws, message({"type": "facts", "changes": {"hostname": marker}})):
        return
    host_path = f"/v1/hosts/{sockets.fuzz_host['hostId']}"

    def arrived() -> bool:
        return ws.state is not State.OPEN or \
            sockets.watched.api("GET", host_path).json().get("hostname") == marker

    wait_until(arrived, f"the facts report {marker} to reach the host")


def test_agent_session_messages_never_break_the_server(sockets: Sockets) -> None:
    """After a valid hello: facts, events, inventories, replies, stream data, and messages
    an agent may not send, with hostile values anywhere."""
    hello = message({"type": "hello", "agentVersion": "fuzz", "protocol": 1, "facts": FACTS})

    def session(frames: Sequence[Frame]) -> Attempt:
        return Attempt(protocol.AGENT_PATH, sockets.agent_headers(), [hello, *frames])

    frames = st.lists(st.one_of(session_messages(), session_messages(), raw_frames()),
                      min_size=1, max_size=3)
    probes = [session([frame]) for frame in [*session_probes(), OVERSIZED]]
    sockets.run([("agent session", drawn(session, frames), probes)], SESSION_EXAMPLES,
                after_open=_reports_handled)


SINCE = ("0", "1", "-1", "9" * 18, "9" * 19, "99999999999999999999", "%C2%B2", "%D9%A1",
         "1e3", "%00", "", "abc")


def test_subscribe_never_breaks_the_server(sockets: Sockets) -> None:
    """Paths, event names, resume points, project scoping and client frames."""
    projects = [p["id"] for p in sockets.watched.api("GET", "/v1/projects").json()["data"]]
    path = st.one_of(st.sampled_from(["/v1/subscribe", "/v2-beta/subscribe",
                                      *(f"/v1/projects/{p}/subscribe" for p in projects)]),
                     encoded_text().map(lambda p: f"/v1/projects/{p}/subscribe"))
    param = st.one_of(
        st.sampled_from(["eventNames=resource.change", "eventNames=mystery", "eventNames="]),
        st.sampled_from(SINCE).map(lambda s: f"since={s}"),
        st.tuples(encoded_text(), encoded_text()).map(lambda kv: f"{kv[0]}={kv[1]}"))
    query = st.lists(param, max_size=3).map("&".join)
    admin = (("Authorization", ADMIN_HEADER),)
    headers = st.one_of(st.just(admin), st.just(admin), st.just(()),
                        encoded_text().map(lambda p: (*admin, ("X-API-Project-Id", p))))
    frames = st.lists(st.one_of(raw_frames(), st.text(max_size=20).map(
        lambda t: Frame("text", t))), max_size=3)
    case = drawn(lambda p, q, h, fs: Attempt(f"{p}?{q}", h, fs), path, query, headers,
                 frames)
    probes = [Attempt(f"/v1/subscribe?since={s}", admin, []) for s in SINCE]
    probes += [Attempt(p, admin, []) for p in ("/v1/projects/1a1%00/subscribe",
                                               "/v1/projects/%0D%0A/subscribe",
                                               "/v1/subscribe?eventNames=%ED%A0%80")]
    probes += [Attempt("/v1/subscribe", admin, [frame]) for frame in (*RAW_FRAMES, OVERSIZED)]
    sockets.run([("subscribe", case, probes)], SUBSCRIBE_EXAMPLES)


def test_stream_tokens_never_break_the_server(sockets: Sockets) -> None:
    tokens = encoded_text().map(lambda t: Attempt(f"/v1/stream?token={t}", (), []))
    probes = [Attempt(f"/v1/stream?token={t}", (), []) for t in ("", "%00", "%ED%A0%80",
                                                                  "x" * 5000)]
    sockets.run([("stream token", tokens, probes)], STREAM_EXAMPLES)


def test_stream_frames_never_break_the_server(sockets: Sockets) -> None:
    """Input, resizes and garbage on real logs and exec streams."""
    frames = st.lists(stream_frames(), min_size=1, max_size=4)
    cases: list[Case[Attempt]] = [
        (f"stream {action}", drawn(lambda fs, a=action: StreamAttempt(a, fs), frames),
         [StreamAttempt(action, [frame]) for frame in [*stream_probes(), OVERSIZED]])
        for action in ("execute", "logs")]
    sockets.run(cases, STREAM_EXAMPLES)


def test_docker_socket_tokens_never_break_the_server(sockets: Sockets) -> None:
    path = st.sampled_from(["/v1/dockersocket", "/v1/dockersocket/"])
    tokens = drawn(lambda p, t: Attempt(f"{p}?token={t}", (), []), path, encoded_text())
    probes = [Attempt(f"/v1/dockersocket?token={t}", (), []) for t in ("", "%00", "%ED%A0%80",
                                                                        "x" * 5000)]
    probes.append(Attempt("/v1/dockersocket/", (("Authorization", ADMIN_HEADER),), []))
    sockets.run([("docker socket token", tokens, probes)], STREAM_EXAMPLES)


def test_docker_socket_frames_never_break_the_server(sockets: Sockets) -> None:
    """Bytes and garbage on a real Docker socket stream, echoed by the scripted agent."""
    frames = st.lists(stream_frames(), min_size=1, max_size=4)
    case = drawn(lambda fs: StreamAttempt("dockersocket", fs), frames)
    probes = [StreamAttempt("dockersocket", [frame]) for frame in [*stream_probes(), OVERSIZED]]
    sockets.run([("docker socket", case, probes)], STREAM_EXAMPLES)
