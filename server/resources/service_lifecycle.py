"""The lifecycles of services and stacks (pure): Rancher 1.6's states and processes as tables.

A new service is ``inactive``; ``activate`` (asked for at once when ``startOnCreate``) passes
``activating``, where the service's first containers are created, and ends ``active``, where
the service controller (``server.engine.service_controller``) keeps it at its scale. A
failed activation leaves the service ``active`` with the failure as its transitioning error:
the controller keeps trying and clears it once the service is at scale again.

``deactivate`` stops its containers, ``remove`` removes them, ``restart`` restarts them batch
by batch. ``upgrade`` (``inServiceStrategy``) replaces the containers with ones of a new
launch config batch by batch and ends ``upgraded``, the old containers kept stopped;
``finishupgrade`` removes them; ``rollback`` brings the previous launch config back;
``cancelupgrade`` stops an upgrade where it is.

A stack's lifecycle is Rancher's too: its steps act on its services. ``upgrade`` takes new
compose files: services whose launch config changed are upgraded in service, new ones are
created, other changed fields are set (``server.engine.stack_upgrade``); ``finishupgrade``,
``rollback`` and ``cancelupgrade`` do the same to each service the upgrade touched.
"""

from __future__ import annotations

from enum import StrEnum

from server.api.schema import Action
from server.lifecycle import Lifecycle, step


class ServiceState(StrEnum):
    INACTIVE = "inactive"
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    RESTARTING = "restarting"
    UPGRADING = "upgrading"
    UPGRADED = "upgraded"
    FINISHING_UPGRADE = "finishing-upgrade"
    ROLLING_BACK = "rolling-back"
    CANCELING_UPGRADE = "canceling-upgrade"
    CANCELED_UPGRADE = "canceled-upgrade"
    REMOVING = "removing"
    REMOVED = "removed"


# Where the controller keeps a service's containers at scale.
RUNNING_STATES = frozenset({"active", "upgraded"})
# Where a service may be removed (Rancher: any resting state).
_RESTING = frozenset({"inactive", "active", "upgraded", "canceled-upgrade"})

SERVICE_LIFECYCLE = Lifecycle(
    states=ServiceState,
    initial="inactive",
    steps=(
        step("activate", {"inactive"}, "active", via="activating", error="active"),
        step("deactivate", {"active", "upgraded", "canceled-upgrade"}, "inactive",
             via="deactivating", error="inactive"),
        step("restart", {"active"}, "active", via="restarting", error="active",
             input="serviceRestart"),
        step("upgrade", {"active", "inactive"}, "upgraded", via="upgrading", error="upgraded",
             input="serviceUpgrade"),
        step("finishupgrade", {"upgraded"}, "active", via="finishing-upgrade", error="active"),
        step("rollback", {"upgraded", "canceled-upgrade"}, "active", via="rolling-back",
             error="active"),
        step("cancelupgrade", {"upgrading"}, "canceled-upgrade", via="canceling-upgrade",
             error="canceled-upgrade"),
        step("remove", _RESTING, "removed", via="removing", error="removed"),
    ),
    verbs={
        "setservicelinks": Action(frozenset(_RESTING), "setServiceLinksInput", "service"),
        "addservicelink": Action(frozenset(_RESTING), "addRemoveServiceLinkInput", "service"),
        "removeservicelink": Action(frozenset(_RESTING), "addRemoveServiceLinkInput",
                                    "service"),
    },
)


class StackState(StrEnum):
    ACTIVE = "active"
    ACTIVATING = "activating"
    UPGRADING = "upgrading"
    UPGRADED = "upgraded"
    FINISHING_UPGRADE = "finishing-upgrade"
    ROLLING_BACK = "rolling-back"
    CANCELING_UPGRADE = "canceling-upgrade"
    CANCELED_UPGRADE = "canceled-upgrade"
    REMOVING = "removing"
    REMOVED = "removed"


# Where a stack rests: its services may be acted on, and it may be removed.
_STACK_RESTING = frozenset({"active", "upgraded", "canceled-upgrade"})

STACK_LIFECYCLE = Lifecycle(
    states=StackState,
    initial="active",
    steps=(
        # A failed or canceled upgrade stops where it is: rollback, or upgrade again.
        step("upgrade", {"active", "canceled-upgrade"}, "upgraded", via="upgrading",
             error="canceled-upgrade", input="stackUpgrade"),
        step("finishupgrade", {"upgraded"}, "active", via="finishing-upgrade",
             error="upgraded"),
        step("rollback", {"upgraded", "canceled-upgrade"}, "active", via="rolling-back",
             error="canceled-upgrade"),
        step("cancelupgrade", {"upgrading"}, "canceled-upgrade", via="canceling-upgrade",
             error="canceled-upgrade"),
        step("remove", _STACK_RESTING, "removed", via="removing", error="removed"),
    ),
    verbs={
        "activateservices": Action(_STACK_RESTING, None, "stack"),
        "deactivateservices": Action(_STACK_RESTING, None, "stack"),
        "exportconfig": Action(_STACK_RESTING, "composeConfigInput", "composeConfig"),
        "addoutputs": Action(_STACK_RESTING, "addOutputsInput", "stack"),
    },
)
