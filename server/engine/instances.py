"""Container operations on hosts, driven by the container's transitional state.

An API request only records the state it asks for (``creating``, ``stopping``, ...); the engine
then runs the matching operation in the background, one at a time per container, and records
the outcome. Because the state itself says what is left to do, the engine resumes every
unfinished operation after a server restart or when a host comes back, and the agent's
idempotent handlers make a re-sent instruction harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from server.api.errors import Unavailable, invalid
from server.api.types import now_ms
from server.resources.volumes import record_mounts, release_mounts
from server.store import Condition, Query, Record
from shared import protocol
from shared.errors import HostNotConnected, InstructionError
from shared.ids import format_id

if TYPE_CHECKING:
    from server.api.context import RequestContext
    from server.services import Services

log = logging.getLogger(__name__)

CREATE_TIMEOUT = 900.0  # a pull of a large image may take minutes
OP_TIMEOUT = 120.0

# Docker's container status → the container's resting state.
RESTING = {"running": "running", "restarting": "running", "paused": "running",
           "created": "stopped", "exited": "stopped", "dead": "stopped", "removed": "removed"}


def resting_state(summary: dict[str, Any]) -> str:
    return RESTING.get(str(summary.get("status")), "stopped")


def summary_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """What a container's state summary changes on its record."""
    ports = summary.get("ports") or []
    return {
        "externalId": summary.get("dockerId"),
        "primaryIpAddress": summary.get("ipAddress") or None,
        "exitCode": summary.get("exitCode"),
        "startedAt": summary.get("startedAt"),
        "dockerPorts": ports,
        "publicEndpoints": [{"ipAddress": p.get("hostIp"), "port": p.get("hostPort"),
                             "privatePort": p.get("containerPort"),
                             "protocol": p.get("protocol")} for p in ports if p.get("hostPort")],
    }


