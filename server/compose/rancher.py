"""rancher-compose.yml: what Rancher added to each service (scale, health checks, load
balancer rules, ...), read through the ``Entry`` tables of ``keys``.

A rancher-compose file has ``version: '2'`` and ``services:``, or (v1) its services at the top;
a ``.catalog`` section, which Rancher's catalog reads, is ignored. Each named service must be one
of docker-compose.yml's; a sidekick takes only ``health_check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.compose import values as v
from server.compose.errors import Report, child
from server.compose.keys import (
    EXTERNAL_IPS,
    HEALTH_CHECK,
    LB_CONFIG,
    RANCHER_UNSUPPORTED,
    SERVICE,
    TYPED,
    Entry,
)

CATALOG = ".catalog"
_SERVICE_KEYS = {e.key: e for e in SERVICE}


@dataclass(frozen=True)
class RancherService:
    """A service's rancher-compose part: its top-level fields and its health check."""

    fields: dict[str, Any]
    health_check: dict[str, Any] | None = None


def rancher_services(value: Any, report: Report) -> dict[str, tuple[Any, str]]:
    """Each service's rancher-compose mapping and its path, by service name."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        v.wrong(report, "", value, "a mapping")
        return {}
    if "version" in value or "services" in value:
        for key in value:
            if key not in ("version", "services", CATALOG):
                report.problem(key, f"unknown key {key}", at_key=True)
        services = value.get("services") or {}
        if not isinstance(services, dict):
            v.wrong(report, "services", services, "a mapping of services")
            return {}
        return {name: (item, child("services", name)) for name, item in services.items()}
    return {name: (item, name) for name, item in value.items() if name != CATALOG}


def read_rancher_service(value: Any, path: str, service_type: str, report: Report, *,
                         sidekick: bool = False) -> RancherService:
    """The fields a service's rancher-compose mapping gives, for a service of that type."""
    if value is None:
        return RancherService({})
    given = v.mapping(value, path, report) or {}
    fields: dict[str, Any] = {}
    health_check = None
    for key, item in given.items():
        at = child(path, key)
        if sidekick and key != "health_check":
            report.problem(at, f"{key} belongs to the primary service: a sidekick takes only "
                           "health_check", at_key=True)
        elif key == "health_check":
            if service_type == "dnsService":
                report.problem(at, "a DNS service has no health check", at_key=True)
            health_check = read_health_check(item, at, report)
        elif key in TYPED:
            if service_type != TYPED[key]:
                report.problem(at, f"{key} is only for a {TYPED[key]} (its image decides the "
                               "type)", at_key=True)
                continue
            entry = EXTERNAL_IPS if key == "external_ips" else \
                Entry("lb_config", entries=LB_CONFIG) if key == "lb_config" else \
                Entry("hostname", v.string)
            _set(fields, entry.name, read_entry(entry, item, at, report))
        elif key in _SERVICE_KEYS:
            _set(fields, _SERVICE_KEYS[key].name, read_entry(_SERVICE_KEYS[key], item, at,
                                                              report))
        elif key in RANCHER_UNSUPPORTED:
            report.problem(at, f"{key} is not supported: {RANCHER_UNSUPPORTED[key]}",
                           at_key=True)
        else:
            report.problem(at, f"unknown key {key}", at_key=True)
    return RancherService(fields, health_check)


def read_health_check(value: Any, path: str, report: Report) -> dict[str, Any] | None:
    """Rancher's ``health_check``; ``quorum`` is short for its recreate-on-quorum config."""
    given = v.mapping(value, path, report)
    if given is None:
        return None
    check = read_entries({k: i for k, i in given.items() if k != "quorum"}, path, report,
                         HEALTH_CHECK)
    if "quorum" in given and check is not None:
        quorum = v.integer(given["quorum"], child(path, "quorum"), report)
        if quorum is not None:
            check.setdefault("recreateOnQuorumStrategyConfig", {})["quorum"] = quorum
    return check


def read_entries(value: Any, path: str, report: Report, entries: tuple[Entry, ...],
                 ) -> dict[str, Any] | None:
    """A mapping read through ``entries``: camelCase fields; every other key a problem."""
    given = v.mapping(value, path, report)
    if given is None:
        return None
    by_key = {e.key: e for e in entries}
    result: dict[str, Any] = {}
    for key, item in given.items():
        at = child(path, key)
        if key in by_key:
            _set(result, by_key[key].name, read_entry(by_key[key], item, at, report))
        else:
            report.problem(at, f"unknown key {key}", at_key=True)
    return result


def read_entry(entry: Entry, value: Any, path: str, report: Report) -> Any:
    if entry.entries and entry.many:
        if not isinstance(value, list):
            v.wrong(report, path, value, "a list of mappings")
            return None
        rows = [read_entries(item, child(path, i), report, entry.entries)
                for i, item in enumerate(value)]
        return [row for row in rows if row is not None]
    if entry.entries:
        return read_entries(value, path, report, entry.entries)
    assert entry.read is not None
    return entry.read(value, path, report)


def _set(fields: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        fields[name] = value
