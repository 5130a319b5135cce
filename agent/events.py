"""What the agent tells the server about its containers without being asked: Docker's container
events as they happen (:func:`watch_container_events`) and, on each (re)connection, the list of
every container (:func:`inventory`).

To miss nothing between the two, take ``since = time.time()`` before building the inventory and
start the watcher with it: events from that moment on are replayed by the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.containers import UUID_LABEL
from agent.logs import log
from agent.runtime import ContainerRuntime, EventStream
from shared import protocol
from shared.containers import ContainerReport, ContainerSighting, ContainerStatus
from shared.errors import ErrorCode, InstructionError

FORWARDED = frozenset({"create", "start", "die", "oom", "kill", "stop", "restart", "pause",
                       "unpause", "destroy"})
"""Docker container actions sent on to the server; others (exec_*, attach, resize...) are not."""

RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0

# The status a container has right after an action, for when it is gone before we can look.
_IMPLIED_STATUS = {"create": ContainerStatus.CREATED, "start": ContainerStatus.RUNNING,
                   "restart": ContainerStatus.RUNNING, "unpause": ContainerStatus.RUNNING,
                   "pause": ContainerStatus.PAUSED, "die": ContainerStatus.EXITED,
                   "stop": ContainerStatus.EXITED, "destroy": ContainerStatus.REMOVED}


async def watch_container_events(
    runtime: ContainerRuntime,
    send: Callable[[protocol.ContainerEvent], Awaitable[None]],
    *,
    since: float | None = None,
    retry_delay: float = RETRY_DELAY,
) -> None:
    """Forward the engine's container events to ``send`` until cancelled.

    Each event carries the container's state summary, inspected after the event (so it may
    already show a later state). When the engine ends the stream (a daemon restart) or cannot be
    reached, the stream is reopened from the last event's time, waiting ``retry_delay`` seconds,
    doubled on each failure up to 30 s. Cancelling closes the stream, which ends the blocked
    reading thread at once.
    """
    delay = retry_delay
    warned = False
    if since is None:  # so that a first attempt that fails loses nothing either
        since = time.time()
    while True:
        try:
            stream = await _open(runtime, since)
        except InstructionError as exc:
            if not warned:
                log.warning("cannot watch container events: %s", exc)
                warned = True
        else:
            if warned:
                log.info("watching container events again")
                warned = False
            try:
                while (event := await asyncio.to_thread(next, stream, None)) is not None:
                    delay = retry_delay
                    since = _event_time(event)
                    message = await container_event(runtime, event)
                    if message is not None:
                        await send(message)
            except InstructionError as exc:
                log.warning("the container event stream failed: %s", exc)
            finally:
                stream.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY)


async def container_event(runtime: ContainerRuntime,
                          event: Mapping[str, Any]) -> protocol.ContainerEvent | None:
    """The message for one decoded engine event, or None if the server need not hear of it."""
    action = str(event.get("Action") or event.get("status") or "")
    if event.get("Type", "container") != "container" or action not in FORWARDED:
        return None
    actor = event.get("Actor") or {}
    docker_id = str(actor.get("ID") or event.get("id") or "")
    container: ContainerReport | None = None
    if action != "destroy":
        try:
            container = await asyncio.to_thread(runtime.inspect_container, docker_id)
        except InstructionError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
    if container is None:  # destroyed, or gone before we looked: what the event says
        container = _from_event(action, docker_id, actor.get("Attributes") or {})
    return protocol.ContainerEvent(event=action, container=container.dump(),
                                   time=_event_time(event))


async def inventory(runtime: ContainerRuntime) -> protocol.Inventory:
    """Every container on the host, managed by Corral or not, as state summaries."""
    containers = await asyncio.to_thread(runtime.list_containers)
    return protocol.Inventory(containers=[c.dump() for c in containers])


async def _open(runtime: ContainerRuntime, since: float | None) -> EventStream:
    """Open the stream; if cancelled while the thread is still opening it, close it once open."""
    opening = asyncio.ensure_future(asyncio.to_thread(runtime.events, since))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _close_opened(opening: asyncio.Future[EventStream]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _from_event(action: str, docker_id: str,
                attributes: Mapping[str, Any]) -> ContainerSighting:
    exit_code = str(attributes.get("exitCode", ""))
    uuid, name, image = (attributes.get(key) for key in (UUID_LABEL, "name", "image"))
    return ContainerSighting(
        docker_id=docker_id, uuid=None if uuid is None else str(uuid),
        status=_IMPLIED_STATUS.get(action), destroyed=action == "destroy",
        name=None if name is None else str(name), image=None if image is None else str(image),
        exit_code=int(exit_code) if action == "die" and exit_code.lstrip("-").isdigit()
        else None)


def _event_time(event: Mapping[str, Any]) -> float:
    """The event's time in seconds; Docker gives whole seconds and nanoseconds."""
    if isinstance(event.get("timeNano"), int):
        return float(event["timeNano"]) / 1e9
    return float(event.get("time") or 0)
