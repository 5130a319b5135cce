"""One docker-compose service read into a ``launchConfig`` and what surrounds it.

What a service says about other services (links, ``volumes_from``, sidekicks) is kept by
name here and checked against the whole stack by ``parse``. Empty lists and mappings, and
false for Docker's false-by-default switches, are left out: they mean what absence means, and
leaving them out makes export and parse agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.compose import values as v
from server.compose.errors import Report, child
from server.compose.keys import (
    BY_KEY,
    DEPLOY_UNSUPPORTED,
    DOCKER_PREFIX,
    FALSE_DEFAULTS,
    SPECIAL_KEYS,
    UNSUPPORTED,
)
from server.compose.templates import SIDEKICKS_LABEL, ServiceLink


@dataclass(frozen=True)
class ComposeService:
    """A docker-compose service as read, before the stack is put together."""

    name: str
    path: str
    launch: dict[str, Any]
    links: tuple[ServiceLink, ...] = ()
    link_paths: tuple[str, ...] = ()  # where each of ``links`` was written
    volumes_from: tuple[tuple[str, str], ...] = ()  # (service, path)
    sidekicks: tuple[str, ...] = ()
    replicas: int | None = None
    keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def image(self) -> str | None:
        uuid = self.launch.get("imageUuid")
        return uuid.removeprefix(DOCKER_PREFIX) if isinstance(uuid, str) else None


def read_service(name: str, value: Any, path: str, report: Report, *,
                 environment: Mapping[str, str], env_files: Mapping[str, str],
                 ) -> ComposeService | None:
    """The service ``name`` from its compose mapping; its problems go to ``report``."""
    if not isinstance(value, dict):
        v.wrong(report, path, value, "a mapping of service keys")
        return None
    launch: dict[str, Any] = {}
    for key, item in value.items():
        at = child(path, key)
        if key in BY_KEY:
            _put(launch, BY_KEY[key].field, BY_KEY[key].read(item, at, report))
        elif key in UNSUPPORTED:
            report.problem(at, f"{key} is not supported: {UNSUPPORTED[key]}", at_key=True)
        elif key not in SPECIAL_KEYS and not key.startswith("x-"):
            report.problem(at, f"unknown key {key}", at_key=True)
    if "image" not in value and "build" not in value:
        report.problem(path, f"the service {name} needs an image", at_key=True)
    _put(launch, "environment", _environment(value, path, report, environment, env_files))
    _put(launch, "logConfig", _logging(value, path, report))
    if "net" in value:
        if "network_mode" in value:
            report.problem(child(path, "net"), "give network_mode or net, not both",
                           at_key=True)
        _put(launch, "networkMode", v.string(value["net"], child(path, "net"), report))
    links, link_paths = _links(value, path, report)
    return ComposeService(
        name=name, path=path, launch=launch, links=links, link_paths=link_paths,
        volumes_from=_volumes_from(value.get("volumes_from"), child(path, "volumes_from"),
                                   report),
        sidekicks=_sidekicks(launch.get("labels", {})),
        replicas=_replicas(value.get("deploy"), child(path, "deploy"), report),
        keys=frozenset(value))


def _put(launch: dict[str, Any], name: str, value: Any) -> None:
    if value is None or value == [] or value == {} or (value is False and name in FALSE_DEFAULTS):
        return
    launch[name] = value


def _environment(value: dict[str, Any], path: str, report: Report,
                 environment: Mapping[str, str], env_files: Mapping[str, str],
                 ) -> dict[str, str] | None:
    """``env_file`` contents overlaid by ``environment``; a bare name takes the stack's."""
    merged: dict[str, str] = {}
    if "env_file" in value:
        at = child(path, "env_file")
        for name in v.string_list(value["env_file"], at, report) or []:
            if name not in env_files:
                report.problem(at, f"env_file {name}: its contents were not given")
                continue
            merged.update(_env_file(name, env_files[name], at, report, environment))
    if "environment" in value:
        at = child(path, "environment")
        given = value["environment"]
        explicit = v.string_map(given, at, report)
        bare = [e for e in given if isinstance(e, str) and "=" not in e] \
            if isinstance(given, list) else [k for k, e in given.items() if e is None] \
            if isinstance(given, dict) else []
        for key in bare:
            if explicit is not None:
                explicit[key.strip()] = environment.get(key.strip(), "")
        merged.update(explicit or {})
    return merged


