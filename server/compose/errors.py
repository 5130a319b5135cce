"""What can be wrong with a stack's compose files, and the collector that gathers it.

``ComposeError`` (a ``ValueError``) is the package's one exception: it carries every
``ComposeProblem`` found in both files, so a user fixes them in one round rather than one per
post. ``Report`` collects problems for one file while it is read, placing each at the line and
column of the key or value its path names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DOCKER_COMPOSE = "dockerCompose"
RANCHER_COMPOSE = "rancherCompose"
FILE_NAMES = {DOCKER_COMPOSE: "docker-compose.yml", RANCHER_COMPOSE: "rancher-compose.yml"}
SUMMARY_LIMIT = 5  # problems spelled out in str(ComposeError); the rest are counted

Mark = tuple[int, int]  # 1-based line and column


@dataclass(frozen=True)
class ComposeProblem:
    """One thing to fix: in which file (the stack's field name), where, and what."""

    file: str
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        path = f" {self.path}" if self.path else ""
        return f"{FILE_NAMES.get(self.file, self.file)}{path}{where}: {self.message}"


class ComposeError(ValueError):
    """The compose files cannot make a stack; ``problems`` lists all that was found."""

    def __init__(self, problems: Iterable[ComposeProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(self._summary())

    def _summary(self) -> str:
        shown = "; ".join(str(p) for p in self.problems[:SUMMARY_LIMIT])
        more = len(self.problems) - SUMMARY_LIMIT
        tail = f"; and {more} more" if more > 0 else ""
        count = len(self.problems)
        return f"The compose files have {count} problem{'s' if count != 1 else ''}: " \
               f"{shown}{tail}."


def child(path: str, key: str | int) -> str:
    """The path of ``key`` (a mapping key or a list index) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def parent(path: str) -> str:
    return path[:max(path.rfind("."), path.rfind("["), 0)]


class Report:
    """Problems of one file, placed by path at the marks its YAML nodes carried."""

    def __init__(self, file: str, key_marks: Mapping[str, Mark] | None = None,
                 value_marks: Mapping[str, Mark] | None = None) -> None:
        self.file = file
        self.key_marks: Mapping[str, Mark] = {} if key_marks is None else key_marks
        self.value_marks: Mapping[str, Mark] = {} if value_marks is None else value_marks
        self.problems: list[ComposeProblem] = []

    def problem(self, path: str, message: str, *, at_key: bool = False) -> None:
        """Record a problem at ``path``: its key's mark (``at_key``) or its value's."""
        mark = self._mark(path, at_key)
        line, column = mark if mark else (None, None)
        self.problems.append(ComposeProblem(self.file, path, message, line, column))

    def _mark(self, path: str, at_key: bool) -> Mark | None:
        first, second = (self.key_marks, self.value_marks) if at_key else \
            (self.value_marks, self.key_marks)
        while True:
            mark = first.get(path) or second.get(path)
            if mark or not path:
                return mark
            path = parent(path)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ComposeError(self.problems)
