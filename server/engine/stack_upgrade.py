"""A stack's upgrade and its ends, as the runner carries them out.

``upgrade`` works from the files the stack now holds (``StackType._prepare_upgrade`` put
them there, with what they replace): it creates the new services, sets the changed fields and
links (keeping the old values), starts the new services, then upgrades in service each one
whose launch config changed, one after the other, each with its own upgrade strategy. What it
did is written to the stack as it goes (``upgradeProgress``), so a server that takes the
operation over after a restart carries on where it stood, and so that ``rollback`` knows what
to undo: it rolls the upgraded services back, puts the old fields and links back, removes the
services the upgrade made and restores the files. ``finishupgrade`` finishes the upgrade of
every service of the stack that is ``upgraded``; ``cancelupgrade`` cancels the service
upgrades under way.

Each step waits for the service steps it asked for, so that the stack ends ``upgraded`` only
once its services are, and a service that fails fails the stack's step with its message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from server import operations
from server.api.errors import ApiError
from server.caller import Caller
from server.engine.runner import Operation, Outcome
from server.engine.stack_changes import (
    PREVIOUS,
    ExistingService,
    ServiceChange,
    StackUpgradeError,
    plan_changes,
)
from server.service_kinds import SERVICE_KINDS
from server.store import Condition, Query, Record, Store
from shared.errors import InstructionError

SERVICE_TYPES = list(SERVICE_KINDS)
POLL_SECONDS = 0.25


async def existing_services(store: Store, stack: Record) -> dict[str, ExistingService]:
    services = await store.list(Query(
        types=SERVICE_TYPES, project_id=stack.project_id, limit=1000,
        conditions=[Condition("stackId", "eq", stack.id, "int"), Condition("removed", "null")]))
    return {s.name or "": ExistingService(s.id, s.type, s.state, s.data) for s in services}


@dataclass
class Progress:
    """What the upgrade did so far: services it upgraded and made, and the old values of the
    fields it set (by service id, as text: the stack's data is JSON)."""

    upgraded: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, stack: Record) -> Progress:
        found = stack.data.get("upgradeProgress") or {}
        return cls(list(found.get("upgraded") or []), list(found.get("created") or []),
                   dict(found.get("previous") or {}))

    def as_data(self) -> dict[str, Any]:
        return {"upgraded": self.upgraded, "created": self.created, "previous": self.previous}


class _Stopped(Exception):
    """The stack left the state the step runs in: a newer step (cancel) takes over."""


class StackStep:
    """One of a stack's upgrade steps, carried out for ``stack`` in ``state``."""

    def __init__(self, caller: Caller, stack: Record, state: str) -> None:
        self.caller = caller
        self.store = caller.store
        self._stack = stack
        self._state = state
        self.progress = Progress.of(stack)

    async def save(self) -> None:
        await self.store.update(self._stack.id, {}, {"upgradeProgress": self.progress.as_data()})

    async def act(self, service_id: int, action: str, body: Any = None) -> None:
        service = await self.store.get(service_id)
        if service is None or service.removed is not None:
            return
        try:
            await operations.act(self.caller, service, action, body)
        except ApiError as exc:
            raise InstructionError(f"service {service.name}: {exc.message or exc.code}") \
                from exc

    async def settle(self, service_id: int, passing: Collection[str]) -> Record | None:
        """The service once out of the states ``passing``; its step's failure fails this one.
        None when it is gone."""
        while True:
            service = await self.store.get(service_id)
            if service is None or service.removed is not None:
                return None
            if service.state not in passing:
                if service.transitioning == "error":
                    raise InstructionError(f"service {service.name}: "
                                           f"{service.transitioning_message}")
                return service
            stack = await self.store.get(self._stack.id)
            if stack is None or stack.state != self._state:
                raise _Stopped()
            await asyncio.sleep(POLL_SECONDS)


def _in_project(work: Callable[[Caller, Record], Awaitable[Outcome]]) -> Operation:
    """The step as the stack's environment's system caller; a stack that left the step's
    state (a cancel asked for meanwhile) ends it, unrecorded: the newer step runs next."""

    async def operation(caller: Caller, record: Record) -> Outcome:
        project = await caller.store.get(record.project_id) if record.project_id else None
        try:
            return await work(Caller.system(caller.services, project), record)
        except _Stopped:
            return Outcome()

    return operation


async def upgrade(caller: Caller, stack: Record) -> Outcome:
    stack_type = caller.services.types.get("stack")
    template = stack_type.template_of(stack.data)  # type: ignore[union-attr]
    if template is None:
        raise InstructionError("the stack has no dockerCompose to upgrade to")
    existing = await existing_services(caller.store, stack)
    try:
        changes = plan_changes(template, existing)
    except StackUpgradeError as exc:
        raise InstructionError(exc.message) from None
    await _carry_out(StackStep(caller, stack, "upgrading"), stack, changes, existing)
    return Outcome()


