"""Container instructions (``instance.*``): check the container's state, act, verify.

Every handler is idempotent. Containers are found by their ``io.rancher.container.uuid`` label,
never by name, so a re-sent ``instance.create`` reuses the container the first one made. The
dispatcher runs instructions about one resource one at a time, so a create re-sent while the
first is still pulling waits for it and then finds its container: no second container.

Every reply's data is the container's state summary (:func:`agent.containers.state_summary`),
except ``instance.remove``'s, which is ``{}``, also when the container was already gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from agent.containers import create_params, state_summary, stats_summary
from agent.dispatcher import InstructionContext
from shared.errors import ErrorCode, InstructionError

DEFAULT_STOP_TIMEOUT = 10
PULL_SHARE = 90
"""Percent of an instruction's progress bar the image pull takes; creating takes the rest."""
_RUNNING = frozenset({"running", "paused", "restarting"})


async def create(ctx: InstructionContext) -> dict[str, Any]:
    """Create the container of ``data.container`` unless it exists, pulling its image first."""
    spec = ctx.request.data.get("container")
    if not isinstance(spec, Mapping):
        raise InstructionError("instance.create needs the container spec in data.container",
                               ErrorCode.INVALID_DATA)
    # The server puts the host's agent IP into each port's hostIp when the user gave none;
    # a port still without one binds every interface.
    params = create_params(spec, None)
    uuid, image = str(spec["uuid"]), str(spec["image"])
    existing = await asyncio.to_thread(ctx.runtime.find_container, uuid)
    if existing is not None:
        return state_summary(existing)
    if not await asyncio.to_thread(ctx.runtime.image_present, image):
        await _pull(ctx, image, ctx.request.data.get("registryAuth"))
    await ctx.progress(f"creating container from {image}", PULL_SHARE)
    docker_id = await asyncio.to_thread(ctx.runtime.create_container, params)
    inspect = await asyncio.to_thread(ctx.runtime.inspect_container, docker_id)
    return state_summary(inspect)


async def start(ctx: InstructionContext) -> dict[str, Any]:
    """Make the container run. One that exits at once is still answered with its state: the
    server decides what an early exit means."""
    inspect = await require_container(ctx)
    status = _status(inspect)
    if status in ("running", "restarting"):
        return state_summary(inspect)
    if status == "paused":
        await asyncio.to_thread(ctx.runtime.unpause, inspect["Id"])
    else:
        await asyncio.to_thread(ctx.runtime.start, inspect["Id"])
    return state_summary(await _inspect(ctx, inspect["Id"]))


async def stop(ctx: InstructionContext) -> dict[str, Any]:
    """Stop the container (SIGTERM, SIGKILL after ``timeout`` s); a stopped one is left as is."""
    inspect = await require_container(ctx)
    if _status(inspect) not in _RUNNING:
        return state_summary(inspect)
    await asyncio.to_thread(ctx.runtime.stop, inspect["Id"], _timeout(ctx))
    after = await _inspect(ctx, inspect["Id"])
    if _status(after) in ("running", "paused"):
        raise InstructionError(f"container {_uuid(ctx)} is still {_status(after)} after being "
                               "stopped", ErrorCode.RUNTIME_ERROR)
    return state_summary(after)


async def restart(ctx: InstructionContext) -> dict[str, Any]:
    """Stop (as ``instance.stop``) and start the container; a stopped one is just started."""
    inspect = await require_container(ctx)
    await asyncio.to_thread(ctx.runtime.restart, inspect["Id"], _timeout(ctx))
    return state_summary(await _inspect(ctx, inspect["Id"]))


