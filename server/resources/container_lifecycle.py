"""The container lifecycle (pure): Rancher 1.6's instance states and processes as one table,
and the input types of the container actions.

A new container is ``requested`` (placed, the API answered) until the runner sends it to its
host (``creating``, then ``starting``). ``update`` passes ``updating-running`` or
``updating-stopped`` by where it starts, ``migrate`` passes ``migrating``, and an operation that
fails into ``error`` passes ``erroring`` first, where the container is stopped on its host.
Removing a running container stops it first (``stopping``, ``removing``, ``removed``).

Steps with no source states (``create``, ``error``, ``update-running``, ``update-stopped``) are
entered by Corral itself, never asked for by a client: their operations are the runner's.
"""

from __future__ import annotations

from enum import StrEnum

from server.api.schema import Action, Field, Schema, Scope
from server.lifecycle import Lifecycle, Step, step


class ContainerState(StrEnum):
    REQUESTED = "requested"
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    UPDATING_RUNNING = "updating-running"
    UPDATING_STOPPED = "updating-stopped"
    MIGRATING = "migrating"
    REMOVING = "removing"
    REMOVED = "removed"
    PURGING = "purging"
    PURGED = "purged"
    ERRORING = "erroring"
    ERROR = "error"


RUNNING = frozenset({"running"})
RESTING = frozenset({"running", "stopped"})
UPDATING = frozenset({"updating-running", "updating-stopped"})
# Where a container may be stopped, and removed without stopping it first.
STOPPABLE = frozenset({"running", "starting", "restarting", *UPDATING})
REMOVABLE = frozenset({"stopped", "error", *UPDATING})
# Every state in which the container may exist on its host: its logs can be read.
ON_HOST = frozenset(s.value for s in ContainerState) - {"requested", "removed", "purging",
                                                        "purged"}

# action → (valid in) → transitional state → operation → success / error. ``create`` is the
# step a new container starts in; its success state is what Docker reports (running or not).
CONTAINER_LIFECYCLE = Lifecycle(
    states=ContainerState,
    initial="requested",
    steps=(
        step("create", (), "running", via="requested", error="error",
             passes={"creating", "starting"}),
        step("start", {"stopped"}, "running", via="starting", error="stopped"),
        step("stop", STOPPABLE, "stopped", via="stopping", error="running",
             input="instanceStop"),
        step("restart", RUNNING, "running", via="restarting", error="stopped"),
        step("migrate", RUNNING, "running", via="migrating", error="error"),
        step("update-running", (), "running", via="updating-running", operation="update",
             error="running"),
        step("update-stopped", (), "stopped", via="updating-stopped", operation="update",
             error="stopped"),
        step("remove", REMOVABLE, "removed", via="removing", error="error"),
        step("error", (), "error", via="erroring", error="error"),
        step("purge", {"removed"}, "purged", via="purging", error="removed"),
    ),
    verbs={
        "update": Action(RESTING),
        "setlabels": Action(RESTING, input="setLabelsInput"),
        "addlabel": Action(RESTING, input="addLabelInput"),
        "removelabel": Action(RESTING, input="removeLabelInput"),
        "logs": Action(ON_HOST, input="containerLogs", output="hostAccess"),
        "execute": Action(RUNNING, input="containerExec", output="hostAccess"),
        "proxy": Action(RUNNING, input="containerProxy", output="hostAccess"),
    },
)


def update_step(state: str) -> Step:
    """The update step a container in ``state`` (running or stopped) enters."""
    row = CONTAINER_LIFECYCLE.step(f"update-{state}")
    assert row is not None, state
    return row


def lifecycle_step(action: str) -> Step:
    row = CONTAINER_LIFECYCLE.step(action)
    assert row is not None, action
    return row


ADD_LABEL = Schema(id="addLabelInput", scope=Scope.PROJECT, embedded=True, fields={
    "key": Field(create=True, required=True, nullable=False, min_length=1, max_length=1024),
    "value": Field(create=True, default="", max_length=4096),
})
REMOVE_LABEL = Schema(id="removeLabelInput", scope=Scope.PROJECT, embedded=True, fields={
    "key": Field(create=True, required=True, nullable=False, min_length=1, max_length=1024),
})
CONTAINER_PROXY = Schema(id="containerProxy", scope=Scope.PROJECT, embedded=True, fields={
    "port": Field(type="int", create=True, default=80, min=1, max=65535),
    "scheme": Field(type="enum", create=True, nullable=False, default="http",
                    options=("http", "https")),
})

EMBEDDED = [ADD_LABEL, REMOVE_LABEL, CONTAINER_PROXY]
