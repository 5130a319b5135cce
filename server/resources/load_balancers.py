"""Load balancers: ``loadBalancerService`` (a kind of service, Rancher's v2-beta fields) and
``loadBalancerInstance``, one HAProxy on one host.

A load balancer's ``lbConfig`` says what it answers: port rules (a source port, a protocol,
hostname and path, the target service and port, a priority), certificates for https and tls,
cookie stickiness, and a custom HAProxy config merged section by section. It is checked in
full (``server.resources.lb_config``), each problem a 422 naming its field. Its
instances are placed and kept by ``server.engine.lb_controller``, which pushes each host's
balancers to its agent; each instance shows the host it runs on, its state (``starting``,
``running``, ``error`` with HAProxy's message), its health and the config version it runs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from server.api.context import RequestContext
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType
from server.caller import Caller
from server.lifecycle import Lifecycle, step
from server.resources.lb_config import (
    MAX_CUSTOM_CONFIG,
    PROTOCOLS,
    check_lb_config,
    rendered_lb_config,
)
from server.resources.service_lifecycle import SERVICE_LIFECYCLE
from server.resources.services import COMMON_FIELDS, MAX_SCALE, ServiceType
from server.store import Condition, Query, Record
from server.store.paging import list_all
from shared.ids import format_id

PORT_RULE = Schema(id="portRule", scope=Scope.PROJECT, embedded=True, fields={
    "sourcePort": Field(type="int", create=True, required=True, min=1, max=65535),
    "targetPort": Field(type="int", create=True, min=1, max=65535),
    "protocol": Field(type="enum", create=True, nullable=False, options=PROTOCOLS,
                      default="http"),
    "hostname": Field(create=True, max_length=253),
    "path": Field(create=True, max_length=1024),
    "serviceId": Field(type="reference[service]", create=True),
    "selector": Field(create=True, max_length=1024),
    "backendName": Field(create=True, max_length=64),
    "priority": Field(type="int", create=True, min=1),
})
STICKINESS = Schema(id="loadBalancerCookieStickinessPolicy", scope=Scope.PROJECT,
                    embedded=True, fields={
    "name": Field(create=True, update=True),
    "cookie": Field(create=True, update=True, max_length=64),
    "domain": Field(create=True, update=True, max_length=253),
    "mode": Field(type="enum", create=True, update=True, options=("rewrite", "insert",
                                                                  "prefix"),
                  default="insert"),
    "indirect": Field(type="boolean", create=True, update=True),
    "nocache": Field(type="boolean", create=True, update=True),
    "postonly": Field(type="boolean", create=True, update=True),
})
LB_CONFIG = Schema(id="lbConfig", scope=Scope.PROJECT, embedded=True, fields={
    "portRules": Field(type="array[portRule]", create=True),
    "certificateIds": Field(type="array[reference[certificate]]", create=True),
    "defaultCertificateId": Field(type="reference[certificate]", create=True),
    "stickinessPolicy": Field(type="loadBalancerCookieStickinessPolicy", create=True),
    "config": Field(create=True, max_length=MAX_CUSTOM_CONFIG),
})
LOAD_BALANCER_SERVICE = Schema(
    id="loadBalancerService", base_type="service", scope=Scope.PROJECT,
    fields={
        **COMMON_FIELDS,
        "launchConfig": Field(type="json", create=True, update=True, filterable=False),
        "lbConfig": Field(type="lbConfig", create=True, update=True, filterable=False),
        "scale": Field(type="int", create=True, update=True, nullable=False, default=1, min=0,
                       max=MAX_SCALE),
        "currentScale": Field(type="int", filterable=False),
        "instanceIds": Field(type="array[reference[instance]]", filterable=False),
        "publicEndpoints": Field(type="json", filterable=False),
        "upgrade": Field(type="serviceUpgrade", filterable=False),
        "retainIp": Field(type="boolean", create=True, update=True, filterable=False),
        "vip": Field(filterable=False),
    },
    states=SERVICE_LIFECYCLE.state_names, actions=SERVICE_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("instances", "stack"),
)

class InstanceState(StrEnum):
    STARTING = "starting"    # placed; its host's HAProxy has not said it runs it yet
    RUNNING = "running"
    ERROR = "error"          # HAProxy refused its config or would not start: see the message
    STOPPED = "stopped"      # its host's agent is not connected
    REMOVED = "removed"


INSTANCE_LIFECYCLE = Lifecycle(
    states=InstanceState,
    initial="starting",
    steps=(step("remove", {"starting", "running", "error", "stopped"}, "removed"),),
)
LOAD_BALANCER_INSTANCE = Schema(
    id="loadBalancerInstance", base_type="instance", scope=Scope.PROJECT,
    fields={
        "hostId": Field(type="reference[host]"),
        "serviceId": Field(type="reference[service]"),
        "stackId": Field(type="reference[stack]"),
        "healthState": Field(type="enum", options=("healthy", "unhealthy", "initializing")),
        "primaryIpAddress": Field(filterable=False),
        "ports": Field(type="array[string]", filterable=False),
        # The config the server asks for, and the one the host's HAProxy runs.
        "requestedConfigVersion": Field(filterable=False),
        "configVersion": Field(filterable=False),
        "pid": Field(type="int", filterable=False),
        "createIndex": Field(type="int", filterable=False),
    },
    states=INSTANCE_LIFECYCLE.state_names, actions=INSTANCE_LIFECYCLE.actions(),
    collection_methods=("GET",), resource_methods=("GET", "DELETE"),
    links=("host", "service"),
)
EMBEDDED = [PORT_RULE, STICKINESS, LB_CONFIG]


class LoadBalancerType(ServiceType):
    """A service whose instances are HAProxy processes on the hosts, not containers."""

    async def create(self, caller: Caller, values: dict[str, Any], *,
                     start: bool = True) -> Record:
        project_id, _ = self.owner(caller)
        values = {**values, "lbConfig": await check_lb_config(
            caller, values.get("lbConfig"), project_id, None)}
        return await super().create(caller, values, start=start)

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        if "lbConfig" in values:
            values = {**values, "lbConfig": await check_lb_config(
                caller, values["lbConfig"], record.project_id, record.id)}
        return await super().update(caller, record, values)

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        return {**super().computed(ctx, record),
                "lbConfig": rendered_lb_config(record.data.get("lbConfig"))}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "instances":
            return Linked("loadBalancerInstance", records=await instances_of(caller, record))
        return await super().linked(caller, record, name)

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        return {**super().links(ctx, record, self_url), "instances": f"{self_url}/instances"}


async def instances_of(caller: Caller, service: Record) -> list[Record]:
    return await list_all(caller.store, Query(
        types=["loadBalancerInstance"], project_id=service.project_id,
        conditions=[Condition("serviceId", "eq", service.id, "int"),
                    Condition("removed", "null")]))


class LoadBalancerInstanceType(ResourceType):
    lifecycle = INSTANCE_LIFECYCLE

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        def ref(key: str, prefix: str) -> str | None:
            value = record.data.get(key)
            return format_id(prefix, value) if isinstance(value, int) else None

        return {"hostId": ref("hostId", "1h"), "serviceId": ref("serviceId", "1s"),
                "stackId": ref("stackId", "1st")}

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        out = {}
        if isinstance(record.data.get("hostId"), int):
            out["host"] = f"{ctx.base_url}/hosts/{format_id('1h', record.data['hostId'])}"
        if isinstance(record.data.get("serviceId"), int):
            out["service"] = \
                f"{ctx.base_url}/loadbalancerservices/{format_id('1s', record.data['serviceId'])}"
        return out

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        key, type_id = {"host": ("hostId", "host"),
                        "service": ("serviceId", "loadBalancerService")}.get(name, ("", ""))
        if key:
            target = record.data.get(key)
            found = await caller.store.get(target) if isinstance(target, int) else None
            return Linked(type_id, records=[found] if found else [], one=True)
        return await super().linked(caller, record, name)


def types() -> list[ResourceType]:
    return [LoadBalancerType(LOAD_BALANCER_SERVICE),
            LoadBalancerInstanceType(LOAD_BALANCER_INSTANCE)]
