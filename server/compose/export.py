"""``export_stack``: a stack's services (as the API shows them) → docker-compose.yml and
rancher-compose.yml, both version 2, which ``parse_stack`` reads back to the same templates.

Sidekicks come out as services of their own named by the primary's ``io.rancher.sidekicks``
label; DNS and external services as their rancher/ images. ``launchConfig`` fields with no
compose key (``requestedHostId``, ``networkIds``, ...) and unset values (null, empty, false
for Docker's false-by-default switches) are left out. Every ``$`` is written ``$$`` so that
interpolation gives the text back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from server.compose.interpolate import escape
from server.compose.keys import (
    EXTERNAL_IPS,
    FALSE_DEFAULTS,
    HEALTH_CHECK,
    LAUNCH_KEYS,
    LB_CONFIG,
    SERVICE,
    Entry,
)
from server.compose.templates import DNS_IMAGE, EXTERNAL_IMAGE, SIDEKICKS_LABEL

VERSION = "2"
_RANCHER = (*SERVICE, EXTERNAL_IPS, Entry("hostname"), Entry("lb_config", entries=LB_CONFIG))


def export_stack(services: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The stack's ``(docker_compose_yml, rancher_compose_yml)``, services in the given order."""
    compose: dict[str, Any] = {}
    rancher: dict[str, Any] = {}
    for service in services:
        name, kind = str(service["name"]), str(service.get("type") or "service")
        launch = dict(service.get("launchConfig") or {})
        secondaries = [s for s in service.get("secondaryLaunchConfigs") or [] if s.get("name")]
        compose[name] = {**_compose_service(launch, kind, secondaries),
                         **_links(service.get("serviceLinks") or [])}
        for secondary in secondaries:
            compose[str(secondary["name"])] = _compose_service(secondary, "service", [])
        rancher_part = _write_entries(
            {k: v for k, v in service.items() if k != "hostname" or kind == "externalService"},
            _RANCHER)
        check = service.get("healthCheck") if kind == "externalService" else \
            launch.get("healthCheck")
        if check:
            rancher_part["health_check"] = _write_entries(check, HEALTH_CHECK)
        if rancher_part:
            rancher[name] = rancher_part
        for secondary in secondaries:
            if secondary.get("healthCheck"):
                rancher[str(secondary["name"])] = {
                    "health_check": _write_entries(secondary["healthCheck"], HEALTH_CHECK)}
    return _dump(compose), _dump(rancher)


def _compose_service(launch: Mapping[str, Any], kind: str,
                     secondaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if kind == "dnsService":
        return {"image": DNS_IMAGE}
    if kind == "externalService":
        return {"image": EXTERNAL_IMAGE}
    launch = dict(launch)
    if secondaries:
        names = [str(s["name"]) for s in secondaries]
        labels = dict(launch.get("labels") or {})
        given = [n.strip() for n in str(labels.get(SIDEKICKS_LABEL, "")).split(",")]
        if given != names:
            labels[SIDEKICKS_LABEL] = ", ".join(names)
        launch["labels"] = labels
    result: dict[str, Any] = {}
    for key in LAUNCH_KEYS:
        value = launch.get(key.field)
        if _is_set(key.field, value):
            result[key.key] = key.write(value)
    if launch.get("environment"):
        result["environment"] = {k: str(v) for k, v in launch["environment"].items()}
    log = launch.get("logConfig")
    if log and log.get("driver"):
        result["logging"] = {"driver": log["driver"], **(
            {"options": dict(log["config"])} if log.get("config") else {})}
    if launch.get("dataVolumesFromLaunchConfigs"):
        result["volumes_from"] = list(launch["dataVolumesFromLaunchConfigs"])
    return result


def _is_set(field: str, value: Any) -> bool:
    return not (value is None or value == [] or value == {}
                or (value is False and field in FALSE_DEFAULTS))


def _links(service_links: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``links`` and ``external_links`` (a target with ``/``), as ``target[:alias]``."""
    result: dict[str, list[str]] = {}
    for link in service_links:
        target = str(link["service"])
        alias = link.get("name") or target.rpartition("/")[2]
        key = "external_links" if "/" in target else "links"
        entry = target if alias == target.rpartition("/")[2] else f"{target}:{alias}"
        result.setdefault(key, []).append(entry)
    return result


def _write_entries(value: Mapping[str, Any], entries: tuple[Entry, ...]) -> dict[str, Any]:
    """The rancher-compose form of ``value``: each entry's field back under its key."""
    result: dict[str, Any] = {}
    for entry in entries:
        item = value.get(entry.name)
        if item is None:
            continue
        if entry.entries and entry.many:
            result[entry.key] = [_write_entries(row, entry.entries) for row in item]
        elif entry.entries:
            result[entry.key] = _write_entries(item, entry.entries)
        else:
            result[entry.key] = item
    return result


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def _dump(services: dict[str, Any]) -> str:
    document = {"version": VERSION, "services": _escaped(services)}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
