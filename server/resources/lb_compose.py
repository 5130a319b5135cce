"""rancher-compose's ``lb_config`` and the API's ``lbConfig``, both ways: a stack's files name
a rule's target service and the certificates by name, the API by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.api.errors import invalid
from server.caller import Caller
from server.store import Condition, Query


async def lb_config_from_compose(caller: Caller, config: Mapping[str, Any],
                                 project_id: int | None,
                                 ids: Mapping[str, int]) -> dict[str, Any]:
    """rancher-compose's ``lb_config`` as the API's: a rule's ``service`` (a name of the stack,
    or ``stack/service``) becomes its serviceId, ``certs`` and ``default_cert`` (certificate
    names) certificateIds and defaultCertificateId."""
    rules = []
    for index, rule in enumerate(config.get("portRules") or []):
        rule = dict(rule)
        target = rule.pop("service", None)
        if isinstance(target, str):
            stack_name, _, name = target.rpartition("/")
            found = ids.get(name) if not stack_name else await _named_service(
                caller, project_id, stack_name, name)
            if found is None:
                raise invalid("InvalidReference", "rancherCompose",
                              f"lb_config.port_rules[{index}].service: no service {target}")
            rule["serviceId"] = found
        rules.append(rule)
    names = list(config.get("certs") or [])
    default = config.get("defaultCert")
    certificates = {name: await _named_certificate(caller, project_id, name)
                    for name in [*names, *([default] if default else [])]}
    return {"portRules": rules, "certificateIds": [certificates[n] for n in names],
            "defaultCertificateId": certificates[default] if default else None,
            "stickinessPolicy": config.get("stickinessPolicy"),
            "config": config.get("config")}


def lb_config_to_compose(config: Mapping[str, Any], services: Mapping[int, str],
                         certificates: Mapping[int, str]) -> dict[str, Any]:
    """The way back, for exportconfig: ``services`` names each target as the file gives it."""
    rules = []
    for rule in config.get("portRules") or []:
        shaped = {k: v for k, v in rule.items() if v is not None and k != "serviceId"}
        if rule.get("targetPort") == rule.get("sourcePort"):
            shaped.pop("targetPort", None)
        if rule.get("protocol") == "http":
            shaped.pop("protocol", None)
        if isinstance(rule.get("serviceId"), int) and rule["serviceId"] in services:
            shaped["service"] = services[rule["serviceId"]]
        rules.append(shaped)
    out: dict[str, Any] = {"portRules": rules}
    certs = [certificates[c] for c in config.get("certificateIds") or [] if c in certificates]
    if certs:
        out["certs"] = certs
    if config.get("defaultCertificateId") in certificates:
        out["defaultCert"] = certificates[config["defaultCertificateId"]]
    for key in ("stickinessPolicy", "config"):
        if config.get(key):
            out[key] = config[key]
    return out


async def _named_service(caller: Caller, project_id: int | None, stack_name: str,
                         name: str) -> int | None:
    stacks = await caller.store.list(Query(
        types=["stack"], project_id=project_id, limit=1,
        conditions=[Condition("name", "eq", stack_name), Condition("removed", "null")]))
    if not stacks:
        return None
    found = await caller.store.list(Query(
        types=["service"], project_id=project_id, limit=1,
        conditions=[Condition("name", "eq", name), Condition("removed", "null"),
                    Condition("stackId", "eq", stacks[0].id, "int")]))
    return found[0].id if found else None


async def _named_certificate(caller: Caller, project_id: int | None, name: str) -> int:
    found = await caller.store.list(Query(
        types=["certificate"], project_id=project_id, limit=1,
        conditions=[Condition("name", "eq", name), Condition("removed", "null")]))
    if not found:
        raise invalid("InvalidReference", "rancherCompose",
                      f"lb_config.certs: no certificate named {name!r} in this environment")
    return found[0].id
