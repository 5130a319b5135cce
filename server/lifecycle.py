"""Declared lifecycles: each resource type's states and its one transition table (pure).

A row of the table (a ``Step``) says: this action, valid in these states, enters this
transitional state, where the runner carries out this operation, and ends in this state on
success and that one on error. A step without a transitional state is reached at once. The
schema's actions (valid per state), the ``state`` field's options and ``transitioning`` are all
derived from the table, so the API, the runner and the docs cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from server.api.schema import Action


@dataclass(frozen=True)
class Step:
    """One row of a transition table."""

    action: str
    sources: frozenset[str]
    target: str
    # The state while the operation runs; None: ``target`` is reached at once.
    transitional: str | None = None
    # The operation the runner carries out, named in the type's operation table.
    operation: str | None = None
    # Where a failed operation leaves the resource (``transitioning`` becomes ``error``).
    error: str | None = None
    # Action input and output types, as the schema names them.
    input: str | None = None
    output: str | None = None
    # Further transitional states the operation itself moves through (creating → starting).
    passes: frozenset[str] = frozenset()

    def under_way(self, state: str) -> bool:
        """Whether a resource in ``state`` is still in this step's hands."""
        return state == self.transitional or state in self.passes


def step(action: str, sources: Iterable[str], target: str, *, via: str | None = None,
         operation: str | None = None, error: str | None = None, input: str | None = None,
         output: str | None = None, passes: Iterable[str] = ()) -> Step:
    return Step(action, frozenset(sources), target, via, operation or (via and action),
                error, input, output, frozenset(passes))


@dataclass(frozen=True)
class Lifecycle:
    """A type's states (a StrEnum), where it starts, and how it moves."""

    states: type[StrEnum]
    initial: str
    steps: tuple[Step, ...]
    # Actions that change no state (logs, inspect, ...), with the states they are valid in.
    verbs: Mapping[str, Action] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {s.value for s in self.states}
        seen: set[str] = set()
        for row in self.steps:
            used = {*row.sources, row.target, *row.passes,
                    *(x for x in (row.transitional, row.error) if x)}
            if not used <= names:
                raise ValueError(f"step {row.action}: unknown states {sorted(used - names)}")
            if row.action in seen or row.action in self.verbs:
                raise ValueError(f"action {row.action!r} declared twice")
            if (row.transitional is None) != (row.operation is None):
                raise ValueError(f"step {row.action}: an operation needs a transitional state")
            seen.add(row.action)
        if self.initial not in names:
            raise ValueError(f"initial state {self.initial!r} is not a state")

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.states)

    def actions(self) -> dict[str, Action]:
        """The schema's actions: every step a client can ask for, then the verbs."""
        out = {row.action: Action(row.sources, row.input, row.output)
               for row in self.steps if row.sources}
        out.update(self.verbs)
        return out

    def step(self, action: str) -> Step | None:
        return next((row for row in self.steps if row.action == action), None)

    def running(self, state: str) -> Step | None:
        """The step whose operation is under way while a resource is in ``state``."""
        return next((row for row in self.steps if row.transitional == state), None) or \
            next((row for row in self.steps if state in row.passes), None)

    def transitional_states(self) -> frozenset[str]:
        return frozenset(state for row in self.steps if row.transitional
                         for state in (row.transitional, *row.passes))


class TemplateState(StrEnum):
    """Rancher's template for credentials, accounts and the like."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    REMOVED = "removed"
    PURGED = "purged"


TEMPLATE = Lifecycle(
    states=TemplateState,
    initial="active",
    steps=(
        step("activate", {"inactive"}, "active"),
        step("deactivate", {"active"}, "inactive"),
        step("remove", {"inactive", "active"}, "removed"),
        step("purge", {"removed"}, "purged"),
    ),
)
