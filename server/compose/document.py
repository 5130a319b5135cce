"""A compose file's YAML, read into plain values with the line and column of every key.

PyYAML's composer gives nodes that carry marks; walking them ourselves (rather than
``yaml.safe_load``) keeps those marks, so each problem points at its line. The walk is also
where hostile input is refused:

- a text over ``MAX_BYTES`` (1 MiB) is not parsed at all;
- anchors and aliases are allowed (compose files use them with ``<<`` merges and ``x-``
  fields), but an alias is expanded wherever it is used and every expanded node counts
  towards ``MAX_NODES`` (100,000), so a "billion laughs" document stops early;
- nesting deeper than ``MAX_DEPTH`` is refused, as is any tag beyond YAML's own;
- keys must be strings, and a key given twice in one mapping is a problem.

Timestamps are kept as the text written (``2024-01-01`` stays a string); ``!!binary`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from server.compose.errors import ComposeError, ComposeProblem, Mark, Report, child

MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))


@dataclass(frozen=True)
class Document:
    """A file's value (None for an empty file) and the marks of each path's key and value."""

    value: Any
    key_marks: dict[str, Mark]
    value_marks: dict[str, Mark]

    def report(self, file: str) -> Report:
        return Report(file, self.key_marks, self.value_marks)


class _TooBig(Exception):
    def __init__(self, message: str, mark: Mark) -> None:
        super().__init__(message)
        self.mark = mark


def load(text: str, file: str) -> Document:
    """The document in ``text``; ComposeError for bad YAML or input that is too large."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ComposeError([ComposeProblem(file, "", f"the file is larger than {MAX_BYTES} "
                                           "bytes; Corral refuses texts that large")])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ComposeError([_yaml_problem(file, exc)]) from exc
    except yaml.YAMLError as exc:
        raise ComposeError([ComposeProblem(file, "", f"the file is not YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise ComposeError([ComposeProblem(file, "", "the file nests too deeply")]) from exc
    walker = _Walker(file)
    try:
        value = None if node is None else walker.value(node, "", 0)
    except _TooBig as exc:
        line, column = exc.mark
        raise ComposeError([ComposeProblem(file, "", str(exc), line, column)]) from exc
    if walker.report.problems:
        raise ComposeError(walker.report.problems)
    return Document(value, walker.key_marks, walker.value_marks)


def _yaml_problem(file: str, exc: yaml.MarkedYAMLError) -> ComposeProblem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "the file is not valid YAML"
    if exc.context and exc.problem:
        message = f"{exc.context}: {exc.problem}"
    return ComposeProblem(file, "", f"YAML syntax error: {message}",
                          mark.line + 1 if mark else None, mark.column + 1 if mark else None)


def _mark(node: yaml.Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Walker:
    def __init__(self, file: str) -> None:
        self.key_marks: dict[str, Mark] = {}
        self.value_marks: dict[str, Mark] = {}
        self.report = Report(file, self.key_marks, self.value_marks)
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def value(self, node: yaml.Node, path: str, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"the file expands to more than {MAX_NODES} YAML nodes (through "
                          "aliases); Corral refuses documents that large", _mark(node))
        if depth > MAX_DEPTH:
            raise _TooBig(f"the file nests deeper than {MAX_DEPTH} levels", _mark(node))
        self.value_marks.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                self._bad_tag(node, path)
                return None
            return [self.value(item, child(path, i), depth + 1)
                    for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self._bad_tag(node, path)
            return None
        if node.tag == _TAG + "timestamp":
            return str(node.value)
        return self.constructor.construct_object(node)

    def _bad_tag(self, node: yaml.Node, path: str) -> None:
        self.report.problem(path, f"the YAML tag {node.tag} is not supported; remove it")
        self.value_marks[path] = _mark(node)
        return None

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Any] | None:
        if node.tag != _TAG + "map":
            self._bad_tag(node, path)
            return None
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                for source in self._merge_sources(value_node, path):
                    merged.update(self._mapping(source, path, depth + 1) or {})
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            key_path = child(path, key)
            if key in explicit:
                self.key_marks[key_path] = _mark(key_node)
                self.report.problem(key_path, f"the key {key} is given twice", at_key=True)
                continue
            self.key_marks[key_path] = _mark(key_node)
            self.value_marks[key_path] = _mark(value_node)
            explicit[key] = self.value(value_node, key_path, depth + 1)
        return {**merged, **explicit}

    def _merge_sources(self, node: yaml.Node, path: str) -> list[yaml.MappingNode]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(item, yaml.MappingNode) for item in items):
            return list(items)
        self.report.problem(child(path, "<<"), "a << merge takes a mapping or a list of "
                            "mappings")
        self.value_marks[child(path, "<<")] = _mark(node)
        return []

    def _key(self, node: yaml.Node, path: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "str":
            return str(node.value)
        shown = node.value if isinstance(node, yaml.ScalarNode) else "a collection"
        where = child(path, f"<{shown}>")
        self.key_marks[where] = _mark(node)
        self.report.problem(where, f"the key {shown} is not a string; quote it", at_key=True)
        return None
