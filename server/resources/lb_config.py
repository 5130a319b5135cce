"""A load balancer's ``lbConfig``, checked in full before it is stored (each problem a 422
naming its field, ``lbConfig.portRules[2].serviceId``) and rendered with public ids.

Port rules: a source port, one protocol a port (udp refused: HAProxy balances TCP and HTTP
only), hostname (a leading ``*.`` or trailing ``.*`` wildcard) and path, a target service or
selector, a priority; a source port is the environment's alone. Certificates for https and
tls, cookie stickiness, and a custom HAProxy text, merged by the agents' own renderer and
checked with ``haproxy -c`` (``server.haproxy_check``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server.api.errors import invalid
from server.caller import Caller
from server.store import Condition, Query, Record
from server.store.paging import list_all
from shared.ids import format_id, parse_id

PROTOCOLS = ("http", "tcp", "https", "tls", "sni", "udp")
TERMINATING = frozenset({"https", "tls"})
MAX_RULES = 500
MAX_CUSTOM_CONFIG = 64 * 1024
_HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(\.\*)?")
_BACKEND_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _record_of(caller: Caller, ref: Any, prefix: str, types: tuple[str, ...],
                     project_id: int | None) -> Record | None:
    number = _number(ref) if isinstance(ref, int) else \
        (parse_id(ref, prefix) if isinstance(ref, str) else None)
    record = await caller.store.get(number) if number is not None else None
    if record is None or record.type not in types or record.project_id != project_id or \
            record.removed is not None:
        return None
    return record


async def check_lb_config(caller: Caller, config: Any, project_id: int | None,
                          service_id: int | None) -> dict[str, Any]:
    """``lbConfig`` as it is stored (references as numbers), or a 422 naming the field."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise invalid("InvalidType", "lbConfig", "lbConfig must be an object")
    rules = config.get("portRules") or []
    if not isinstance(rules, list):
        raise invalid("InvalidType", "lbConfig.portRules", "portRules must be a list")
    if len(rules) > MAX_RULES:
        raise invalid("MaxLimitExceeded", "lbConfig.portRules",
                      f"a load balancer takes at most {MAX_RULES} port rules")
    checked = [await _check_rule(caller, rule, f"lbConfig.portRules[{i}]", project_id,
                                 service_id) for i, rule in enumerate(rules)]
    protocols: dict[int, tuple[str, int]] = {}
    for index, rule in enumerate(checked):
        port, protocol = rule["sourcePort"], rule["protocol"]
        first = protocols.setdefault(port, (protocol, index))
        if first[0] != protocol:
            raise invalid("InvalidOption", f"lbConfig.portRules[{index}].protocol",
                          f"port {port} takes {first[0]} (portRules[{first[1]}]): one "
                          "protocol a port")
    await _check_ports_free(caller, checked, project_id, service_id)
    out: dict[str, Any] = {"portRules": checked}
    certificates = config.get("certificateIds") or []
    if not isinstance(certificates, list):
        raise invalid("InvalidType", "lbConfig.certificateIds", "certificateIds must be a list")
    out["certificateIds"] = [await _certificate(caller, ref, f"lbConfig.certificateIds[{i}]",
                                                project_id)
                             for i, ref in enumerate(certificates)]
    default = config.get("defaultCertificateId")
    out["defaultCertificateId"] = await _certificate(
        caller, default, "lbConfig.defaultCertificateId", project_id) if default else None
    terminating = next((i for i, r in enumerate(checked) if r["protocol"] in TERMINATING),
                       None)
    if terminating is not None and not out["certificateIds"] and \
            out["defaultCertificateId"] is None:
        raise invalid("MissingRequired", "lbConfig.defaultCertificateId",
                      f"portRules[{terminating}] is {checked[terminating]['protocol']}: it "
                      "needs a certificate (defaultCertificateId or certificateIds)")
    out["stickinessPolicy"] = _stickiness(config.get("stickinessPolicy"))
    custom = config.get("config")
    if custom is not None and not isinstance(custom, str):
        raise invalid("InvalidType", "lbConfig.config", "config must be HAProxy text")
    if custom is not None and len(custom) > MAX_CUSTOM_CONFIG:
        raise invalid("MaxLengthExceeded", "lbConfig.config",
                      f"config is longer than {MAX_CUSTOM_CONFIG} characters")
    out["config"] = custom or None
    if custom:
        await _check_custom(caller, out)
    return out


