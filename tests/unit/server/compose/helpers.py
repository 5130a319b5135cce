"""Helpers shared by the compose tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from server.compose import ComposeError, ComposeProblem, ServiceTemplate, parse_stack


def compose(services: Mapping[str, Any], version: str | None = "2") -> str:
    """A docker-compose text holding ``services``."""
    body: dict[str, Any] = dict(services) if version is None else \
        {"version": version, "services": dict(services)}
    return yaml.safe_dump(body, sort_keys=False)


def one(service: Mapping[str, Any], rancher: Mapping[str, Any] | None = None,
        **kwargs: Any) -> ServiceTemplate:
    """The template of a stack whose only service is ``web``."""
    rc = None if rancher is None else compose({"web": rancher})
    (template,) = parse_stack(compose({"web": service}), rc, **kwargs).services
    return template


def problems_of(docker_compose: str, rancher_compose: str | None = None,
                **kwargs: Any) -> tuple[ComposeProblem, ...]:
    with pytest.raises(ComposeError) as caught:
        parse_stack(docker_compose, rancher_compose, **kwargs)
    return caught.value.problems


def services_from(templates: tuple[ServiceTemplate, ...]) -> list[dict[str, Any]]:
    """API-shaped service dicts, as the server would show the created services."""
    return [{**t.fields, "name": t.name, "type": t.type,
             "serviceLinks": [{"service": link.service, "name": link.name}
                              for link in t.links]} for t in templates]
