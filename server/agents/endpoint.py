"""The agent websocket endpoint: authenticate in the handshake, then the hello phase with a
timeout, then the session until either side closes."""

from __future__ import annotations

import logging
from typing import Any, assert_never

from aiohttp import WSMsgType, web

from server.agents.session import AgentSession, Report, ReportCallback
from server.api.auth import authenticate_agent
from server.api.errors import Unauthorized
from server.api.handlers import SERVICES
from server.api.throttle import CredentialKind
from server.resources import hosts
from server.services import Services
from shared import protocol
from shared.errors import ProtocolError
from shared.ids import format_id
from shared.protocol import CloseCode

log = logging.getLogger("corral.agent_endpoint")


async def _close(ws: web.WebSocketResponse, public_id: str, code: int,
                 reason: str) -> web.WebSocketResponse:
    log.warning("[host %s] agent connection closed (%d): %s", public_id, code, reason)
    await ws.close(code=code, message=protocol.close_reason(reason))
    return ws


async def _hello(ws: web.WebSocketResponse, timeout: float) -> protocol.Hello | str:
    """The agent's hello, or the reason it did not come."""
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        return f"no hello within {timeout:g} s"
    if msg.type is not WSMsgType.TEXT:
        return "the first frame must be a text hello message"
    try:
        message = protocol.parse(msg.data)
    except ProtocolError as exc:
        return str(exc)
    if not isinstance(message, protocol.Hello):
        return f"expected hello, got {message.type}"
    size, limit = protocol.frame_size(msg.data), protocol.frame_limit("hello")
    if size > limit:
        return f"a hello message may be at most {limit // 1024} KiB; this one has {size} bytes"
    if message.protocol != protocol.PROTOCOL_VERSION:
        return f"protocol {message.protocol} is not supported (server speaks " \
               f"{protocol.PROTOCOL_VERSION}); upgrade the agent"
    if not isinstance(message.facts.get("hostname"), str):
        return "hello facts must include a hostname"
    return message


def _agent_ip(request: web.Request, facts: dict[str, Any]) -> str:
    """The address the agent asked for (--agent-ip), else the one the server sees."""
    wanted = facts.get("agentIp")
    if isinstance(wanted, str) and wanted:
        return wanted
    return request.remote or ""


def _reports(services: Services, host_id: int) -> ReportCallback:
    """How a session's reports are handled; it holds the host's id, not its record."""

    async def on_report(report: Report) -> None:
        match report:
            case protocol.Facts():
                await hosts.apply_facts(services.store, host_id, report.changes)
            case protocol.ContainerEvent():
                await services.reconciler.on_event(host_id, report)
            case protocol.Inventory():
                await services.reconciler.on_inventory(host_id, report)
            case protocol.HealthReport():
                await services.health.on_report(host_id, report)
            case protocol.LbReport():
                await services.lb.on_report(host_id, report)
            case _:
                assert_never(report)

    return on_report


async def agent_connect(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    header = request.headers.get("Authorization")
    principal = await services.auth_guard.attempt_for(
        request, header, CredentialKind.AGENT_KEY,
        lambda: authenticate_agent(services.store, header))
    assert principal.host_id is not None
    host_id = principal.host_id
    host = await services.store.get(host_id)
    if host is None or host.removed is not None:
        raise Unauthorized("this host was removed; register it again")
    # No per-message compression: each deflate context costs ~100 KiB per agent, and the
    # messages are small.
    ws = web.WebSocketResponse(autoping=False, max_msg_size=protocol.MAX_FRAME_BYTES,
                               compress=False)
    await ws.prepare(request)
    public_id = format_id(hosts.HOST.id_prefix, host_id)
    hello = await _hello(ws, services.settings.hello_timeout)
    if isinstance(hello, str):
        code = CloseCode.HELLO_TIMEOUT if hello.startswith("no hello") else \
            CloseCode.INVALID_MESSAGE
        return await _close(ws, public_id, code, hello)
    try:
        await hosts.apply_hello(services.store, host, hello.facts,
                                _agent_ip(request, hello.facts), hello.agent_version)
    except Exception:
        # A bug (the hello was valid): the agent still gets a close code, and retries.
        log.exception("[host %s] could not record the agent's hello", public_id)
        await ws.close(code=CloseCode.INTERNAL_ERROR,
                       message=b"the server could not record this hello")
        return ws
    agent_version = hello.agent_version
    # The session lives long: keep neither the facts nor the record in this frame.
    del host, hello
    session = AgentSession(ws, host_id, public_id, _reports(services, host_id))
    await services.hub.attach(session)
    session.log.info("agent %s connected from %s", agent_version, request.remote)
    try:
        session.send(protocol.Welcome(host_id=public_id,
                                      ping_interval=services.settings.ping_interval,
                                      report_interval=services.settings.report_interval))
        await session.run()
    finally:
        services.hub.detach(session)
        session.log.info("agent disconnected (close code %s)", ws.close_code)
    return ws