class InstanceEngine:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # --- requests from the API ----------------------------------------------------------

    async def request(self, record: Record, state: str, timeout: Any = None) -> Record:
        """Record the transitional ``state`` and start carrying it out."""
        host_id = record.data.get("hostId")
        if state != "purging" and isinstance(host_id, int) and record.data.get("externalId") \
                and not self._services.hub.is_live(host_id):
            if state == "removing":
                # Removed here now; the host removes the container when it reconnects
                # (see Reconciler.on_inventory).
                removed = await self._services.store.update(record.id, {
                    "state": "removed", "removed": now_ms(), "transitioning": "no",
                    "transitioning_message": None}, expected_version=record.version)
                await release_mounts(self._services.store, removed, volumes_removed=False)
                return removed
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected: its agent is "
                              "not connected, so the container cannot be changed now",
                              code="HostNotConnected")
        data = {"stopTimeout": timeout} if timeout is not None else None
        updated = await self._services.store.update(
            record.id, {"state": state, "transitioning": "yes",
                        "transitioning_message": "In Progress",
                        "transitioning_progress": None}, data, expected_version=record.version)
        self.submit(record.id)
        return updated

    def submit(self, record_id: int) -> None:
        if self._stopping:
            return
        task = asyncio.create_task(self._run(record_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def resume(self, host_id: int | None = None) -> None:
        """Carry on every unfinished operation (of one host, or everywhere)."""
        conditions = [Condition("transitioning", "eq", "yes")]
        if host_id is not None:
            conditions.append(Condition("hostId", "eq", host_id, "int"))
        for record in await self._services.store.list(Query(
                types=["container"], conditions=conditions, limit=10_000)):
            self.submit(record.id)

    # --- the operations -----------------------------------------------------------------

    async def _run(self, record_id: int) -> None:
        lock = self._locks.setdefault(record_id, asyncio.Lock())
        self._waiting[record_id] = self._waiting.get(record_id, 0) + 1
        try:
            async with lock:
                await self._operate(record_id)
        finally:
            self._waiting[record_id] -= 1
            if not self._waiting[record_id]:
                del self._waiting[record_id], self._locks[record_id]

    async def _operate(self, record_id: int) -> None:
        record = await self._services.store.get(record_id)
        if record is None or record.transitioning != "yes":
            return
        operation = self._operations().get(record.state)
        if operation is None:
            return
        try:
            await operation(record)
        except HostNotConnected as exc:
            # Resumed when the host's agent comes back (see resume()).
            await self._services.store.update(record.id, {
                "transitioning_message": f"waiting for the host: {exc}"})
        except InstructionError as exc:
            await self._failed(record, str(exc))
        except Exception:
            log.exception("container %s: %s failed", record.uuid, record.state)
            await self._failed(record, "internal error; see the server log")

    def _operations(self) -> dict[str, Callable[[Record], Awaitable[None]]]:
        return {"creating": self._create, "starting": self._start, "stopping": self._stop,
                "restarting": self._restart, "removing": self._remove,
                "purging": self._purge}

    async def _call(self, record: Record, name: str, data: dict[str, Any],
                    timeout: float = OP_TIMEOUT) -> dict[str, Any]:
        store = self._services.store

        async def on_progress(progress: protocol.Progress) -> None:
            await store.update(record.id, {"transitioning_message": progress.message,
                                           "transitioning_progress": progress.progress})

        return await self._services.hub.call(int(record.data["hostId"]), name, "container",
                                             format_id("1i", record.id), data, timeout=timeout,
                                             on_progress=on_progress)

    async def _settle(self, record: Record, summary: dict[str, Any],
                      state: str | None = None) -> None:
        await self._services.store.update(record.id, {
            "state": state or resting_state(summary), "transitioning": "no",
            "transitioning_message": None, "transitioning_progress": None,
        }, summary_fields(summary))

    async def _create(self, record: Record) -> None:
        auth = await self._services.registries.auth_for(record)
        summary = await self._call(record, "instance.create",
                                   {"container": record.data["spec"], "registryAuth": auth},
                                   timeout=CREATE_TIMEOUT)
        await record_mounts(self._services.store, record, summary.get("mounts") or [])
        if record.data.get("startOnCreate", True):
            await self._services.store.update(record.id, {"state": "starting"},
                                              summary_fields(summary))
            summary = await self._call(record, "instance.start", {"uuid": record.uuid})
        await self._settle(record, summary)

    async def _start(self, record: Record) -> None:
        await self._settle(record, await self._call(record, "instance.start",
                                                    {"uuid": record.uuid}))

    async def _stop(self, record: Record) -> None:
        timeout = record.data.get("stopTimeout") or 10
        summary = await self._call(record, "instance.stop",
                                   {"uuid": record.uuid, "timeout": timeout},
                                   timeout=OP_TIMEOUT + timeout)
        await self._settle(record, summary, "stopped")

    async def _restart(self, record: Record) -> None:
        timeout = record.data.get("stopTimeout") or 10
        await self._settle(record, await self._call(
            record, "instance.restart", {"uuid": record.uuid, "timeout": timeout},
            timeout=OP_TIMEOUT + timeout))

    async def _remove(self, record: Record) -> None:
        if record.data.get("externalId") or record.data.get("hostId") is not None:
            try:
                await self._call(record, "instance.remove",
                                 {"uuid": record.uuid, "removeVolumes": True})
            except HostNotConnected:
                if record.data.get("externalId"):
                    raise
        await self._services.store.update(record.id, {
            "state": "removed", "removed": now_ms(), "transitioning": "no",
            "transitioning_message": None, "transitioning_progress": None})
        await release_mounts(self._services.store, record, volumes_removed=True)

    async def _purge(self, record: Record) -> None:
        await self._services.store.update(record.id, {
            "state": "purged", "transitioning": "no", "transitioning_message": None})

    async def _failed(self, record: Record, message: str) -> None:
        """Record a failure: a container that could not be created ends in ``error``."""
        current = await self._services.store.get(record.id)
        if current is None:
            return
        fallback = {"creating": "error", "starting": "stopped", "stopping": "running",
                    "restarting": "stopped", "removing": "error", "purging": "removed"}
        await self._services.store.update(record.id, {
            "state": fallback.get(current.state, current.state), "transitioning": "error",
            "transitioning_message": message, "transitioning_progress": None})

    # --- logs and exec ------------------------------------------------------------------

    async def stream_action(self, ctx: RequestContext, record: Record, name: str,
                            values: dict[str, Any]) -> dict[str, Any]:
        """A ticket for a websocket to the container's logs or to a command run in it."""
        from server.agents.streams import Ticket

        host_id = record.data.get("hostId")
        if not isinstance(host_id, int) or not record.data.get("externalId"):
            raise invalid("InvalidState", None, "the container was never created on a host")
        if not self._services.hub.is_live(host_id):
            raise Unavailable(f"host {format_id('1h', host_id)} is disconnected",
                              code="HostNotConnected")
        if name == "logs":
            data = {"uuid": record.uuid, "follow": values.get("follow", True),
                    "tail": values.get("lines", 100), "timestamps": values.get("timestamps")}
            instruction = "instance.logs"
        else:
            data = {"uuid": record.uuid, "command": values["command"],
                    "tty": values.get("tty", True),
                    "attachStdin": values.get("attachStdin", True)}
            instruction = "instance.exec"
        token = self._services.streams.issue(Ticket(host_id=host_id, instruction=instruction,
                                                    resource_id=format_id("1i", record.id),
                                                    data=data))
        ws_origin = ctx.version_url.rsplit("/", 1)[0].replace("http", "ws", 1)
        return {"type": "hostAccess", "links": {}, "actions": {},
                "url": f"{ws_origin}/v1/stream?token={token}", "token": token}