async def remove(ctx: InstructionContext) -> dict[str, Any]:
    """Remove the container, killing it if it runs; ``removeVolumes`` also removes its
    anonymous volumes (named ones stay). Answers ``{}``, also when it was already gone."""
    inspect = await asyncio.to_thread(ctx.runtime.find_container, _uuid(ctx))
    if inspect is None:
        return {}
    volumes = bool(ctx.request.data.get("removeVolumes"))
    try:
        await asyncio.to_thread(ctx.runtime.remove_container, inspect["Id"], volumes, True)
    except InstructionError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:  # gone meanwhile: what we wanted
            raise
    if await asyncio.to_thread(ctx.runtime.find_container, _uuid(ctx)) is not None:
        raise InstructionError(f"container {_uuid(ctx)} is still there after being removed",
                               ErrorCode.RUNTIME_ERROR)
    return {}


async def inspect(ctx: InstructionContext) -> dict[str, Any]:
    """The container's state (``notFound`` if there is no such container)."""
    return state_summary(await require_container(ctx))


async def stats(ctx: InstructionContext) -> dict[str, Any]:
    """One sample of the container's CPU, memory, network and block I/O."""
    container = await require_container(ctx)
    raw = await asyncio.to_thread(ctx.runtime.stats, str(container["Id"]))
    return stats_summary(raw)


def _uuid(ctx: InstructionContext) -> str:
    uuid = ctx.request.data.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        raise InstructionError(f"{ctx.request.name} needs the container's uuid in data.uuid",
                               ErrorCode.INVALID_DATA)
    return uuid


def _timeout(ctx: InstructionContext) -> float:
    timeout = ctx.request.data.get("timeout")
    if timeout is None:
        return DEFAULT_STOP_TIMEOUT
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        raise InstructionError(f"{ctx.request.name}: data.timeout must be a number of seconds",
                               ErrorCode.INVALID_DATA)
    return float(timeout)


def _status(inspect: Mapping[str, Any]) -> str | None:
    status = (inspect.get("State") or {}).get("Status")
    return str(status) if status is not None else None


async def require_container(ctx: InstructionContext) -> dict[str, Any]:
    uuid = _uuid(ctx)
    inspect = await asyncio.to_thread(ctx.runtime.find_container, uuid)
    if inspect is None:
        raise InstructionError(f"container {uuid} does not exist on this host",
                               ErrorCode.NOT_FOUND)
    return inspect


async def _inspect(ctx: InstructionContext, docker_id: str) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(ctx.runtime.inspect_container, docker_id)
    except InstructionError as exc:
        if exc.code is ErrorCode.NOT_FOUND:  # removed under our feet (e.g. --rm, a user)
            raise InstructionError(f"container {_uuid(ctx)} disappeared during "
                                   f"{ctx.request.name}", ErrorCode.NOT_FOUND) from exc
        raise


async def _pull(ctx: InstructionContext, image: str, auth: Any) -> None:
    """Pull ``image``, turning the runtime's progress reports into progress messages.

    The runtime reports from its thread; the reports go through a queue to one forwarding task,
    so they reach the server in order and all before the reply.
    """
    if auth is not None and not isinstance(auth, Mapping):
        raise InstructionError("instance.create: data.registryAuth must be an object or null",
                               ErrorCode.INVALID_DATA)
    loop = asyncio.get_running_loop()
    reports: asyncio.Queue[tuple[str, int | None] | None] = asyncio.Queue()

    def on_progress(phase: str, percent: int | None) -> None:
        # After a timeout the pull goes on in its thread while the loop may be gone.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(reports.put_nowait, (phase, percent))

    async def forward() -> None:
        while (report := await reports.get()) is not None:
            _, percent = report
            await ctx.progress(f"pulling {image}" + ("" if percent is None else f": {percent}%"),
                               None if percent is None else percent * PULL_SHARE // 100)

    await ctx.progress(f"pulling {image}", 0)
    forwarder = asyncio.create_task(forward())
    try:
        await asyncio.to_thread(ctx.runtime.pull, image, auth, on_progress)
    except BaseException:
        forwarder.cancel()
        raise
    # Reports the thread queued were put before the thread's result arrived: None comes last.
    reports.put_nowait(None)
    await forwarder
    if not await asyncio.to_thread(ctx.runtime.image_present, image):
        raise InstructionError(f"image {image} is still missing after being pulled",
                               ErrorCode.RUNTIME_ERROR)