def _env_file(name: str, text: str, path: str, report: Report,
              environment: Mapping[str, str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, val = line.partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            report.problem(path, f"env_file {name} line {number}: {line!r} is not KEY=VALUE")
            continue
        pairs[key] = val if equals else environment.get(key, "")
    return pairs


def _logging(value: dict[str, Any], path: str, report: Report) -> dict[str, Any] | None:
    """``logging: {driver, options}``, or v1's ``log_driver`` and ``log_opt``."""
    if "logging" in value:
        at = child(path, "logging")
        if "log_driver" in value or "log_opt" in value:
            report.problem(at, "give logging or log_driver/log_opt, not both", at_key=True)
        given = v.mapping(value["logging"], at, report)
        if given is None:
            return None
        v.unknown(report, at, given, ("driver", "options"))
        driver, options = given.get("driver"), given.get("options")
        driver_at, options_at = child(at, "driver"), child(at, "options")
    elif "log_driver" in value or "log_opt" in value:
        driver, options = value.get("log_driver"), value.get("log_opt")
        driver_at, options_at = child(path, "log_driver"), child(path, "log_opt")
    else:
        return None
    config = {} if options is None else v.string_map(options, options_at, report)
    if driver is None:
        report.problem(driver_at, "a log driver is needed, such as json-file or syslog")
        return None
    name = v.string(driver, driver_at, report)
    return None if name is None or config is None else {"driver": name, "config": config}


def _links(value: dict[str, Any], path: str, report: Report,
           ) -> tuple[tuple[ServiceLink, ...], tuple[str, ...]]:
    links: list[ServiceLink] = []
    paths: list[str] = []
    for key in ("links", "external_links"):
        if key not in value:
            continue
        at = child(path, key)
        for i, entry in enumerate(v.string_list(value[key], at, report) or []):
            target, _, alias = entry.partition(":")
            stack, slash, service = target.rpartition("/")
            if key == "external_links" and not (slash and stack and service):
                report.problem(child(at, i), f"{entry} must name stack/service[:alias]")
            elif key == "links" and slash:
                report.problem(child(at, i), f"{entry} names another stack; put it under "
                               "external_links")
            elif target:
                links.append(ServiceLink(target, alias or service))
                paths.append(at)
    return tuple(links), tuple(paths)


def _volumes_from(value: Any, path: str, report: Report) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    names: list[tuple[str, str]] = []
    for i, entry in enumerate(v.string_list(value, path, report) or []):
        at = child(path, i)
        kind, colon, rest = entry.partition(":")
        if colon and kind in ("service", "container"):
            if kind == "container":
                report.problem(at, f"{entry}: volumes_from takes services of this stack, "
                               "not containers")
                continue
            entry = rest
        name, _, mode = entry.partition(":")
        if mode not in ("", "rw"):
            report.problem(at, f"{entry}: Corral shares volumes read-write only; drop :{mode}")
        names.append((name, at))
    return tuple(names)


def _sidekicks(labels: dict[str, str]) -> tuple[str, ...]:
    text = labels.get(SIDEKICKS_LABEL, "")
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _replicas(value: Any, path: str, report: Report) -> int | None:
    """v3's ``deploy``: its ``replicas`` are the service's scale; nothing else is honoured."""
    if value is None:
        return None
    deploy = v.mapping(value, path, report) or {}
    for key, item in deploy.items():
        if key not in ("replicas", "mode") or (key == "mode" and item != "replicated"):
            report.problem(child(path, key), f"{key} is not supported: {DEPLOY_UNSUPPORTED}",
                           at_key=True)
    replicas = deploy.get("replicas")
    return None if replicas is None else v.integer(replicas, child(path, "replicas"), report)
