"""Certificates: a TLS certificate, its private key and chain, for load balancers to serve.

Every create and every change of ``cert``, ``key`` or ``certChain`` checks the three together
(``server.certificates``), so a stored certificate always matches its key and had not
expired when it was stored; a malformed part, an encrypted key or a mismatched pair is a 422
naming the field. A new certificate sent alone is checked against the stored key.

The key is kept encrypted with the server's key (purpose ``certificateKey``) and never
returned: ``key`` is null in every response and in the change stream, as a registry
credential's ``secretValue`` is. ``server.certificates.certificate_bundle`` hands it,
decrypted, to the load balancer code only.

As in Rancher, a name is unique in its environment (422 ``NotUnique``), held by the record's
lookup key so two creates at once cannot both take it; removing a certificate frees it.
Rancher's create and update processes had no work to do, so a certificate is ``active`` at
once and a PUT is written at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from server import certificates
from server.api.context import RequestContext
from server.api.errors import ApiError, invalid
from server.api.errors import Conflict as ApiConflict
from server.api.render import iso
from server.api.schema import Action, Field, Schema, Scope
from server.api.types import ResourceType, entered
from server.caller import Caller
from server.lifecycle import Lifecycle, step
from server.security import ServerKey
from server.store import Condition, Conflict, Query, Record, Store
from server.store.paging import list_all

_PAIR = ("cert", "key", "certChain")


class CertificateState(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


CERTIFICATE_LIFECYCLE = Lifecycle(
    states=CertificateState,
    initial="active",
    steps=(step("remove", {"active"}, "removed"),),
    verbs={"update": Action(frozenset({"active"}))},
)


def _derived(type_: str = "string", *, nullable: bool = False) -> Field:
    return Field(type=type_, nullable=nullable, filterable=False)


CERTIFICATE = Schema(
    id="certificate",
    scope=Scope.PROJECT,
    fields={
        # Load balancers and compose files name their certificates.
        "name": Field(create=True, update=True, required=True, nullable=False,
                      max_length=255, unique=True),
        "cert": Field(create=True, update=True, required=True, nullable=False,
                      max_length=certificates.MAX_PEM),
        "certChain": Field(create=True, update=True, max_length=certificates.MAX_PEM),
        "key": Field(type="password", create=True, update=True, required=True, nullable=False,
                     max_length=certificates.MAX_PEM, filterable=False),
        "CN": _derived(nullable=True),  # a certificate may name its host in SANs only
        "subjectAlternativeNames": _derived("array[string]"),
        "issuer": _derived(),
        "issuedAt": _derived("date"),
        "issuedAtTS": _derived("int"),
        "expiresAt": _derived("date"),
        "expiresAtTS": _derived("int"),
        "certFingerprint": _derived(),
        "keySize": _derived("int"),
        "algorithm": _derived(),
        "serialNumber": _derived(),
        "version": _derived(),
    },
    states=CERTIFICATE_LIFECYCLE.state_names,
    actions=CERTIFICATE_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
)


def name_key(project_id: int | None, name: str) -> str:
    """The lookup key that keeps a certificate's name unique in its environment."""
    return f"{project_id}:{name}"


def checked(server_key: ServerKey, cert: str, key: str, chain: str | None) -> dict[str, Any]:
    """The data to store for a certificate, its key encrypted, once the parts pass
    ``certificates.check`` (else a 422 naming the part at fault)."""
    try:
        facts = certificates.check(cert, key, chain, now=datetime.now(UTC))
        stored_key = certificates.normalised_key(certificates.parse_key(key))
    except certificates.CertificateError as exc:
        raise invalid("InvalidFormat", exc.field, str(exc)) from None
    encrypted = server_key.encrypt(certificates.KEY_PURPOSE, stored_key)
    return {"cert": cert, "certChain": chain or None, certificates.KEY_DATA: encrypted,
            **facts.fields()}


def _name_taken(name: str) -> ApiError:
    return invalid("NotUnique", "name", f"this environment has a certificate named {name!r}")


async def _named(store: Store, project_id: int | None, name: str) -> bool:
    return bool(await store.list(Query(
        types=["certificate"], project_id=project_id, limit=1,
        conditions=[Condition("name", "eq", name), Condition("removed", "null")])))


class CertificateType(ResourceType):
    lifecycle = CERTIFICATE_LIFECYCLE
    update_action_is_put = True

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        name = values["name"]
        if await _named(caller.store, project_id, name):
            raise _name_taken(name)
        data = checked(caller.services.server_key, values["cert"], values.pop("key"),
                       values.get("certChain"))
        try:
            return await self.store_new(caller, {**values, **data}, project_id=project_id,
                                        account_id=None, lookup_key=name_key(project_id, name))
        except ApiConflict:  # the lookup key: another create took the name meanwhile
            raise _name_taken(name) from None

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        columns: dict[str, Any] = {k: values[k] for k in ("name", "description") if k in values}
        renamed = "name" in values and values["name"] != record.name
        if renamed:
            if await _named(caller.store, record.project_id, values["name"]):
                raise _name_taken(values["name"])
            columns["lookup_key"] = name_key(record.project_id, values["name"])
        data: dict[str, Any] = {}
        if any(part in values for part in _PAIR):
            server_key = caller.services.server_key
            key = values["key"] if "key" in values else \
                server_key.decrypt(certificates.KEY_PURPOSE, record.data[certificates.KEY_DATA])
            merged = {**record.data, **values}
            data = checked(server_key, merged["cert"], key, merged.get("certChain"))
        try:
            return await self.write(caller, record, columns, data)
        except ApiConflict:
            if renamed and await _named(caller.store, record.project_id, values["name"]):
                raise _name_taken(values["name"]) from None
            raise

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name != "remove":
            return await super().perform(caller, record, name, values)
        await _not_in_use(caller, record)
        try:  # removed, and its name free for another
            return await caller.store.update(record.id, {**entered("removed"), "lookup_key": None},
                                             expected_states={"active"})
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        out: dict[str, Any] = {"key": None}
        for name in ("issuedAt", "expiresAt"):
            stamp = record.data.get(name)
            out[name], out[f"{name}TS"] = iso(stamp if isinstance(stamp, int) else None), stamp
        return out


async def _not_in_use(caller: Caller, record: Record) -> None:
    """A certificate a load balancer serves stays until the balancer lets it go."""
    for balancer in await list_all(caller.store, Query(
            types=["loadBalancerService"], project_id=record.project_id,
            conditions=[Condition("removed", "null")])):
        config = balancer.data.get("lbConfig") or {}
        if record.id in (config.get("certificateIds") or []) or \
                record.id == config.get("defaultCertificateId"):
            raise invalid("InvalidState", "id", f"certificate {record.name} is used by load "
                          f"balancer {balancer.name}: take it out of its lbConfig first")


def types() -> list[ResourceType]:
    return [CertificateType(CERTIFICATE)]
