"""Variable substitution in compose values, as docker-compose does it.

``$VAR`` and ``${VAR}`` take the variable's value, ``${VAR:-default}`` the default when the
variable is unset or empty, ``${VAR-default}`` only when it is unset; ``${VAR:?message}`` and
``${VAR?message}`` require it. ``$$`` is a literal ``$``. An unset variable becomes the empty
string. The variables are the stack's environment (Rancher's answers). Only values are
substituted, never keys; a ``$`` that starts none of these forms is a problem, as in
docker-compose, so that a typo does not pass as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server.compose.errors import Report, child

_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
_TOKEN = re.compile(
    rf"\$(?:(?P<escaped>\$)|(?P<named>{_NAME})"
    rf"|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}]*))?\}}|(?P<bad>))")


class InterpolationError(ValueError):
    """A ``$`` form that cannot be read, or a required variable that is unset."""


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """``text`` with its variables substituted from ``environment``."""
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return environment.get(match["named"], "")
        name = match["braced"]
        if name is None:
            rest = text[match.start():match.start() + 20]
            raise InterpolationError(f"{rest!r} is not $VAR, ${{VAR}}, ${{VAR:-default}} "
                                     "or ${VAR-default}; write $$ for a literal $")
        value, op, arg = environment.get(name), match["op"], match["arg"]
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset else str(value)
        if op in ("?", ":?") and unset:
            raise InterpolationError(f"the variable {name} is required: {arg or 'it is unset'}")
        return value or ""

    return _TOKEN.sub(substitute, text)


def interpolate_tree(value: Any, environment: Mapping[str, str], report: Report,
                     path: str = "") -> Any:
    """Every string value in ``value`` substituted; each bad one reported at its path."""
    if isinstance(value, str):
        try:
            return interpolate(value, environment)
        except InterpolationError as exc:
            report.problem(path, str(exc))
            return value
    if isinstance(value, dict):
        return {k: interpolate_tree(v, environment, report, child(path, k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, environment, report, child(path, i))
                for i, v in enumerate(value)]
    return value


def escape(text: str) -> str:
    """``text`` written so that :func:`interpolate` gives it back."""
    return text.replace("$", "$$")
