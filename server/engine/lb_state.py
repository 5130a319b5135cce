"""What one load balancer instance's HAProxy should run (pure): its port rules with their
targets resolved to servers, its certificates and the rest of its ``lbConfig``.

A rule's targets are the containers of its service (``serviceId``, or every service whose
launch config's labels match its ``selector``) that run, have a managed address and are
healthy when checked; a container being drained (an upgrade's old unit) stays as a draining
server, so that HAProxy sends it no new connection but lets the open ones finish. Rules to
one service and port share a backend, unless they name their own (``backendName``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from server.engine.discovery_state import address_of
from server.store import Record
from shared.lb import Backend, BackendCheck, Balancer, Certificate, PortRule, Server, Stickiness

_LIVE = frozenset({"running"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Targets:
    """The services a balancer may send to (by id) and their containers (by service id)."""

    services: Mapping[int, Record]
    containers: Mapping[int, Sequence[Record]]


def selected(selector: str, services: Iterable[Record]) -> list[Record]:
    """Services whose launch config labels match ``key=value[,key2=value2]`` (a bare ``key``:
    the label is there)."""
    wanted: list[tuple[str, str | None]] = []
    for term in selector.split(","):
        key, has_value, value = term.strip().partition("=")
        if key:
            wanted.append((key.strip(), value.strip() if has_value else None))
    out = []
    for service in services:
        labels = (service.data.get("launchConfig") or {}).get("labels") or {}
        if wanted and all(key in labels and (value is None or str(labels[key]) == value)
                          for key, value in wanted):
            out.append(service)
    return sorted(out, key=lambda s: s.id)


def _servers(containers: Iterable[Record], port: int) -> tuple[Server, ...]:
    out = []
    for container in containers:
        address = address_of(container)
        if container.removed is not None or container.state not in _LIVE or address is None:
            continue
        checked = bool((container.data.get("healthCheck") or {}).get("port"))
        health = container.data.get("healthState")
        if checked and health != "healthy":
            continue
        out.append(Server(name=_NAME_CHARS.sub("_", container.name or container.uuid),
                          address=address, port=port,
                          draining=bool(container.data.get("draining"))))
    return tuple(sorted(out, key=lambda s: s.name))


def _check(service: Record, port: int) -> BackendCheck | None:
    spec = (service.data.get("launchConfig") or {}).get("healthCheck") or {}
    if not isinstance(spec, Mapping) or not spec.get("port"):
        return None

    def number(key: str, default: int) -> int:
        value = spec.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and \
            value > 0 else default

    return BackendCheck(port=int(spec["port"]), request_line=spec.get("requestLine") or None,
                        interval_ms=number("interval", 2000),
                        timeout_ms=number("responseTimeout", 2000),
                        rise=number("healthyThreshold", 2), fall=number("unhealthyThreshold", 3))


def balancer_of(uuid: str, name: str, config: Mapping[str, Any], targets: Targets,
                certificates: Mapping[int, tuple[str, str]]) -> Balancer:
    """The balancer of instance ``uuid`` of the load balancer ``name`` with ``config`` (its
    stored lbConfig); ``certificates`` maps a certificate id to (name, PEM bundle)."""
    balancer_name = name
    backends: dict[str, Backend] = {}
    rules: list[PortRule] = []
    for rule in config.get("portRules") or []:
        family = "http" if rule["protocol"] in ("http", "https") else "tcp"
        port = int(rule["targetPort"])
        if isinstance(rule.get("serviceId"), int):
            chosen = [s for s in [targets.services.get(rule["serviceId"])] if s is not None]
            label = chosen[0].name if chosen else f"service{rule['serviceId']}"
        else:
            chosen = selected(str(rule.get("selector") or ""), targets.services.values())
            label = "selector_" + hashlib.sha256(
                str(rule.get("selector")).encode()).hexdigest()[:8]
        backend = rule.get("backendName") or _NAME_CHARS.sub("_", f"{label}_{port}_{family}")
        servers = tuple(server for s in chosen
                        for server in _servers(targets.containers.get(s.id, ()), port))
        if backend in backends:
            merged = {s.name: s for s in (*backends[backend].servers, *servers)}
            servers = tuple(sorted(merged.values(), key=lambda s: s.name))
        backends[backend] = Backend(name=backend, protocol=family, servers=servers,
                                 check=_check(chosen[0], port) if len(chosen) == 1 else None)
        rules.append(PortRule(source_port=int(rule["sourcePort"]), protocol=rule["protocol"],
                              hostname=rule.get("hostname"), path=rule.get("path"),
                              priority=rule.get("priority"), backend=backend))
    wanted = list(config.get("certificateIds") or [])
    default = config.get("defaultCertificateId")
    if isinstance(default, int) and default not in wanted:
        wanted.insert(0, default)
    bundles = tuple(Certificate(name=certificates[c][0], pem=certificates[c][1])
                    for c in wanted if c in certificates)
    policy = config.get("stickinessPolicy")
    stickiness = Stickiness(
        name=policy.get("name"), cookie=policy["cookie"], mode=policy["mode"],
        domain=policy.get("domain"), indirect=bool(policy.get("indirect")),
        nocache=bool(policy.get("nocache")), postonly=bool(policy.get("postonly"))) \
        if isinstance(policy, Mapping) else None
    balancer = Balancer(
        uuid=uuid, name=balancer_name, config_version="",
        bind_address=None, rules=tuple(rules), backends=tuple(backends.values()),
        certificates=bundles,
        default_certificate=certificates[default][0] if isinstance(default, int) and
        default in certificates else None,
        stickiness=stickiness, custom_config=config.get("config") or "")
    return with_version(balancer)


def with_version(balancer: Balancer) -> Balancer:
    """The balancer named by a digest of what it runs: a new version is a change to apply."""
    text = json.dumps(replace(balancer, config_version="").dump(), sort_keys=True)
    return replace(balancer, config_version=hashlib.sha256(text.encode()).hexdigest()[:16])