async def _check_custom(caller: Caller, config: dict[str, Any]) -> None:
    """The custom text merged into the balancer as its agents will render it, and what HAProxy
    says of the whole: a 422 with its message, before anything is stored."""
    from server.certificates import certificate_bundle
    from server.engine.lb_state import Targets, balancer_of
    from server.haproxy_check import haproxy_refusal

    certificates: dict[int, tuple[str, str]] = {}
    for certificate_id in {*config["certificateIds"],
                           *([config["defaultCertificateId"]]
                             if config["defaultCertificateId"] else [])}:
        record = await caller.store.get(certificate_id)
        if record is not None:
            certificates[certificate_id] = (f"1c{certificate_id}",
                                            certificate_bundle(record,
                                                               caller.services.server_key))
    balancer = balancer_of("check", "check", config, Targets({}, {}), certificates)
    try:
        refusal = await haproxy_refusal(balancer)
    except ValueError as exc:
        raise invalid("InvalidFormat", "lbConfig.config", str(exc)) from None
    if refusal is not None:
        raise invalid("InvalidFormat", "lbConfig.config", f"HAProxy refuses it: {refusal}")


async def _check_rule(caller: Caller, rule: Any, where: str, project_id: int | None,
                      service_id: int | None) -> dict[str, Any]:
    if not isinstance(rule, Mapping):
        raise invalid("InvalidType", where, f"{where} must be an object")

    def port(key: str, required: bool) -> int | None:
        value = rule.get(key)
        if value is None and not required:
            return None
        number = _number(value)
        if number is None or not 1 <= number <= 65535:
            raise invalid("InvalidFormat" if value is not None else "MissingRequired",
                          f"{where}.{key}", f"{where}.{key} must be a port, 1 to 65535")
        return number

    def text(key: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = rule.get(key)
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise invalid("InvalidFormat", f"{where}.{key}", f"{where}.{key} must be {what}")
        return value

    source = port("sourcePort", True)
    protocol = rule.get("protocol") or "http"
    if protocol not in PROTOCOLS:
        raise invalid("InvalidOption", f"{where}.protocol",
                      f"{where}.protocol must be one of {', '.join(PROTOCOLS)}")
    if protocol == "udp":
        raise invalid("InvalidOption", f"{where}.protocol",
                      "udp is not supported: HAProxy balances TCP and HTTP only")
    hostname = text("hostname", _HOSTNAME, "a hostname, with at most a leading *. or a "
                                           "trailing .*")
    path = text("path", _PATH, "a path starting with / and without spaces")
    if path is not None and protocol not in ("http", "https"):
        raise invalid("InvalidOption", f"{where}.path",
                      f"a path needs an http or https rule, not {protocol}")
    if hostname is not None and protocol == "tcp":
        raise invalid("InvalidOption", f"{where}.hostname",
                      "a plain tcp rule sees no hostname: use sni, tls or http")
    priority = rule.get("priority")
    if priority is not None and (_number(priority) is None or priority < 1):
        raise invalid("InvalidFormat", f"{where}.priority",
                      f"{where}.priority must be a whole number of at least 1")
    selector = rule.get("selector") or None
    if selector is not None and not isinstance(selector, str):
        raise invalid("InvalidType", f"{where}.selector", f"{where}.selector must be text")
    target = None
    if rule.get("serviceId") is not None:
        found = await _record_of(caller, rule["serviceId"], "1s", ("service",), project_id)
        if found is None:
            raise invalid("InvalidReference", f"{where}.serviceId",
                          f"{rule['serviceId']} is not a service of this environment with "
                          "containers")
        if found.id == service_id:
            raise invalid("InvalidReference", f"{where}.serviceId",
                          "a load balancer cannot balance to itself")
        target = found.id
    elif selector is None:
        raise invalid("MissingRequired", f"{where}.serviceId",
                      f"{where} needs a serviceId or a selector")
    return {"sourcePort": source, "targetPort": port("targetPort", False) or source,
            "protocol": protocol, "hostname": hostname, "path": path, "serviceId": target,
            "selector": selector,
            "backendName": text("backendName", _BACKEND_NAME, "letters, digits, _ . -"),
            "priority": priority}


async def _check_ports_free(caller: Caller, rules: list[dict[str, Any]],
                            project_id: int | None, service_id: int | None) -> None:
    """A source port is the environment's: a balancer answers on every host it runs on and
    may be placed on any, so two balancers of one environment never share a port."""
    taken: dict[int, str] = {}
    for other in await list_all(caller.store, Query(
            types=["loadBalancerService"], project_id=project_id,
            conditions=[Condition("removed", "null")])):
        if other.id == service_id or other.state in ("removing", "removed"):
            continue
        for rule in (other.data.get("lbConfig") or {}).get("portRules") or []:
            taken.setdefault(int(rule.get("sourcePort") or 0), other.name or "")
    for index, rule in enumerate(rules):
        if rule["sourcePort"] in taken:
            raise invalid("NotUnique", f"lbConfig.portRules[{index}].sourcePort",
                          f"port {rule['sourcePort']} is taken on the hosts by load balancer "
                          f"{taken[rule['sourcePort']]}")


async def _certificate(caller: Caller, ref: Any, where: str, project_id: int | None) -> int:
    found = await _record_of(caller, ref, "1c", ("certificate",), project_id)
    if found is None:
        raise invalid("InvalidReference", where, f"{ref} is not a certificate of this "
                                                 "environment")
    return found.id


def _stickiness(policy: Any) -> dict[str, Any] | None:
    if policy is None:
        return None
    if not isinstance(policy, Mapping):
        raise invalid("InvalidType", "lbConfig.stickinessPolicy",
                      "stickinessPolicy must be an object")
    mode = policy.get("mode") or "insert"
    if mode not in ("rewrite", "insert", "prefix"):
        raise invalid("InvalidOption", "lbConfig.stickinessPolicy.mode",
                      "mode must be rewrite, insert or prefix")
    cookie = policy.get("cookie") or policy.get("name") or "lb"
    if not isinstance(cookie, str) or not _BACKEND_NAME.fullmatch(cookie):
        raise invalid("InvalidFormat", "lbConfig.stickinessPolicy.cookie",
                      "cookie must be letters, digits, _ . -")
    domain = policy.get("domain") or None
    if domain is not None and (not isinstance(domain, str) or
                               not _HOSTNAME.fullmatch(domain.lstrip("."))):
        raise invalid("InvalidFormat", "lbConfig.stickinessPolicy.domain",
                      "domain must be a domain name")
    flags = {}
    for key in ("indirect", "nocache", "postonly"):
        value = policy.get(key)
        if value is not None and not isinstance(value, bool):
            raise invalid("InvalidType", f"lbConfig.stickinessPolicy.{key}",
                          f"{key} must be true or false")
        flags[key] = bool(value)
    return {"name": policy.get("name") or None, "cookie": cookie, "mode": mode,
            "domain": domain, **flags}


def rendered_lb_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored lbConfig with its references as public ids."""
    if config is None:
        return None
    rules = [{**rule, "serviceId": format_id("1s", rule["serviceId"])
              if isinstance(rule.get("serviceId"), int) else None}
             for rule in config.get("portRules") or []]
    default = config.get("defaultCertificateId")
    return {**config, "portRules": rules,
            "certificateIds": [format_id("1c", c) for c in config.get("certificateIds") or []],
            "defaultCertificateId": format_id("1c", default) if isinstance(default, int)
            else None}
