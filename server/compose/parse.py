"""``parse_stack``: a stack's docker-compose.yml and rancher-compose.yml → service templates.

Both files are read in full before anything is refused, so the ``ComposeError`` lists every
problem of both. The docker-compose layouts read are v1 (services at the top), v2/v2.x and
v3/v3.x (``version`` and ``services``), and a file without ``version`` whose ``services`` is a
mapping (the Compose Specification), which reads as "3". Top-level ``volumes``, ``networks`` and
``x-`` keys are accepted and ignored: a service's containers use the environment's managed
network and its named volumes are created on use. Every service key is accepted in every
version.

Sidekicks (``io.rancher.sidekicks``) fold into their primary's ``secondaryLaunchConfigs``;
their links join the primary's. ``volumes_from`` names the primary or a sidekick of the same
service, since Corral shares volumes only within a service's containers on one host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.compose.document import Document, load
from server.compose.errors import (
    DOCKER_COMPOSE,
    RANCHER_COMPOSE,
    ComposeError,
    ComposeProblem,
    Report,
    child,
)
from server.compose.interpolate import interpolate_tree
from server.compose.rancher import RancherService, rancher_services, read_rancher_service
from server.compose.service import ComposeService, read_service
from server.compose.templates import ServiceLink, ServiceTemplate, StackTemplate, service_type

VERSIONS = ("2", "3")  # the majors a file may name; v1 names none
_IGNORED_TOP = ("version", "services", "volumes", "networks")
_MINIMAL = {"dnsService": frozenset({"image", "links", "external_links"}),
            "externalService": frozenset({"image"})}


def parse_stack(docker_compose: str, rancher_compose: str | None = None, *,
                environment: Mapping[str, str] | None = None,
                env_files: Mapping[str, str] | None = None) -> StackTemplate:
    """The stack's services; ComposeError lists every problem of both files.

    ``environment`` holds the variables for interpolation and for bare ``environment``
    names; ``env_files`` the contents of each ``env_file`` by the name the file gives it.
    """
    env = dict(environment or {})
    docs: dict[str, Document | None] = {}
    problems: list[ComposeProblem] = []
    for file, text in ((DOCKER_COMPOSE, docker_compose), (RANCHER_COMPOSE, rancher_compose)):
        try:
            docs[file] = None if text is None else load(text, file)
        except ComposeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ComposeError(problems)
    dc, rc = docs[DOCKER_COMPOSE], docs[RANCHER_COMPOSE]
    assert dc is not None
    dc_report, rc_report = dc.report(DOCKER_COMPOSE), \
        rc.report(RANCHER_COMPOSE) if rc else Report(RANCHER_COMPOSE)
    dc_value = interpolate_tree(dc.value, env, dc_report)
    rc_value = interpolate_tree(rc.value, env, rc_report) if rc else None
    version, raw = _layout(dc_value, dc_report)
    services: dict[str, ComposeService] = {}
    for name, (value, path) in raw.items():
        service = read_service(name, value, path, dc_report, environment=env,
                               env_files=env_files or {})
        if service is not None:
            services[name] = service
    templates = _Stack(services, dc_report, rc_report).templates(
        rancher_services(rc_value, rc_report))
    problems = dc_report.problems + rc_report.problems
    if problems:
        raise ComposeError(problems)
    return StackTemplate(templates, version)


def _layout(value: Any, report: Report) -> tuple[str, dict[str, tuple[Any, str]]]:
    """The compose version and each service's value and path."""
    if not isinstance(value, dict) or not value:
        report.problem("", "the file has no services" if not value else
                       "the file must be a mapping of services")
        return "", {}
    if "version" not in value and not isinstance(value.get("services"), dict):
        return "1", {name: (item, name) for name, item in value.items()}
    version = value.get("version", "3")
    text = str(version) if isinstance(version, str | int | float) and \
        not isinstance(version, bool) else ""
    if text.split(".")[0] not in VERSIONS:
        report.problem("version", f"version {version} is not one Corral reads: give 2, 2.x, 3, "
                       "3.x, or leave version out for version 1")
    for key in value:
        if key in ("secrets", "configs"):
            report.problem(key, f"{key} is not supported: Docker swarm {key} are not supported",
                           at_key=True)
        elif key not in _IGNORED_TOP and not key.startswith("x-"):
            report.problem(key, f"unknown key {key}", at_key=True)
    services = value.get("services")
    if not isinstance(services, dict) or not services:
        report.problem("services", "the file has no services")
        return text, {}
    return text, {name: (item, child("services", name)) for name, item in services.items()}


