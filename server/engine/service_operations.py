"""The operations of the service steps, as the runner carries them out (``server.engine.tables``).

Each holds the service's lock in the controller, so that no reconcile pass of this server
runs beside it; the runner's claim keeps other servers away.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from server import operations
from server.api.errors import ApiError
from server.caller import Caller
from server.engine.runner import Operation, Outcome
from server.engine.service_reconcile import service_containers
from server.engine.service_upgrade import Rollout
from server.store import Record
from shared.errors import InstructionError


def _locked(work: Callable[[Caller, Record], Awaitable[Outcome]]) -> Operation:
    async def operation(caller: Caller, record: Record) -> Outcome:
        async with caller.services.service_controller.lock(record.id):
            return await work(await _project_caller(caller, record), record)

    return operation


async def _project_caller(caller: Caller, record: Record) -> Caller:
    project = await caller.store.get(record.project_id) if record.project_id else None
    return Caller.system(caller.services, project)


async def activate(caller: Caller, record: Record) -> Outcome:
    """The service's first units; the controller keeps it at scale from then on."""
    if record.type != "service":
        return Outcome()
    result = await caller.services.service_controller.passes.run(record)
    if result.problem is not None:
        raise InstructionError(result.problem)
    return Outcome(data={"currentScale": result.plan.live})


async def _each_container(caller: Caller, record: Record, action: str | None) -> None:
    for container in await service_containers(caller.store, record):
        current = await caller.store.get(container.id)
        if current is None or current.removed is not None:
            continue
        try:
            if action is None:
                if current.state not in ("removing", "stopping"):
                    await operations.remove(caller, current)
            elif current.state in ("running", "starting"):
                await operations.act(caller, current, action)
        except ApiError as exc:
            raise InstructionError(exc.message or exc.code) from exc


async def deactivate(caller: Caller, record: Record) -> Outcome:
    await _each_container(caller, record, "stop")
    return Outcome()


async def remove(caller: Caller, record: Record) -> Outcome:
    await _each_container(caller, record, None)
    return Outcome()


async def restart(caller: Caller, record: Record) -> Outcome:
    await Rollout(caller.services, caller, record).restart()
    return Outcome()


async def upgrade(caller: Caller, record: Record) -> Outcome:
    await Rollout(caller.services, caller, record).upgrade()
    return Outcome()


async def finish_upgrade(caller: Caller, record: Record) -> Outcome:
    await Rollout(caller.services, caller, record).finish()
    return Outcome(data={"previousLaunchConfig": None, "previousSecondaryLaunchConfigs": None})


async def rollback(caller: Caller, record: Record) -> Outcome:
    previous = record.data.get("previousLaunchConfig")
    if previous is not None:
        record = await caller.store.update(record.id, {}, {
            "launchConfig": previous,
            "secondaryLaunchConfigs": record.data.get("previousSecondaryLaunchConfigs") or []})
    await Rollout(caller.services, caller, record).rollback()
    return Outcome(data={"previousLaunchConfig": None, "previousSecondaryLaunchConfigs": None})


async def cancel_upgrade(caller: Caller, record: Record) -> Outcome:
    return Outcome()  # the upgrade stops at its next batch; what it made stays for rollback


OPERATIONS: Mapping[str, Operation] = {
    "activate": _locked(activate), "deactivate": _locked(deactivate),
    "remove": _locked(remove), "restart": _locked(restart), "upgrade": _locked(upgrade),
    "finishupgrade": _locked(finish_upgrade), "rollback": _locked(rollback),
    "cancelupgrade": cancel_upgrade,
}
