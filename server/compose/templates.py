"""What ``parse_stack`` makes of the compose files: the services a caller creates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SIDEKICKS_LABEL = "io.rancher.sidekicks"
DNS_IMAGE = "rancher/dns-service"
EXTERNAL_IMAGE = "rancher/external-service"
LB_IMAGE_PREFIX = "rancher/lb-service-haproxy"


@dataclass(frozen=True)
class ServiceLink:
    """A link to ``service`` (this stack's, or ``stack/service``) under the alias ``name``."""

    service: str
    name: str


@dataclass(frozen=True)
class ServiceTemplate:
    """One service's API create body (``fields``, camelCase, without ``stackId``) and its
    links, which the caller resolves to ``serviceLinks`` once every service exists."""

    name: str
    type: str
    fields: dict[str, Any]
    links: tuple[ServiceLink, ...] = ()


@dataclass(frozen=True)
class StackTemplate:
    """A stack's primary services, in file order, and the compose version as given."""

    services: tuple[ServiceTemplate, ...]
    version: str


def service_type(image: str | None) -> str:
    """The service type Rancher's compose gave an image: its special images, else service."""
    name = (image or "").split("@")[0]
    repository = name.rsplit(":", 1)[0] if ":" in name.rpartition("/")[2] else name
    if repository == DNS_IMAGE:
        return "dnsService"
    if repository == EXTERNAL_IMAGE:
        return "externalService"
    if name.startswith(LB_IMAGE_PREFIX):
        return "loadBalancerService"
    return "service"
