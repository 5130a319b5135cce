"""The one path from the server to its agents' instruction handlers.

Every instruction about a resource goes through ``Instructions.call``: it finds the resource's
host, sends the request through the hub, and (for operations) copies the agent's progress onto
the resource. Progress is written by one task of its own, latest message per resource, so a
slow database never holds up the agent session's read loop. ``api_error`` is the one place
where an instruction's failure becomes an API error.

Payloads are typed (``shared.instructions``): ``Instructions.send`` dumps a typed request and
parses the reply into its type. Every reply of an instruction in ``INSTRUCTIONS`` is checked
against its type, also on the untyped ``call``, so a malformed reply fails here, as an
InstructionError (``invalidMessage``) naming the field, never deeper in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from server.api.errors import ApiError, Unavailable, invalid
from server.store import Conflict, Record, Store
from shared import protocol
from shared.errors import ErrorCode, HostNotConnected, InstructionError, ProtocolError
from shared.fields import protocol_error
from shared.ids import format_id, prefix_for
from shared.instructions import INSTRUCTIONS, Payload

if TYPE_CHECKING:
    from server.agents.hub import Hub
    from server.agents.session import ServerStream

log = logging.getLogger(__name__)
SAMPLE_TIMEOUT = 30.0
R = TypeVar("R", bound=Payload)


def host_of(record: Record) -> int:
    if record.type == "host":
        return record.id
    host_id = record.data.get("hostId")
    if not isinstance(host_id, int):
        raise InstructionError(f"{record.type} {record.id} is not placed on a host")
    return host_id


def public_id(record: Record) -> str:
    base = "instance" if record.type == "container" else record.type
    return format_id(prefix_for(base), record.id)


def api_error(exc: InstructionError) -> ApiError:
    """An instruction's failure as the API reports it."""
    if isinstance(exc, HostNotConnected):
        return Unavailable(str(exc), code="HostNotConnected")
    return invalid("InstructionFailed", None, str(exc))


class ProgressWriter:
    """Copies instruction progress onto resources: the latest report per resource, written by
    one task, never by the session that received it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._latest: dict[int, protocol.Progress] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def report(self, record_id: int, progress: protocol.Progress) -> None:
        self._latest[record_id] = progress
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        self._wake.set()

    def forget(self, record_id: int) -> None:
        """The instruction ended: a report still queued would only be stale."""
        self._latest.pop(record_id, None)

    async def _drain(self) -> None:
        while self._latest:
            record_id, progress = self._latest.popitem()
            try:
                current = await self._store.get(record_id)
                if current is not None and current.transitioning == "yes":
                    await self._store.update(record_id, {
                        "transitioning_message": progress.message,
                        "transitioning_progress": progress.progress},
                        expected_version=current.version)
            except Conflict:
                pass  # the record moved on (its operation ended): the report is stale
            except Exception:
                log.exception("could not record progress of record %s", record_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Instructions:
    def __init__(self, hub: Hub, store: Store) -> None:
        self._hub = hub
        self.progress = ProgressWriter(store)

    async def call(self, record: Record, name: str, data: dict[str, Any], *,
                   timeout: float | None = None, track: bool = False,
                   host_id: int | None = None) -> dict[str, Any]:
        """Send ``name`` about ``record`` to its host's agent; the reply's data.

        With ``track``, the agent's progress is shown on the record. Raises HostNotConnected
        at once when the host's agent is not connected, InstructionError (with the agent's
        message) when the instruction fails.
        """
        target = host_id if host_id is not None else host_of(record)

        async def on_progress(progress: protocol.Progress) -> None:
            self.progress.report(record.id, progress)

        try:
            reply = await self._hub.call(target, name, record.type, public_id(record), data,
                                         timeout=timeout,
                                         on_progress=on_progress if track else None)
        finally:
            if track:
                self.progress.forget(record.id)
        instruction = INSTRUCTIONS.get(name)
        if instruction is not None:
            _parse_reply(instruction.reply, name, target, reply)
        return reply

    async def send(self, record: Record, name: str, request: Payload, reply: type[R], *,
                   timeout: float | None = None, track: bool = False,
                   host_id: int | None = None) -> R:
        """``call`` with a typed request and reply: ``request`` is dumped at this edge and
        the reply parsed into ``reply`` (InstructionError ``invalidMessage`` if it does not
        fit)."""
        target = host_id if host_id is not None else host_of(record)
        data = await self.call(record, name, request.dump(), timeout=timeout, track=track,
                               host_id=target)
        return _parse_reply(reply, name, target, data)

    def open_stream(self, host_id: int, name: str, resource_type: str, resource_id: str,
                    data: dict[str, Any]) -> ServerStream:
        """Start a streaming instruction (logs, exec) on a host; HostNotConnected at once
        without a live session."""
        return self._hub.open_stream(host_id, name, resource_type, resource_id, data)

    async def sample(self, record: Record, name: str, data: dict[str, Any],
                     output_type: str) -> dict[str, Any]:
        """A read-only instruction's answer as an API object (stats and the like)."""
        try:
            result = await self.call(record, name, data, timeout=SAMPLE_TIMEOUT)
        except InstructionError as exc:
            raise api_error(exc) from exc
        return {"type": output_type, "id": public_id(record), "links": {}, "actions": {},
                **result}


def _parse_reply(reply: type[R], name: str, host_id: int, data: dict[str, Any]) -> R:
    """The reply data of ``name`` as ``reply``; a reply that does not fit is the agent's
    fault, reported as an instruction failure naming the field."""
    try:
        return reply.parse(data, f"the reply data of {name}", protocol_error)
    except ProtocolError as exc:
        raise InstructionError(f"the agent of host {format_id('1h', host_id)} answered {name} "
                               f"with malformed data: {exc}", ErrorCode.INVALID_MESSAGE) from exc