async def _carry_out(work: StackStep, stack: Record, changes: list[ServiceChange],
                     existing: Mapping[str, ExistingService]) -> None:
    caller, store = work.caller, work.store
    stack_type = caller.services.types.get("stack")
    ids = {name: found.id for name, found in existing.items()}
    for change in sorted(changes, key=lambda c: c.template.type == "loadBalancerService"):
        if change.service_id is None:
            made = await stack_type.make_service(caller, stack, change.template, ids)  # type: ignore[union-attr]
            ids[change.name] = made.id
            work.progress.created.append(made.id)
            await work.save()
    for change in changes:
        service_id = ids[change.name]
        current = await store.get(service_id)
        if current is None:
            continue
        links = await stack_type.resolve_links(caller, change.template, ids)  # type: ignore[union-attr]
        updates = {key: value for key, value in (await stack_type.api_fields(  # type: ignore[union-attr]
            caller, stack, change.template, ids)).items() if key in change.fields}
        previous = dict(change.previous)
        if links != (current.data.get("linkedServices") or {}):
            updates["linkedServices"] = links
            previous["linkedServices"] = current.data.get("linkedServices") or {}
        if change.launch is not None and current.state == "inactive":
            # Nothing runs to be replaced: the new launch config is set like the rest.
            updates.update(change.launch)
            previous.update({key: current.data.get(key) for key in change.launch})
        elif change.launch is not None:
            # A new scale waits for the upgrade: units of the old launch config are not
            # made only to be replaced.
            updates.pop("scale", None)
        if not updates:
            continue
        if service_id not in work.progress.created:
            kept = work.progress.previous.setdefault(str(service_id), {})
            for key, value in previous.items():
                kept.setdefault(key, value)  # a resumed upgrade keeps the first old value
            await work.save()
        await store.update(service_id, {}, updates)
    for service_id in work.progress.created:
        # Started as they would have been with the stack: when it starts its services.
        service = await store.get(service_id)
        if service is not None and service.state == "inactive" and \
                stack.data.get("startOnCreate") and service.data.get("startOnCreate"):
            await work.act(service_id, "activate")
        await work.settle(service_id, ("activating",))
    for change in changes:
        if change.launch is not None and change.service_id is not None:
            await _upgrade_service(work, change)


async def _upgrade_service(work: StackStep, change: ServiceChange) -> None:
    assert change.service_id is not None and change.launch is not None
    service = await work.store.get(change.service_id)
    if service is None or service.state == "inactive":
        return  # gone, or given its new launch config with its other fields
    if service.state == "active":
        stored = service.data.get("upgradeStrategy") or {}
        strategy = {key: stored[key] for key in ("batchSize", "intervalMillis", "startFirst")
                    if key in stored}
        if change.service_id not in work.progress.upgraded:
            work.progress.upgraded.append(change.service_id)
            await work.save()
        await work.act(change.service_id, "upgrade",
                       {"inServiceStrategy": {**strategy, **change.launch}})
    if "scale" in change.fields:
        await work.store.update(change.service_id, {}, {"scale": change.fields["scale"]})
    await work.settle(change.service_id, ("upgrading",))


async def finish_upgrade(caller: Caller, stack: Record) -> Outcome:
    work = StackStep(caller, stack, "finishing-upgrade")
    upgraded = [s.id for s in (await existing_services(caller.store, stack)).values()
                if s.state == "upgraded"]
    for service_id in upgraded:
        await work.act(service_id, "finishupgrade")
    for service_id in upgraded:
        await work.settle(service_id, ("finishing-upgrade",))
    return Outcome(data=_forget_previous())


async def rollback(caller: Caller, stack: Record) -> Outcome:
    work = StackStep(caller, stack, "rolling-back")
    progress = work.progress
    for service_id in progress.upgraded:
        service = await work.settle(service_id, ("upgrading", "canceling-upgrade"))
        if service is not None and service.state in ("upgraded", "canceled-upgrade"):
            await work.act(service_id, "rollback")
    for service_id in progress.upgraded:
        await work.settle(service_id, ("rolling-back",))
    for key, previous in progress.previous.items():
        if await caller.store.get(int(key)) is not None:
            await caller.store.update(int(key), {}, previous)
    for service_id in progress.created:
        service = await work.settle(service_id, ("activating", "deactivating"))
        if service is not None and service.state not in ("removing", "removed"):
            try:
                await operations.remove(caller, service)
            except ApiError as exc:
                raise InstructionError(f"service {service.name}: {exc.message}") from exc
    restored = {key: stack.data.get(previous) for key, previous in PREVIOUS.items()}
    return Outcome(data={**restored, **_forget_previous()})


async def cancel_upgrade(caller: Caller, stack: Record) -> Outcome:
    work = StackStep(caller, stack, "canceling-upgrade")
    for service_id in work.progress.upgraded:
        service = await caller.store.get(service_id)
        if service is not None and service.state == "upgrading":
            await work.act(service_id, "cancelupgrade")
    for service_id in work.progress.upgraded:
        await work.settle(service_id, ("upgrading", "canceling-upgrade"))
    return Outcome()


def _forget_previous() -> dict[str, Any]:
    return {**{previous: None for previous in PREVIOUS.values()}, "upgradeProgress": None}


OPERATIONS: Mapping[str, Operation] = {
    "upgrade": _in_project(upgrade), "finishupgrade": _in_project(finish_upgrade),
    "rollback": _in_project(rollback), "cancelupgrade": _in_project(cancel_upgrade),
}
