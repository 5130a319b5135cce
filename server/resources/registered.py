"""The lifecycle of accounts and credentials: created ``registering``, then ``active``.

Those types and the other template types (environments, registries, their credentials)
also offer Rancher's ``update`` action while active or inactive (``TemplateType``).

As in Rancher, a new account, API key or registration token is answered ``registering``
(transitioning) and the runner activates it (``server.engine.registering``); a client that
wants to use it waits for ``active`` (``wait_success``). ``RegisteredType`` creates such
records and keeps a client's own change from failing only because the activation landed
between its read and its write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.api.schema import Action
from server.api.types import ResourceType
from server.caller import Caller
from server.lifecycle import TEMPLATE, Lifecycle, step
from server.store import Conflict, NewRecord, Record, Transaction


class RegisteredState(StrEnum):
    REGISTERING = "registering"
    ACTIVE = "active"
    INACTIVE = "inactive"
    REMOVED = "removed"
    PURGED = "purged"


# Rancher's ``update`` process, which a PUT runs and a client may ask for alone: asked for
# alone, its body changes what a PUT's would (``operations.act``), and nothing else happens.
UPDATE_VERB = {"update": Action(frozenset({"active", "inactive"}))}
UPDATABLE_TEMPLATE = dataclasses.replace(TEMPLATE, verbs=UPDATE_VERB)
TEMPLATE_STATES = UPDATABLE_TEMPLATE.state_names
TEMPLATE_ACTIONS = UPDATABLE_TEMPLATE.actions()

REGISTERED = Lifecycle(
    states=RegisteredState,
    initial="registering",
    steps=(
        step("create", (), "active", via="registering"),
        step("activate", {"inactive"}, "active"),
        step("deactivate", {"registering", "active"}, "inactive"),
        step("remove", {"registering", "inactive", "active"}, "removed"),
        step("purge", {"removed"}, "purged"),
    ),
    verbs=UPDATE_VERB,
)
REGISTERED_STATES = REGISTERED.state_names
REGISTERED_ACTIONS = REGISTERED.actions()

# What the activation changes; a record that differs from its earlier read only in these
# was activated meanwhile, and nobody else wrote to it.
_ACTIVATION_COLUMNS = ("state", "transitioning", "transitioning_message",
                       "transitioning_progress", "version")


def only_activated(before: Record, after: Record) -> bool:
    """Whether ``after`` is ``before`` with its registration completed, and nothing else."""
    if before.state != "registering" or after.state != "active" or \
            after.version != before.version + 1:
        return False
    kept = dataclasses.replace(after, **{name: getattr(before, name)
                                         for name in _ACTIVATION_COLUMNS})
    return kept == before


class TemplateType(ResourceType):
    """A type with Rancher's template lifecycle, plus its ``update`` action."""

    lifecycle = UPDATABLE_TEMPLATE
    update_action_is_put = True


class RegisteredType(TemplateType):
    """A type whose records are created ``registering`` and activated by the runner."""

    lifecycle = REGISTERED

    async def store_registering(self, caller: Caller, new: NewRecord,
                                unique_field: str | None = None) -> Record:
        """Insert ``new`` in ``registering`` and hand its activation to the runner. A taken
        unique key is a 422 NotUnique naming ``unique_field``."""
        runner = caller.services.runner
        registering = dataclasses.replace(new, state="registering", transitioning="yes",
                                          transitioning_message="In Progress")

        async def insert(tx: Transaction) -> tuple[Record, bool]:
            created = await tx.create(registering)
            return created, await runner.claim_in(tx, created.id, "create")

        try:
            record, claimed = await caller.store.transact(insert)
        except Conflict as exc:
            raise invalid("NotUnique", unique_field,
                          f"a {self.schema.id} with that {unique_field or 'key'} "
                          "already exists") from exc
        runner.submit(record.id, claimed=claimed)
        return record

    async def write(self, caller: Caller, record: Record, columns: Mapping[str, Any],
                    data: Mapping[str, Any] | None = None) -> Record:
        try:
            return await super().write(caller, record, columns, data)
        except ApiConflict:
            fresh = await caller.store.get(record.id)
            if fresh is None or not only_activated(record, fresh):
                raise
            return await super().write(caller, fresh, columns, data)
