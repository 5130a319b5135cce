"""Services (base type ``service``): ``service``, ``dnsService`` (a service alias) and
``externalService``, with Rancher's v2-beta fields, one lifecycle
(``server.resources.service_lifecycle``) and the service-link verbs.

A service's containers are Corral's own (``serviceId`` in their data, Rancher's labels on
them): ``server.engine.service_units`` says which a service should have,
``server.engine.service_controller`` keeps them so. A service alias has no containers: its
name answers with its targets' addresses; an external service answers with its addresses or
its hostname.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.api.context import RequestContext
from server.api.errors import ApiError, invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType
from server.api.validation import validate_create
from server.caller import Caller
from server.resources.container_spec import build_spec
from server.resources.containers import CONTAINER
from server.resources.service_lifecycle import SERVICE_LIFECYCLE
from server.service_kinds import SERVICE_KINDS
from server.store import Condition, Query, Record
from shared.ids import format_id, parse_id

GLOBAL_LABEL = "io.rancher.scheduler.global"
MAX_SCALE = 1000

COMMON_FIELDS: dict[str, Field] = {
    "stackId": Field(type="reference[stack]", create=True, required=True, nullable=False),
    "metadata": Field(type="json", create=True, update=True, filterable=False),
    "startOnCreate": Field(type="boolean", create=True, nullable=False, default=False),
    # Rancher's alias → service map, set through the service-link actions.
    "linkedServices": Field(type="map[reference[service]]", filterable=False),
    "healthState": Field(type="enum", options=("healthy", "unhealthy", "degraded",
                                               "initializing", "started-once")),
    "fqdn": Field(filterable=False),
    "selectorLink": Field(create=True, update=True, filterable=False),
}
SERVICE = Schema(
    id="service", scope=Scope.PROJECT,
    fields={
        **COMMON_FIELDS,
        "launchConfig": Field(type="json", create=True, update=True, filterable=False),
        "secondaryLaunchConfigs": Field(type="array[json]", create=True, update=True,
                                        filterable=False),
        "scale": Field(type="int", create=True, update=True, nullable=False, default=1, min=0,
                       max=MAX_SCALE),
        "retainIp": Field(type="boolean", create=True, update=True, filterable=False),
        # rancher-compose's upgrade_strategy, kept for upgrades asked for without one.
        "upgradeStrategy": Field(type="json", create=True, update=True, filterable=False),
        "upgrade": Field(type="serviceUpgrade", filterable=False),
        "previousLaunchConfig": Field(type="json", filterable=False),
        "previousSecondaryLaunchConfigs": Field(type="array[json]", filterable=False),
        "currentScale": Field(type="int", filterable=False),
        "instanceIds": Field(type="array[reference[instance]]", filterable=False),
        "publicEndpoints": Field(type="json", filterable=False),
        "createIndex": Field(type="int", filterable=False),
        "vip": Field(filterable=False),
    },
    states=SERVICE_LIFECYCLE.state_names, actions=SERVICE_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("instances", "stack"),
)
DNS_SERVICE = Schema(
    id="dnsService", base_type="service", scope=Scope.PROJECT, fields=dict(COMMON_FIELDS),
    states=SERVICE_LIFECYCLE.state_names, actions=SERVICE_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("stack",),
)
EXTERNAL_SERVICE = Schema(
    id="externalService", base_type="service", scope=Scope.PROJECT,
    fields={**COMMON_FIELDS,
            "externalIpAddresses": Field(type="array[string]", create=True, update=True,
                                         filterable=False),
            "hostname": Field(create=True, update=True, max_length=253),
            "healthCheck": Field(type="json", create=True, update=True, filterable=False)},
    states=SERVICE_LIFECYCLE.state_names, actions=SERVICE_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("stack",),
)

SERVICE_LINK = Schema(id="serviceLink", scope=Scope.PROJECT, embedded=True, fields={
    "serviceId": Field(type="reference[service]", create=True, required=True,
                       nullable=False),
    "name": Field(create=True, max_length=253),
})
SET_SERVICE_LINKS = Schema(id="setServiceLinksInput", scope=Scope.PROJECT, embedded=True,
                           fields={"serviceLinks": Field(type="array[serviceLink]",
                                                         create=True, nullable=False)})
ADD_REMOVE_SERVICE_LINK = Schema(
    id="addRemoveServiceLinkInput", scope=Scope.PROJECT, embedded=True,
    fields={"serviceLink": Field(type="serviceLink", create=True, required=True,
                                 nullable=False)})
IN_SERVICE_STRATEGY = Schema(id="inServiceUpgradeStrategy", scope=Scope.PROJECT,
                             embedded=True, fields={
    "batchSize": Field(type="int", create=True, nullable=False, default=1, min=1),
    "intervalMillis": Field(type="int", create=True, nullable=False, default=2000, min=0),
    "startFirst": Field(type="boolean", create=True, nullable=False, default=False),
    "launchConfig": Field(type="json", create=True),
    "secondaryLaunchConfigs": Field(type="array[json]", create=True),
    "previousLaunchConfig": Field(type="json"),
    "previousSecondaryLaunchConfigs": Field(type="array[json]"),
})
SERVICE_UPGRADE = Schema(id="serviceUpgrade", scope=Scope.PROJECT, embedded=True, fields={
    "inServiceStrategy": Field(type="inServiceUpgradeStrategy", create=True),
    "toServiceStrategy": Field(type="json", create=True),
})
ROLLING_RESTART = Schema(id="rollingRestartStrategy", scope=Scope.PROJECT, embedded=True,
                         fields={
    "batchSize": Field(type="int", create=True, nullable=False, default=1, min=1),
    "intervalMillis": Field(type="int", create=True, nullable=False, default=2000, min=0),
})
SERVICE_RESTART = Schema(id="serviceRestart", scope=Scope.PROJECT, embedded=True, fields={
    "rollingRestartStrategy": Field(type="rollingRestartStrategy", create=True),
})
EMBEDDED = [SERVICE_LINK, SET_SERVICE_LINKS, ADD_REMOVE_SERVICE_LINK, IN_SERVICE_STRATEGY,
            SERVICE_UPGRADE, ROLLING_RESTART, SERVICE_RESTART]

_RESERVED_LAUNCH_FIELDS = ("name", "count", "requestedHostId")


def check_launch_config(config: Any, field_name: str) -> dict[str, Any]:
    """A launch config checked as a container's fields would be, with 422s naming it."""
    if not isinstance(config, Mapping):
        raise invalid("InvalidType", field_name, f"{field_name} must be an object")
    body = {k: v for k, v in config.items() if k not in _RESERVED_LAUNCH_FIELDS}
    try:
        values = validate_create(CONTAINER, body)
        build_spec(values, uuid="00000000-0000-0000-0000-000000000000", name="check")
    except ApiError as exc:
        inner = exc.field_name
        exc.field_name = f"{field_name}.{inner}" if inner else field_name
        raise
    if "name" in config and field_name != "launchConfig":
        values["name"] = config["name"]
    return values


