"""Container instructions (``instance.*``): check the container's state, act, verify.

Every handler is idempotent. Containers are found by their ``io.rancher.container.uuid`` label,
never by name, so a re-sent ``instance.create`` reuses the container the first one made. The
dispatcher runs instructions about one resource one at a time, so a create re-sent while the
first is still pulling waits for it and then finds its container: no second container.

Each handler parses its request with its type from ``shared.instructions`` and returns its
typed reply (the dispatcher dumps it): the container's ``ContainerState``, except
``instance.remove``'s, which is ``{}`` (``NoData``), also when the container was already gone,
and ``instance.stats``'s ``StatsSample``.
"""

from __future__ import annotations

import asyncio
import contextlib

from agent.containers import create_params
from agent.dispatcher import InstructionContext
from shared.containers import ContainerState, ContainerStatus
from shared.errors import ErrorCode, InstructionError
from shared.instructions import (
    ContainerRef,
    CreateRequest,
    NoData,
    RegistryAuth,
    RemoveRequest,
    StatsSample,
    StopRequest,
)

DEFAULT_STOP_TIMEOUT = 10.0
PULL_SHARE = 90
"""Percent of an instruction's progress bar the image pull takes; creating takes the rest."""
MANAGED_NETWORK = "managed"
MANAGED_NETWORK_WAIT = 30.0
"""Seconds ``instance.create`` waits for the managed network to be set up on this host."""


async def create(ctx: InstructionContext) -> ContainerState:
    """Create the container of ``data.container`` unless it exists, pulling its image first;
    one on the managed network waits (a while) for that network to be set up."""
    request = CreateRequest.parse(ctx.request.data)
    spec = request.container
    # The server puts the host's agent IP into each port's hostIp when the user gave none;
    # a port still without one binds every interface.
    params = create_params(spec, None)
    existing = await asyncio.to_thread(ctx.runtime.find_container, spec.uuid)
    if existing is not None:
        return existing
    if not await asyncio.to_thread(ctx.runtime.image_present, spec.image):
        await _pull(ctx, spec.image, request.registry_auth)
    if spec.network_mode == MANAGED_NETWORK:
        # A container placed right after its host registered may arrive before the host's
        # first network.apply; waiting after the pull lets the two overlap.
        await ctx.network.wait_ready(MANAGED_NETWORK_WAIT)
    await ctx.progress(f"creating container from {spec.image}", PULL_SHARE)
    docker_id = await asyncio.to_thread(ctx.runtime.create_container, params)
    return await asyncio.to_thread(ctx.runtime.inspect_container, docker_id)


async def start(ctx: InstructionContext) -> ContainerState:
    """Make the container run. One that exits at once is still answered with its state: the
    server decides what an early exit means."""
    uuid = ContainerRef.parse(ctx.request.data).uuid
    state = await require_container(ctx, uuid)
    if state.status in (ContainerStatus.RUNNING, ContainerStatus.RESTARTING):
        return state
    if state.status is ContainerStatus.PAUSED:
        await asyncio.to_thread(ctx.runtime.unpause, state.docker_id)
    else:
        await asyncio.to_thread(ctx.runtime.start, state.docker_id)
    return await _inspect(ctx, uuid, state.docker_id)


async def stop(ctx: InstructionContext) -> ContainerState:
    """Stop the container (SIGTERM, SIGKILL after ``timeout`` s); a stopped one is left as is."""
    request = StopRequest.parse(ctx.request.data)
    state = await require_container(ctx, request.uuid)
    if not state.running:
        return state
    await asyncio.to_thread(ctx.runtime.stop, state.docker_id, _timeout(request))
    after = await _inspect(ctx, request.uuid, state.docker_id)
    if after.status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
        raise InstructionError(f"container {request.uuid} is still {after.status} after being "
                               "stopped", ErrorCode.RUNTIME_ERROR)
    return after


async def restart(ctx: InstructionContext) -> ContainerState:
    """Stop (as ``instance.stop``) and start the container; a stopped one is just started."""
    request = StopRequest.parse(ctx.request.data)
    state = await require_container(ctx, request.uuid)
    await asyncio.to_thread(ctx.runtime.restart, state.docker_id, _timeout(request))
    return await _inspect(ctx, request.uuid, state.docker_id)


async def remove(ctx: InstructionContext) -> NoData:
    """Remove the container, killing it if it runs; ``removeVolumes`` also removes its
    anonymous volumes (named ones stay). Answers ``{}``, also when it was already gone."""
    request = RemoveRequest.parse(ctx.request.data)
    state = await asyncio.to_thread(ctx.runtime.find_container, request.uuid)
    if state is None:
        return NoData()
    try:
        await asyncio.to_thread(ctx.runtime.remove_container, state.docker_id,
                                request.remove_volumes, True)
    except InstructionError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:  # gone meanwhile: what we wanted
            raise
    if await asyncio.to_thread(ctx.runtime.find_container, request.uuid) is not None:
        raise InstructionError(f"container {request.uuid} is still there after being removed",
                               ErrorCode.RUNTIME_ERROR)
    return NoData()


async def inspect(ctx: InstructionContext) -> ContainerState:
    """The container's state (``notFound`` if there is no such container)."""
    return await require_container(ctx, ContainerRef.parse(ctx.request.data).uuid)


async def stats(ctx: InstructionContext) -> StatsSample:
    """One sample of the container's CPU, memory, network and block I/O."""
    state = await require_container(ctx, ContainerRef.parse(ctx.request.data).uuid)
    return await asyncio.to_thread(ctx.runtime.stats, state.docker_id)


def _timeout(request: StopRequest) -> float:
    return DEFAULT_STOP_TIMEOUT if request.timeout is None else request.timeout


async def require_container(ctx: InstructionContext, uuid: str) -> ContainerState:
    """The state of the container labelled ``uuid``; ``notFound`` if there is none."""
    state = await asyncio.to_thread(ctx.runtime.find_container, uuid)
    if state is None:
        raise InstructionError(f"container {uuid} does not exist on this host",
                               ErrorCode.NOT_FOUND)
    return state


async def _inspect(ctx: InstructionContext, uuid: str, docker_id: str) -> ContainerState:
    try:
        return await asyncio.to_thread(ctx.runtime.inspect_container, docker_id)
    except InstructionError as exc:
        if exc.code is ErrorCode.NOT_FOUND:  # removed under our feet (e.g. --rm, a user)
            raise InstructionError(f"container {uuid} disappeared during "
                                   f"{ctx.request.name}", ErrorCode.NOT_FOUND) from exc
        raise


async def _pull(ctx: InstructionContext, image: str, auth: RegistryAuth | None) -> None:
    """Pull ``image``, turning the runtime's progress reports into progress messages.

    The runtime reports from its thread; the reports go through a queue to one forwarding task,
    so they reach the server in order and all before the reply.
    """
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
        await asyncio.to_thread(ctx.runtime.pull, image,
                                None if auth is None else auth.dump(), on_progress)
    except BaseException:
        forwarder.cancel()
        raise
    # Reports the thread queued were put before the thread's result arrived: None comes last.
    reports.put_nowait(None)
    await forwarder
    if not await asyncio.to_thread(ctx.runtime.image_present, image):
        raise InstructionError(f"image {image} is still missing after being pulled",
                               ErrorCode.RUNTIME_ERROR)
