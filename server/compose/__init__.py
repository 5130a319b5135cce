"""Stacks from compose files, and compose files from stacks. Pure: no I/O, no server imports.

``parse_stack`` turns a docker-compose.yml and an optional rancher-compose.yml (as text) into
``ServiceTemplate``s, the API create bodies of a stack's services; ``export_stack`` writes a
stack's services back as the two files. Modules, in reading order:

- ``errors``: ``ComposeProblem``, ``ComposeError`` and the per-file ``Report``;
- ``document``: YAML to plain values with line/column marks, refusing hostile input;
- ``interpolate``: ``$VAR`` substitution;
- ``values``: readers that check one value and shape it; ``keys``: the key-by-key tables;
- ``service`` (docker-compose services), ``rancher`` (rancher-compose), ``parse`` (both,
  put together), ``export`` (the way back); ``templates``: the result types.

Exceptions::

    ValueError
     └── ComposeError          every problem of both files, as ComposeProblem
"""

from __future__ import annotations

from server.compose.errors import ComposeError, ComposeProblem
from server.compose.export import export_stack
from server.compose.parse import parse_stack
from server.compose.templates import ServiceLink, ServiceTemplate, StackTemplate

__all__ = ["ComposeError", "ComposeProblem", "ServiceLink", "ServiceTemplate", "StackTemplate",
           "export_stack", "parse_stack"]