def check_sidekicks(configs: Any) -> list[dict[str, Any]]:
    if configs is None:
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, config in enumerate(configs):
        where = f"secondaryLaunchConfigs[{index}]"
        checked = check_launch_config(config, where)
        name = checked.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("MissingRequired", f"{where}.name", "a sidekick needs a name")
        if name in seen:
            raise invalid("NotUnique", f"{where}.name", f"two sidekicks named {name!r}")
        seen.add(name)
        out.append({**config, "name": name})
    return out


class ServiceType(ResourceType):
    lifecycle = SERVICE_LIFECYCLE

    def __init__(self, schema: Schema, members: tuple[str, ...] = ()) -> None:
        super().__init__(schema)
        # ``/services`` lists and finds every kind of service, as Rancher's does.
        self._members = members

    def listed_types(self) -> tuple[str, ...]:
        return self._members or (self.schema.id,)

    async def create(self, caller: Caller, values: dict[str, Any], *,
                     start: bool = True) -> Record:
        """A new service; ``startOnCreate`` activates it unless ``start`` is False (a stack
        starts its services once their links are set)."""
        project_id, _ = self.owner(caller)
        stack = await self._stack(caller, values["stackId"], project_id)
        name = values.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("MissingRequired", "name", "a service needs a name")
        await self._check_unique_name(caller, stack, name)
        values = {**values, "stackId": stack.id}
        if self.schema.id == "service":
            if values.get("launchConfig") is None:
                raise invalid("MissingRequired", "launchConfig", "launchConfig is required")
            check_launch_config(values["launchConfig"], "launchConfig")
            values["secondaryLaunchConfigs"] = check_sidekicks(
                values.get("secondaryLaunchConfigs"))
        if self.schema.id == "externalService":
            check_external(values)
        record = await self.store_new(caller, values, project_id=project_id, account_id=None)
        if start and values.get("startOnCreate"):
            row = self.lifecycle.step("activate")
            assert row is not None
            record = await self.take_step(caller, record, row)
        return record

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        if "launchConfig" in values and self.schema.id == "service":
            # A new launch config goes through upgrade, as in Rancher; PUT takes the rest.
            check_launch_config(values["launchConfig"], "launchConfig")
        if "secondaryLaunchConfigs" in values and self.schema.id == "service":
            values["secondaryLaunchConfigs"] = check_sidekicks(values["secondaryLaunchConfigs"])
        if self.schema.id == "externalService":
            check_external({**record.data, **values})
        # The controller writes the service all the time (currentScale, healthState).
        return await self.merge(caller, record, values)

    async def _stack(self, caller: Caller, ref: Any, project_id: int | None) -> Record:
        number = parse_id(str(ref), "1st") if not isinstance(ref, int) else ref
        stack = await caller.store.get(number) if number is not None else None
        if stack is None or stack.type != "stack" or stack.project_id != project_id or \
                stack.removed is not None:
            raise invalid("InvalidReference", "stackId", f"{ref} is not a stack of this "
                          "environment")
        return stack

    async def _check_unique_name(self, caller: Caller, stack: Record, name: str) -> None:
        same = await caller.store.list(Query(
            types=list(SERVICE_KINDS), project_id=stack.project_id, limit=1,
            conditions=[Condition("name", "eq", name), Condition("removed", "null"),
                        Condition("stackId", "eq", stack.id, "int")]))
        if same:
            raise invalid("NotUnique", "name",
                          f"stack {stack.name} already has a service named {name!r}")

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        from server.engine.service_links import change_links

        if name in ("setservicelinks", "addservicelink", "removeservicelink"):
            return await change_links(caller, record, name, values)
        if name == "upgrade":
            from server.engine.service_upgrade import prepare_upgrade

            row = self.lifecycle.step(name)
            assert row is not None
            return await self.take_step(caller, record, row,
                                        await prepare_upgrade(record, values))
        if name == "restart":
            row = self.lifecycle.step(name)
            assert row is not None
            strategy = values.get("rollingRestartStrategy") or {}
            return await self.take_step(caller, record, row, {"restartStrategy": {
                "batchSize": strategy.get("batchSize") or 1,
                "intervalMillis": strategy.get("intervalMillis", 2000)}})
        return await super().perform(caller, record, name, values)

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        stack_id = record.data.get("stackId")
        links = record.data.get("linkedServices") or {}
        return {
            "stackId": format_id("1st", stack_id) if isinstance(stack_id, int) else None,
            "linkedServices": {alias: format_id("1s", target) for alias, target in
                               links.items() if isinstance(target, int)},
            "kind": record.type,
        }

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        stack_id = record.data.get("stackId")
        out = {"instances": f"{self_url}/instances"} if record.type == "service" else {}
        if isinstance(stack_id, int):
            out["stack"] = f"{ctx.base_url}/stacks/{format_id('1st', stack_id)}"
        return out

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "instances":
            containers = await caller.store.list(Query(
                types=["container"], project_id=record.project_id, limit=1000,
                conditions=[Condition("serviceId", "eq", record.id, "int"),
                            Condition("removed", "null")]))
            return Linked("container", records=containers)
        if name == "stack":
            stack_id = record.data.get("stackId")
            stack = await caller.store.get(stack_id) if isinstance(stack_id, int) else None
            return Linked("stack", records=[stack] if stack else [], one=True)
        return await super().linked(caller, record, name)


def check_external(values: Mapping[str, Any]) -> None:
    """An external service answers with addresses or a hostname: exactly one of them."""
    addresses = values.get("externalIpAddresses") or []
    hostname = values.get("hostname")
    if bool(addresses) == bool(hostname):
        raise invalid("InvalidOption", "externalIpAddresses",
                      "an external service needs externalIpAddresses or a hostname, "
                      "not both")
    from ipaddress import IPv4Address

    for index, address in enumerate(addresses):
        try:
            IPv4Address(str(address))
        except ValueError:
            raise invalid("InvalidFormat", f"externalIpAddresses[{index}]",
                          f"{address!r} is not an IPv4 address") from None


def types() -> list[ResourceType]:
    return [ServiceType(SERVICE, SERVICE_KINDS), ServiceType(DNS_SERVICE),
            ServiceType(EXTERNAL_SERVICE)]