class _Stack:
    """The services read from docker-compose.yml, put together with rancher-compose.yml."""

    def __init__(self, services: dict[str, ComposeService], report: Report,
                 rancher_report: Report) -> None:
        self.services = services
        self.report = report
        self.rancher_report = rancher_report
        self.sidekick_of = self._sidekicks()
        self.primaries = [s for s in services.values() if s.name not in self.sidekick_of]
        self.rancher_paths: dict[str, str] = {}

    def _sidekicks(self) -> dict[str, str]:
        sidekick_of: dict[str, str] = {}
        for service in self.services.values():
            at = child(service.path, "labels")
            for name in service.sidekicks:
                other = self.services.get(name)
                if name == service.name:
                    self.report.problem(at, f"the service {name} cannot be its own sidekick")
                elif other is None:
                    self.report.problem(at, f"the sidekick {name} is not a service of this file")
                elif name in sidekick_of:
                    self.report.problem(at, f"{name} is a sidekick of both {sidekick_of[name]} "
                                        f"and {service.name}; give it to one")
                elif other.sidekicks:
                    self.report.problem(at, f"the sidekick {name} has sidekicks of its own; "
                                        "sidekicks do not nest")
                elif service_type(other.image) != "service":
                    self.report.problem(at, f"the sidekick {name} must be a container service, "
                                        "not a special rancher/ image")
                else:
                    sidekick_of[name] = service.name
        return sidekick_of

    def templates(self, rancher: dict[str, tuple[Any, str]]) -> tuple[ServiceTemplate, ...]:
        extra: dict[str, RancherService] = {}
        for name, (value, path) in rancher.items():
            if name not in self.services:
                self.rancher_report.problem(path, f"no service {name} in docker-compose.yml",
                                            at_key=True)
                continue
            primary = self.sidekick_of.get(name, name)
            self.rancher_paths[name] = path
            extra[name] = read_rancher_service(
                value, path, service_type(self.services[primary].image), self.rancher_report,
                sidekick=name in self.sidekick_of)
        names = {s.name for s in self.primaries}
        return tuple(self._template(s, extra, names) for s in self.primaries)

    def _template(self, service: ComposeService, extra: dict[str, RancherService],
                  names: set[str]) -> ServiceTemplate:
        kind = service_type(service.image)
        rancher = extra.get(service.name, RancherService({}))
        fields: dict[str, Any] = {"name": service.name, **rancher.fields}
        self._check_scale(service, fields)
        group = [service, *(self.services[n] for n in service.sidekicks
                            if self.sidekick_of.get(n) == service.name)]
        fields["launchConfig"] = self._launch(service, kind, rancher, group)
        if len(group) > 1:
            fields["secondaryLaunchConfigs"] = [
                {"name": s.name, **self._launch(s, kind, extra.get(s.name, RancherService({})),
                                                group)} for s in group[1:]]
        if kind == "externalService" and rancher.health_check is not None:
            fields["healthCheck"] = rancher.health_check
        links: list[ServiceLink] = []
        for member in group:
            for link, path in zip(member.links, member.link_paths, strict=True):
                if "/" not in link.service and link.service not in names:
                    self.report.problem(path, f"no service {link.service} in this stack")
                elif link not in links:
                    links.append(link)
        self._check_port_rules(service, fields, names)
        return ServiceTemplate(service.name, kind, fields, tuple(links))

    def _launch(self, service: ComposeService, kind: str, rancher: RancherService,
                group: list[ComposeService]) -> dict[str, Any]:
        if kind in _MINIMAL:
            for key in sorted(service.keys - _MINIMAL[kind]):
                if not key.startswith("x-"):
                    self.report.problem(child(service.path, key), f"a {kind} takes only "
                                        f"{', '.join(sorted(_MINIMAL[kind]))}", at_key=True)
            return {"imageUuid": service.launch["imageUuid"]} \
                if "imageUuid" in service.launch else {}
        launch = dict(service.launch)
        members = {m.name for m in group}
        volumes_from: list[str] = []
        for name, path in service.volumes_from:
            if name not in members:
                self.report.problem(path, f"volumes_from {name}: Corral shares volumes only "
                                    f"between a service and its sidekicks; make {name} a "
                                    f"sidekick of {group[0].name}")
            elif name not in volumes_from:
                volumes_from.append(name)
        if volumes_from:
            launch["dataVolumesFromLaunchConfigs"] = volumes_from
        if rancher.health_check is not None:
            launch["healthCheck"] = rancher.health_check
        return launch

    def _check_scale(self, service: ComposeService, fields: dict[str, Any]) -> None:
        if service.replicas is None:
            return
        if fields.setdefault("scale", service.replicas) != service.replicas:
            self.report.problem(child(service.path, "deploy.replicas"), "deploy.replicas and "
                                "rancher-compose.yml's scale differ; give one")

    def _check_port_rules(self, service: ComposeService, fields: dict[str, Any],
                          names: set[str]) -> None:
        for rule in fields.get("lbConfig", {}).get("portRules", []):
            target = rule.get("service")
            if isinstance(target, str) and "/" not in target and target not in names:
                at = child(self.rancher_paths.get(service.name, service.name), "lb_config")
                self.rancher_report.problem(child(at, "port_rules"),
                                            f"no service {target} in this stack")
