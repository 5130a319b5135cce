"""What a stack upgrade changes (pure): the new compose files' services against the stack's.

A service of the files that the stack lacks is new. One it has is changed where the files say
something else: a new launch config (or sidekicks) is upgraded in service; other fields the
files give (scale, metadata, an external service's addresses, ...) are set; links are set
when they lead elsewhere. A field the files leave out keeps its value (an upgrade never
scales a service back to 1 because its rancher-compose.yml left ``scale`` out), and a service
the files leave out is left alone, as rancher-compose did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.compose import ServiceTemplate, StackTemplate

LAUNCH_FIELDS = ("launchConfig", "secondaryLaunchConfigs")
# The stack's fields an upgrade replaces, and where it keeps their old values for rollback
# (Rancher shows previousEnvironment and previousExternalId).
PREVIOUS = {"dockerCompose": "previousDockerCompose",
            "rancherCompose": "previousRancherCompose",
            "environment": "previousEnvironment", "externalId": "previousExternalId"}
# Fields of a template that are not the service's to change after it was made.
_NOT_CHANGED = frozenset({"name", "stackId", "startOnCreate", *LAUNCH_FIELDS})


@dataclass(frozen=True)
class ExistingService:
    """A service of the stack as the planner sees it."""

    id: int
    type: str
    state: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ServiceChange:
    """One service of the new files: ``service_id`` None when it is new. ``launch`` holds the
    new launch config and sidekicks when they changed, ``fields`` the other new values and
    ``previous`` what they were, ``links`` the aliases and target names it links to."""

    template: ServiceTemplate
    service_id: int | None
    launch: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def links(self) -> dict[str, str]:
        return {link.name: link.service for link in self.template.links}


class StackUpgradeError(ValueError):
    """The files ask for a change a stack upgrade cannot make: ``service`` names the service."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.message = message


# Where a service takes an in-service upgrade (SERVICE_LIFECYCLE's upgrade sources).
UPGRADABLE = frozenset({"active", "inactive"})


def plan_changes(template: StackTemplate,
                 existing: Mapping[str, ExistingService]) -> list[ServiceChange]:
    """Every service of ``template``, new or changed, in file order; unchanged ones too (with
    nothing to do) so that their links are checked like the rest."""
    changes: list[ServiceChange] = []
    for service in template.services:
        found = existing.get(service.name)
        if found is None:
            changes.append(ServiceChange(service, None))
            continue
        if found.type != service.type:
            raise StackUpgradeError(service.name, f"services.{service.name} is a "
                                    f"{found.type} in the stack and a {service.type} in the "
                                    "files: remove it first")
        launch = _launch_change(service, found)
        if launch is not None and found.state not in UPGRADABLE:
            raise StackUpgradeError(service.name, f"services.{service.name} is "
                                    f"{found.state}: its launch config can change only while "
                                    "it is active or inactive")
        fields = {key: value for key, value in service.fields.items()
                  if key not in _NOT_CHANGED and found.data.get(key) != value}
        previous = {key: found.data.get(key) for key in fields}
        changes.append(ServiceChange(service, found.id, launch, fields, previous))
    return changes


def _launch_change(service: ServiceTemplate, found: ExistingService) -> dict[str, Any] | None:
    if service.type != "service":
        return None
    launch = service.fields.get("launchConfig") or {}
    sidekicks = service.fields.get("secondaryLaunchConfigs") or []
    if launch == (found.data.get("launchConfig") or {}) and \
            sidekicks == (found.data.get("secondaryLaunchConfigs") or []):
        return None
    return {"launchConfig": launch, "secondaryLaunchConfigs": sidekicks}

