"""Stacks (v2-beta ``stack``): a group of services, made from a docker-compose.yml and an
optional rancher-compose.yml posted as text (``server.compose``), exported back as both.

A stack made from compose files gets every service of the files, their links resolved by
name, and starts them when ``startOnCreate`` says so. The files are checked in full before
anything is made: a syntax error (with its line and column), unknown keys (all of them) and
links to missing services are one 422 each, and leave nothing behind. ``upgrade`` takes new
files, checked the same way before the stack enters ``upgrading``; the engine carries it out
(``server.engine.stack_upgrade``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from server import operations
from server.api.context import RequestContext
from server.api.errors import ApiError, invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType
from server.api.validation import validate_create
from server.caller import Caller
from server.compose import ComposeError, ServiceTemplate, StackTemplate, export_stack, parse_stack
from server.engine.stack_changes import PREVIOUS, StackUpgradeError, plan_changes
from server.resources.lb_compose import lb_config_from_compose, lb_config_to_compose
from server.resources.service_lifecycle import STACK_LIFECYCLE
from server.resources.services import (
    ServiceType,
    check_launch_config,
    check_sidekicks,
)
from server.service_kinds import SERVICE_KINDS
from server.store import Condition, Query, Record
from shared.ids import format_id

STACK = Schema(
    id="stack", scope=Scope.PROJECT, prefix="1st",
    fields={
        "name": Field(create=True, update=True, required=True, nullable=False, min_length=1,
                      max_length=63),
        "dockerCompose": Field(create=True, filterable=False, max_length=1024 * 1024),
        "rancherCompose": Field(create=True, filterable=False, max_length=1024 * 1024),
        "environment": Field(type="map[string]", create=True, filterable=False),
        "outputs": Field(type="map[string]", filterable=False),
        "startOnCreate": Field(type="boolean", create=True, nullable=False, default=False),
        "externalId": Field(create=True, update=True),
        "group": Field(create=True, update=True),
        "healthState": Field(type="enum", options=("healthy", "unhealthy", "degraded",
                                                   "initializing", "started-once")),
        "serviceIds": Field(type="array[reference[service]]", filterable=False),
        # What an upgrade replaced, for its rollback.
        "previousEnvironment": Field(type="map[string]", filterable=False),
        "previousExternalId": Field(filterable=False),
    },
    states=STACK_LIFECYCLE.state_names, actions=STACK_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("services",),
)
COMPOSE_CONFIG = Schema(id="composeConfig", scope=Scope.PROJECT, embedded=True, fields={
    "dockerComposeConfig": Field(), "rancherComposeConfig": Field()})
COMPOSE_CONFIG_INPUT = Schema(id="composeConfigInput", scope=Scope.PROJECT, embedded=True,
                              fields={"serviceIds": Field(type="array[reference[service]]",
                                                          create=True)})
ADD_OUTPUTS = Schema(id="addOutputsInput", scope=Scope.PROJECT, embedded=True, fields={
    "outputs": Field(type="map[string]", create=True, required=True, nullable=False)})
STACK_UPGRADE = Schema(id="stackUpgrade", scope=Scope.PROJECT, embedded=True, fields={
    "dockerCompose": Field(create=True, max_length=1024 * 1024),
    "rancherCompose": Field(create=True, max_length=1024 * 1024),
    "environment": Field(type="map[string]", create=True),
    "externalId": Field(create=True),
})
EMBEDDED = [COMPOSE_CONFIG, COMPOSE_CONFIG_INPUT, ADD_OUTPUTS, STACK_UPGRADE]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def check_name(name: str, field_name: str = "name") -> None:
    """Stack and service names become DNS labels (``<service>.<stack>.rancher.internal``)."""
    lowered = name.lower()
    if not lowered or not set(lowered) <= _NAME_CHARS or lowered[0] == "-" or \
            lowered[-1] == "-" or len(lowered) > 63:
        raise invalid("InvalidCharacters", field_name,
                      f"{name!r} must be letters, digits and dashes (a DNS label), "
                      "not starting or ending with a dash")


def compose_error(exc: ComposeError) -> ApiError:
    """All the problems of the files in one 422; the first names the field and place."""
    first = exc.problems[0]
    where = f" (line {first.line}, column {first.column})" if first.line else ""
    details = "; ".join(
        f"{p.path + ': ' if p.path else ''}{p.message}"
        f"{f' (line {p.line}, column {p.column})' if p.line else ''}" for p in exc.problems)
    error = invalid("InvalidFormat", first.file, f"{first.message}{where}"
                    if len(exc.problems) == 1 else f"{len(exc.problems)} problems: {details}")
    error.detail = details
    return error


class StackType(ResourceType):
    lifecycle = STACK_LIFECYCLE

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        check_name(values["name"])
        await self._check_unique_name(caller, project_id, values["name"])
        template = self.template_of(values)
        if template is not None:
            await self._check(caller, template)
            for service in template.services:
                await self.resolve_links(caller, service, {s.name for s in template.services})
        stack = await self.store_new(caller, values, project_id=project_id, account_id=None)
        if template is not None:
            await self._make_services(caller, stack, template, bool(values.get("startOnCreate")))
        return stack

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        if "name" in values and values["name"] != record.name:
            check_name(values["name"])
            await self._check_unique_name(caller, record.project_id, values["name"])
        # The service controller writes the stack's healthState all the time.
        return await self.merge(caller, record, values)

    async def _check_unique_name(self, caller: Caller, project_id: int | None,
                                 name: str) -> None:
        same = await caller.store.list(Query(
            types=["stack"], project_id=project_id, limit=1,
            conditions=[Condition("name", "eq", name), Condition("removed", "null")]))
        if same:
            raise invalid("NotUnique", "name", f"a stack named {name!r} exists")

    def template_of(self, values: Mapping[str, Any]) -> StackTemplate | None:
        """The services a stack's files (or a create or upgrade body) describe."""
        text = values.get("dockerCompose")
        if not text:
            if values.get("rancherCompose"):
                raise invalid("MissingRequired", "dockerCompose",
                              "a rancherCompose needs its dockerCompose")
            return None
        try:
            return parse_stack(text, values.get("rancherCompose"),
                               environment=values.get("environment") or {})
        except ComposeError as exc:
            raise compose_error(exc) from None

    async def _check(self, caller: Caller, template: StackTemplate) -> None:
        """Everything the services will need, before anything is made."""
        for service in template.services:
            where = f"dockerCompose: services.{service.name}"
            try:
                check_name(service.name)
                if service.type == "service":
                    check_launch_config(service.fields.get("launchConfig") or {},
                                        "launchConfig")
                    check_sidekicks(service.fields.get("secondaryLaunchConfigs"))
            except ApiError as exc:
                exc.message = f"{where}: {exc.message}"
                exc.field_name = "dockerCompose"
                raise
            for link in service.links:
                if "/" in link.service:
                    await self._external_target(caller, link.service)

    async def _external_target(self, caller: Caller, ref: str) -> Record:
        stack_name, _, service_name = ref.partition("/")
        assert caller.project is not None
        stacks = await caller.store.list(Query(
            types=["stack"], project_id=caller.project.id, limit=1,
            conditions=[Condition("name", "eq", stack_name), Condition("removed", "null")]))
        found = await caller.store.list(Query(
            types=list(SERVICE_KINDS), project_id=caller.project.id, limit=1,
            conditions=[Condition("name", "eq", service_name), Condition("removed", "null"),
                        Condition("stackId", "eq", stacks[0].id, "int")])) if stacks else []
        if not found:
            raise invalid("InvalidReference", "dockerCompose",
                          f"external_links: no service {ref} in this environment")
        return found[0]

    async def _make_services(self, caller: Caller, stack: Record, template: StackTemplate,
                             start: bool) -> None:
        made: dict[str, Record] = {}
        ids: dict[str, int] = {}
        for service in in_making_order(template.services):
            made[service.name] = await self.make_service(caller, stack, service, ids)
            ids[service.name] = made[service.name].id
        for service in template.services:
            links = await self.resolve_links(caller, service, ids)
            if links:
                made[service.name] = await caller.store.update(
                    made[service.name].id, {}, {"linkedServices": links})
        if start:
            for service in template.services:
                if made[service.name].data.get("startOnCreate"):
                    await operations.act(caller, made[service.name], "activate")

    async def make_service(self, caller: Caller, stack: Record, service: ServiceTemplate,
                           ids: Mapping[str, int]) -> Record:
        """One service of the files, not started: its links are set once all exist. ``ids``
        has the services made before it by name (a load balancer's targets)."""
        # rancher-compose's start_on_create is true unless it says otherwise.
        body = {"startOnCreate": True, **await self.api_fields(caller, stack, service, ids),
                "name": service.name, "stackId": format_id("1st", stack.id)}
        rtype = caller.services.types.get(service.type)
        assert isinstance(rtype, ServiceType)
        return await rtype.create(caller, validate_create(rtype.schema, body), start=False)

    async def api_fields(self, caller: Caller, stack: Record, service: ServiceTemplate,
                         ids: Mapping[str, int]) -> dict[str, Any]:
        """The template's fields as the API takes them: a load balancer's targets and
        certificates named in the files become references."""
        fields = dict(service.fields)
        if service.type == "loadBalancerService" and "lbConfig" in fields:
            fields["lbConfig"] = await lb_config_from_compose(
                caller, fields["lbConfig"], stack.project_id, ids)
        return fields

    async def resolve_links(self, caller: Caller, service: ServiceTemplate,
                     known: Mapping[str, int] | set[str]) -> dict[str, int]:
        """The service's links as linkedServices (alias → service id), ``known`` having the
        stack's services by name; with ``known`` a set of names (a check before anything
        is made) the stack's own targets resolve to 0."""
        links: dict[str, int] = {}
        for link in service.links:
            if "/" in link.service:
                links[link.name] = (await self._external_target(caller, link.service)).id
                continue
            if link.service not in known:
                raise invalid("InvalidReference", "dockerCompose",
                              f"services.{service.name}.links: no service {link.service}")
            links[link.name] = known[link.service] if isinstance(known, Mapping) else 0
        return links

    async def services_of(self, caller: Caller, stack: Record) -> list[Record]:
        return await caller.store.list(Query(
            types=list(SERVICE_KINDS), project_id=stack.project_id, limit=1000,
            conditions=[Condition("stackId", "eq", stack.id, "int"),
                        Condition("removed", "null")]))

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name in ("activateservices", "deactivateservices"):
            wanted = "activate" if name == "activateservices" else "deactivate"
            for service in await self.services_of(caller, record):
                if wanted in caller.services.types.schema(service.type).valid_actions(  # type: ignore[union-attr]
                        service.state):
                    await operations.act(caller, service, wanted)
            return record
        if name == "exportconfig":
            return await self.export(caller, record, values.get("serviceIds"))
        if name == "upgrade":
            row = self.lifecycle.step(name)
            assert row is not None
            return await self.take_step(caller, record, row,
                                        await self._prepare_upgrade(caller, record, values))
        if name == "addoutputs":
            outputs = {**(record.data.get("outputs") or {}), **values["outputs"]}
            return await self.write(caller, record, {}, {"outputs": outputs})
        return await super().perform(caller, record, name, values)

    async def _prepare_upgrade(self, caller: Caller, stack: Record,
                               values: Mapping[str, Any]) -> dict[str, Any]:
        """The stack's data as the upgrade starts: the new files (what the body leaves out
        stays), what they replace, and an empty record of what the upgrade did. Every
        problem is a 422 here, before anything changes."""
        from server.engine.stack_upgrade import existing_services

        new = {key: values[key] if key in values else stack.data.get(key) for key in PREVIOUS}
        template = self.template_of(new)
        if template is None:
            raise invalid("MissingRequired", "dockerCompose",
                          "an upgrade needs the stack's new dockerCompose")
        await self._check(caller, template)
        existing = await existing_services(caller.store, stack)
        try:
            plan_changes(template, existing)
        except StackUpgradeError as exc:
            raise invalid("InvalidState", "dockerCompose", exc.message) from None
        names = {s.name for s in template.services} | set(existing)
        for service in template.services:
            await self.resolve_links(caller, service, names)
        return {**new, **{previous: stack.data.get(key) for key, previous in PREVIOUS.items()},
                "upgradeProgress": {}}

    async def export(self, caller: Caller, stack: Record,
                     only: list[str] | None) -> dict[str, Any]:
        services = await self.services_of(caller, stack)
        if only:
            wanted = {format_id("1s", s.id) for s in services} & set(only)
            services = [s for s in services if format_id("1s", s.id) in wanted]
        names = {s.id: s.name or "" for s in await self.services_of(caller, stack)}
        stacks: dict[int, str] = {}
        shaped = []
        for service in sorted(services, key=lambda s: s.id):
            links = []
            for alias, target_id in (service.data.get("linkedServices") or {}).items():
                if target_id in names:
                    links.append({"service": names[target_id], "name": alias})
                    continue
                target = await caller.store.get(target_id)
                if target is None or target.removed is not None:
                    continue
                stack_id = int(target.data.get("stackId") or 0)
                if stack_id not in stacks:
                    other = await caller.store.get(stack_id)
                    stacks[stack_id] = other.name if other and other.name else ""
                links.append({"service": f"{stacks[stack_id]}/{target.name}", "name": alias})
            data = dict(service.data)
            # What a compose file leaves out: scale 1, and start_on_create true.
            if data.get("scale") == 1:
                data.pop("scale")
            if data.get("startOnCreate") is True:
                data.pop("startOnCreate")
            if service.type == "loadBalancerService" and data.get("lbConfig"):
                data["lbConfig"] = lb_config_to_compose(
                    data["lbConfig"], names, await self._certificate_names(caller,
                                                                           data["lbConfig"]))
            shaped.append({**data, "name": service.name, "type": service.type,
                           "serviceLinks": links})
        docker_compose, rancher_compose = export_stack(shaped)
        return {"type": "composeConfig", "links": {}, "actions": {},
                "dockerComposeConfig": docker_compose, "rancherComposeConfig": rancher_compose}

    async def _certificate_names(self, caller: Caller,
                                 config: Mapping[str, Any]) -> dict[int, str]:
        wanted = [*(config.get("certificateIds") or []), config.get("defaultCertificateId")]
        out: dict[int, str] = {}
        for certificate_id in wanted:
            found = await caller.store.get(certificate_id) if isinstance(certificate_id, int) \
                else None
            if found is not None and found.removed is None and found.name:
                out[found.id] = found.name
        return out

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        return {"outputs": record.data.get("outputs") or {}}

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        return {"services": f"{self_url}/services"}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "services":
            return Linked("service", records=await self.services_of(caller, record))
        return await super().linked(caller, record, name)


def in_making_order(services: Iterable[ServiceTemplate]) -> list[ServiceTemplate]:
    """Load balancers last: their rules name the services they balance to."""
    return sorted(services, key=lambda s: s.type == "loadBalancerService")


def types() -> list[ResourceType]:
    return [StackType(STACK)]
