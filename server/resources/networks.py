"""Networks, their subnets and network drivers, as Rancher 1.6 shows them.

Every environment has the networks a container can be launched on (``network_defaults``):
``managed``, Corral's VXLAN overlay, and Docker's own ``bridge``, ``host`` and ``none``.
A network's ``subnets`` are also records of their own (Rancher's ``subnet`` type), made and
removed with their network in one transaction. A network's name is unique in its
environment, held by its lookup key so that two creates at once cannot both take it; the
address ranges of an environment's networks never overlap.

The driver of the managed network keeps its VXLAN options in Rancher's ``networkMetadata``
map; changing the address pool there changes the managed network's subnet with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType, entered
from server.caller import Caller
from server.engine import ipam
from server.lifecycle import Lifecycle, step
from server.resources import network_rules as rules
from server.resources.registered import (
    REGISTERED_ACTIONS,
    REGISTERED_STATES,
    UPDATE_VERB,
    RegisteredType,
)
from server.store import Condition, Conflict, NewRecord, Query, Record, Store, Transaction
from server.store.interface import Reader
from shared.ids import format_id, parse_id


class DriverState(StrEnum):
    """A driver's states: Rancher's have no purge."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    REMOVED = "removed"


DRIVER_LIFECYCLE = Lifecycle(
    states=DriverState,
    initial="active",
    steps=(step("activate", {"inactive"}, "active"),
           step("deactivate", {"active"}, "inactive"),
           step("remove", {"inactive", "active"}, "removed")),
    verbs=UPDATE_VERB,
)
class SubnetState(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


# A subnet follows its network: made and removed with it, no actions of its own.
SUBNET_LIFECYCLE = Lifecycle(states=SubnetState, initial="active", steps=())

_POLICY_FIELDS: Mapping[str, Field] = {
    # Data fields in Rancher, which filters only by columns.
    "defaultPolicyAction": Field(type="enum", create=True, update=True, nullable=False,
                                 options=rules.POLICY_ACTIONS, default="allow",
                                 filterable=False),
    "policy": Field(type="array[networkPolicyRule]", create=True, update=True,
                    filterable=False),
}
# What a network is made with, as Rancher's ``defaultNetwork`` (a driver's template) has it.
_NETWORK_BODY: Mapping[str, Field] = {
    "subnets": Field(type="array[subnet]", create=True, nullable=False, filterable=False),
    "dns": Field(type="array[string]", create=True, nullable=False, filterable=False),
    "dnsSearch": Field(type="array[string]", create=True, nullable=False, filterable=False),
    "hostPorts": Field(type="boolean", create=True, nullable=False, filterable=False),
    "metadata": Field(type="map[json]", create=True, update=True, nullable=False,
                      filterable=False),
    **_POLICY_FIELDS,
}

NETWORK = Schema(
    id="network",
    scope=Scope.PROJECT,
    fields={
        "networkDriverId": Field(type="reference[networkDriver]", create=True, required=True,
                                 nullable=False),
        **_NETWORK_BODY,
    },
    states=REGISTERED_STATES, actions=REGISTERED_ACTIONS,
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("networkDriver", "subnets", "ipAddresses"),
)

NETWORK_DRIVER = Schema(
    id="networkDriver",
    scope=Scope.PROJECT,
    fields={
        # The driver's identity (the managed network's is ``vxlan``), read-only as in Rancher.
        "name": Field(max_length=255),
        "description": Field(max_length=1024),
        "defaultNetwork": Field(type="defaultNetwork", nullable=False, filterable=False),
        "cniConfig": Field(type="map[json]", nullable=False, filterable=False),
        # The VXLAN options (network_rules.VXLAN_DEFAULTS); a PUT changes them.
        "networkMetadata": Field(type="map[json]", update=True, nullable=False,
                                 filterable=False),
    },
    states=DRIVER_LIFECYCLE.state_names, actions=DRIVER_LIFECYCLE.actions(),
    collection_methods=("GET",), resource_methods=("GET", "PUT"),
    links=("networks",),
)

SUBNET = Schema(
    id="subnet",
    scope=Scope.PROJECT,
    fields={
        # Create flags as Rancher's: they describe the objects a network's ``subnets`` takes.
        "networkAddress": Field(create=True, required=True, max_length=255),
        "cidrSize": Field(type="int", create=True, required=True, min=rules.CIDR_MIN,
                          max=rules.CIDR_MAX, default=rules.CIDR_DEFAULT),
        "gateway": Field(create=True, max_length=255),
        "startAddress": Field(create=True, max_length=255),
        "endAddress": Field(create=True, max_length=255),
        "networkId": Field(type="reference[network]", required=True),
    },
    states=SUBNET_LIFECYCLE.state_names,
    collection_methods=("GET",), resource_methods=("GET",),
    links=("network", "ipAddresses"),
)

DEFAULT_NETWORK = Schema(
    id="defaultNetwork", scope=Scope.PROJECT, embedded=True,
    fields={"name": Field(create=True, update=True, max_length=255),
            "description": Field(create=True, update=True, max_length=1024),
            "kind": Field(create=True, max_length=255), **_NETWORK_BODY},
)
NETWORK_POLICY_RULE = Schema(
    id="networkPolicyRule", scope=Scope.PROJECT, embedded=True,
    fields={"action": Field(type="enum", create=True, nullable=False,
                            options=rules.POLICY_ACTIONS),
            "within": Field(type="enum", create=True, nullable=False,
                            options=rules.POLICY_WITHIN),
            "between": Field(type="networkPolicyRuleBetween", create=True),
            "from": Field(type="networkPolicyRuleMember", create=True),
            "to": Field(type="networkPolicyRuleMember", create=True),
            "ports": Field(type="array[string]", create=True)},
)
NETWORK_POLICY_RULE_BETWEEN = Schema(
    id="networkPolicyRuleBetween", scope=Scope.PROJECT, embedded=True,
    fields={"groupBy": Field(create=True), "selector": Field(create=True)},
)
NETWORK_POLICY_RULE_MEMBER = Schema(
    id="networkPolicyRuleMember", scope=Scope.PROJECT, embedded=True,
    fields={"selector": Field(create=True)},
)
# Rancher registers the enum of ``within`` as a type of its own, without fields.
NETWORK_POLICY_RULE_WITHIN = Schema(id="networkPolicyRuleWithin", scope=Scope.PROJECT,
                                    embedded=True)
EMBEDDED = (DEFAULT_NETWORK, NETWORK_POLICY_RULE, NETWORK_POLICY_RULE_BETWEEN,
            NETWORK_POLICY_RULE_MEMBER, NETWORK_POLICY_RULE_WITHIN)

# Where a driver records the network it made from its ``defaultNetwork`` (the managed one):
# other networks may use the driver too, but only that one holds the driver's address pool.
MANAGED_KEY = "defaultNetworkId"
# Marks the networks every environment has (``network_defaults``).
DEFAULT_KEY = "environmentDefault"
# Networks and subnets of one environment a look-up reads at most.
ENVIRONMENT_LIMIT = 1000


def name_key(project_id: int | None, name: str | None) -> str | None:
    """The lookup key that keeps a network's name unique in its environment."""
    return f"{project_id}:{name}" if name else None


def live(types: list[str], project_id: int | None, *conditions: Condition) -> Query:
    return Query(types=types, project_id=project_id, limit=ENVIRONMENT_LIMIT,
                 conditions=[*conditions, Condition("removed", "null")])


def subnets_of(network: Record) -> Query:
    return live(["subnet"], network.project_id,
                Condition("networkId", "eq", network.id, "int"))


async def taken_ranges(reader: Reader, project_id: int | None,
                       skip: frozenset[int] = frozenset()) -> list[rules.Range]:
    """The address ranges of the environment's live networks, but those in ``skip``."""
    networks = {n.id: n for n in await reader.list(live(["network"], project_id))}
    out = []
    for subnet in await reader.list(live(["subnet"], project_id)):
        number = subnet.data.get("networkId")
        owner = networks.get(number) if isinstance(number, int) else None
        if owner is not None and owner.id not in skip:
            out.append(rules.Range(rules.subnet_network(subnet.data),
                                   f"network {owner.name or format_id('1n', owner.id)}"))
    return out


async def lock_ranges(tx: Transaction, project_id: int | None) -> None:
    """Serialise the changes of an environment's address ranges (on its record), so that two
    at once cannot both pass the overlap check."""
    if project_id is not None:
        await tx.lock(project_id)


def subnet_record(network: Record, index: int, subnet: Mapping[str, Any]) -> NewRecord:
    """The subnet record of ``network``'s ``index``-th subnet (Rancher's ``subnetIndex``)."""
    data = {key: value for key, value in subnet.items() if key not in ("name", "description")}
    return NewRecord(type="subnet", kind="subnet", state="active", name=subnet.get("name"),
                     description=subnet.get("description"), project_id=network.project_id,
                     data={**data, "networkId": network.id, "subnetIndex": index})


async def create_network(tx: Transaction, new: NewRecord) -> Record:
    """Insert a network and its subnets' records."""
    network = await tx.create(new)
    for index, subnet in enumerate(network.data.get("subnets") or []):
        await tx.create(subnet_record(network, index, subnet))
    return network


def _name_taken(name: str | None) -> Exception:
    return invalid("NotUnique", "name", f"this environment has a network named {name!r}")


class NetworkType(RegisteredType):
    def available_actions(self, record: Record) -> list[str]:
        """An environment's default networks stay while it exists: containers name them by
        their network mode."""
        actions = super().available_actions(record)
        return [a for a in actions if a != "remove"] if record.data.get(DEFAULT_KEY) \
            else actions

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        name = values.get("name")
        await self._check_name(caller.store, project_id, name)
        driver = await self._driver(caller, project_id, values["networkDriverId"])
        subnets = [rules.parse_subnet(s) for s in values.get("subnets") or []]
        data = {"dns": [], "dnsSearch": [], "hostPorts": False, "metadata": {},
                **{k: v for k, v in values.items() if k not in ("name", "description")},
                "networkDriverId": driver.id, "subnets": subnets,
                "policy": rules.parse_policy(values.get("policy"))}
        new = NewRecord(type="network", kind="network", state="registering",
                        transitioning="yes", transitioning_message="In Progress", name=name,
                        description=values.get("description"), project_id=project_id,
                        lookup_key=name_key(project_id, name), data=data)
        runner = caller.services.runner

        async def insert(tx: Transaction) -> tuple[Record, bool]:
            await lock_ranges(tx, project_id)
            rules.check_no_overlap([rules.subnet_network(s) for s in subnets],
                                   await taken_ranges(tx, project_id), "subnets")
            network = await create_network(tx, new)
            return network, await runner.claim_in(tx, network.id, "create")

        try:
            record, claimed = await caller.store.transact(insert)
        except Conflict as exc:  # the lookup key: another create took the name meanwhile
            raise _name_taken(name) from exc
        runner.submit(record.id, claimed=claimed)
        return record

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        columns: dict[str, Any] = {}
        if "name" in values and values["name"] != record.name:
            await self._check_name(caller.store, record.project_id, values["name"])
            columns["lookup_key"] = name_key(record.project_id, values["name"])
        if "policy" in values:
            values["policy"] = rules.parse_policy(values["policy"])
        columns.update({k: v for k, v in values.items() if k in ("name", "description")})
        data = {k: v for k, v in values.items() if k not in ("name", "description")}
        try:
            return await self.write(caller, record, columns, data)
        except ApiConflict:
            if "lookup_key" in columns and await self._named(caller.store, record.project_id,
                                                             values["name"]):
                raise _name_taken(values["name"]) from None
            raise

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name == "remove":
            return await self._remove_with_subnets(caller, record)
        return await super().perform(caller, record, name, values)

    async def _remove_with_subnets(self, caller: Caller, record: Record) -> Record:
        """Remove the network and its subnets together, and free its name."""

        async def cascade(tx: Transaction) -> Record:
            current = await tx.lock(record.id)
            if current is None or current.version != record.version:
                raise Conflict(f"network {record.id} was changed by someone else")
            removed = await tx.update(record.id, {**entered("removed"), "lookup_key": None})
            for subnet in await tx.list(subnets_of(record)):
                await tx.update(subnet.id, entered("removed"))
            return removed

        try:
            return await caller.store.transact(cascade)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    async def _check_name(self, store: Store, project_id: int | None,
                          name: str | None) -> None:
        if name and await self._named(store, project_id, name):
            raise _name_taken(name)

    @staticmethod
    async def _named(store: Store, project_id: int | None, name: str) -> bool:
        return bool(await store.list(dataclasses.replace(
            live(["network"], project_id, Condition("name", "eq", name)), limit=1)))

    @staticmethod
    async def _driver(caller: Caller, project_id: int | None, given: str) -> Record:
        number = parse_id(given, NETWORK_DRIVER.id_prefix)
        driver = await caller.store.get(number) if number is not None else None
        if driver is None or driver.type != "networkDriver" or \
                driver.project_id != project_id or driver.removed is not None:
            raise invalid("InvalidReference", "networkDriverId",
                          f"{given} is not a network driver of this environment")
        return driver

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        driver = record.data.get("networkDriverId")
        return {"networkDriverId": format_id(NETWORK_DRIVER.id_prefix, driver)
                if isinstance(driver, int) else None}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        match name:
            case "networkDriver":
                number = record.data.get("networkDriverId")
                driver = await caller.store.get(number) if isinstance(number, int) else None
                return Linked("networkDriver", one=True, records=[driver] if driver else [])
            case "subnets":
                return Linked("subnet", records=await caller.store.list(subnets_of(record)))
            case "ipAddresses":  # containers get addresses on networks in the next step
                return Linked("ipAddress")
        return await super().linked(caller, record, name)


class NetworkDriverType(ResourceType):
    lifecycle = DRIVER_LIFECYCLE
    update_action_is_put = True

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        if "networkMetadata" not in values:
            return await super().update(caller, record, values)
        options = rules.parse_vxlan_options(record.data.get("networkMetadata") or {},
                                            values.pop("networkMetadata"))
        subnet = rules.pool_subnet(options)
        template = {**(record.data.get("defaultNetwork") or {}), "subnets": [subnet]}

        async def change(tx: Transaction) -> Record:
            await lock_ranges(tx, record.project_id)
            managed = record.data.get(MANAGED_KEY)
            found = await tx.get(managed) if isinstance(managed, int) else None
            own = [found] if found is not None and found.removed is None else []
            rules.check_no_overlap([rules.subnet_network(subnet)], await taken_ranges(
                tx, record.project_id, frozenset(n.id for n in own)), "networkMetadata")
            updated = await tx.update(
                record.id, {}, {"networkMetadata": options, "defaultNetwork": template},
                expected_version=record.version)
            for network in own:  # its subnet is the whole pool
                await tx.update(network.id, {}, {"subnets": [subnet]})
                for old in await tx.list(subnets_of(network)):
                    await tx.update(old.id, entered("removed"))
                await tx.create(subnet_record(network, 0, subnet))
                if _pool_of(record.data.get("networkMetadata") or {}) != _pool_of(options):
                    await _lease_again(tx, network, options)
            return updated

        try:
            return await caller.store.transact(change)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "networks":
            return Linked("network", records=await caller.store.list(live(
                ["network"], record.project_id,
                Condition("networkDriverId", "eq", record.id, "int"))))
        return await super().linked(caller, record, name)


def _pool_of(options: Mapping[str, Any]) -> tuple[Any, Any]:
    merged = {**rules.VXLAN_DEFAULTS, **options}
    return merged["subnetPool"], merged["hostSubnetPrefix"]


async def _lease_again(tx: Transaction, network: Record, options: Mapping[str, Any]) -> None:
    """A new pool: every host of the environment gets a subnet of it, in the transaction that
    changes it. Refused (422) while containers hold addresses of the old one, or when the
    new one has fewer subnets than the environment has hosts."""
    field = "networkMetadata"
    held = await ipam.address_leases(tx, network.id)
    if held:
        raise invalid("InvalidOption", field, f"{len(held)} container(s) hold addresses of the "
                      "managed network's current pool; remove them before changing subnetPool "
                      "or hostSubnetPrefix")
    pool = ipam.Pool.parse(network.id, str(options["subnetPool"]),
                           int(options["hostSubnetPrefix"]))
    hosts = await tx.list(live(["host"], network.project_id))
    room = pool.capacity
    if len(hosts) > room:
        raise invalid("InvalidOption", field, f"subnetPool: {pool.cidr} holds {room} "
                      f"/{pool.prefix} subnet(s), one per host, and this environment has "
                      f"{len(hosts)} hosts")
    for host in hosts:
        await ipam.release_host(tx, host.id)
    for host in sorted(hosts, key=lambda h: h.id):
        await ipam.lease_subnet(tx, pool, host.id, host.project_id)


class SubnetType(ResourceType):
    lifecycle = SUBNET_LIFECYCLE

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        network = record.data.get("networkId")
        return {"networkId": format_id(NETWORK.id_prefix, network)
                if isinstance(network, int) else None}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "network":
            number = record.data.get("networkId")
            network = await caller.store.get(number) if isinstance(number, int) else None
            return Linked("network", one=True, records=[network] if network else [])
        if name == "ipAddresses":
            return Linked("ipAddress")
        return await super().linked(caller, record, name)


def types() -> list[ResourceType]:
    return [NetworkType(NETWORK), NetworkDriverType(NETWORK_DRIVER), SubnetType(SUBNET)]
