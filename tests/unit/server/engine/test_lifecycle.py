"""Declared lifecycles (pure): the schema's actions, the state options and the transitional
states all come from one table, and a table that contradicts itself is refused."""

from __future__ import annotations

from enum import StrEnum

import pytest

from server.api.schema import Action
from server.lifecycle import TEMPLATE, Lifecycle, Step, step
from server.resources.containers import CONTAINER, CONTAINER_LIFECYCLE, ContainerState


class Light(StrEnum):
    ON = "on"
    OFF = "off"
    SWITCHING = "switching"


def valid(state: str) -> set[str]:
    return set(CONTAINER.valid_actions(state))


def test_a_running_container_has_rancher_s_actions() -> None:
    assert valid("running") == {"migrate", "restart", "stop", "update", "execute", "logs",
                                "proxy", "addlabel", "removelabel", "setlabels"}


def test_a_stopped_container_may_start_remove_update_relabel_and_show_logs() -> None:
    assert valid("stopped") == {"start", "remove", "update", "setlabels", "addlabel",
                                "removelabel", "logs"}


def test_a_container_under_way_may_be_stopped_while_it_starts_and_show_its_logs() -> None:
    assert valid("starting") == {"stop", "logs"}
    assert valid("restarting") == {"stop", "logs"}
    assert valid("updating-running") == valid("updating-stopped") == {"stop", "remove", "logs"}
    for state in ("creating", "stopping", "removing", "migrating", "erroring"):
        assert valid(state) == {"logs"}, state
    for state in ("requested", "purging", "purged"):
        assert valid(state) == set(), state


def test_a_removed_container_may_be_purged_and_a_failed_one_removed() -> None:
    assert valid("removed") == {"purge"}
    assert valid("error") == {"remove", "logs"}


def test_create_is_a_step_but_not_an_action_a_client_can_ask_for() -> None:
    assert CONTAINER_LIFECYCLE.step("create") is not None
    assert "create" not in CONTAINER.actions


def test_the_schema_state_options_are_the_lifecycle_states() -> None:
    options = CONTAINER.all_fields["state"].options
    assert options == CONTAINER_LIFECYCLE.state_names == tuple(s.value for s in ContainerState)


def test_the_container_transitional_states_are_those_its_operations_run_in() -> None:
    assert CONTAINER_LIFECYCLE.transitional_states() == {
        "requested", "creating", "starting", "stopping", "restarting", "updating-running",
        "updating-stopped", "migrating", "removing", "erroring", "purging"}
    start = CONTAINER_LIFECYCLE.running("starting")
    assert start is not None
    assert (start.action, start.operation, start.target, start.error) == (
        "start", "start", "running", "stopped")
    assert CONTAINER_LIFECYCLE.running("running") is None


def test_rancher_s_missing_states_are_declared_with_the_steps_that_pass_them() -> None:
    running = CONTAINER_LIFECYCLE.running
    assert CONTAINER_LIFECYCLE.initial == "requested"
    assert [(row.action, row.operation) for row in (
        running("requested"), running("creating"), running("updating-running"),
        running("updating-stopped"), running("migrating"), running("erroring"))
        if row is not None] == [("create", "create"), ("create", "create"),
                                ("update-running", "update"), ("update-stopped", "update"),
                                ("migrate", "migrate"), ("error", "error")]


def test_the_stop_action_takes_its_input_type_from_the_table() -> None:
    assert CONTAINER.actions["stop"].input == "instanceStop"


def test_the_template_moves_at_once_between_active_inactive_and_removed() -> None:
    actions = TEMPLATE.actions()
    by_state = {state: {a for a, spec in actions.items() if state in spec.states}
                for state in TEMPLATE.state_names}
    assert by_state == {"active": {"deactivate", "remove"},
                        "inactive": {"activate", "remove"},
                        "removed": {"purge"}, "purged": set()}
    assert TEMPLATE.transitional_states() == frozenset()
    assert TEMPLATE.initial == "active"


def test_a_table_naming_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown states"):
        Lifecycle(states=Light, initial="off", steps=(step("dim", {"on"}, "dimmed"),))


def test_a_table_naming_an_action_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Lifecycle(states=Light, initial="off",
                  steps=(step("flip", {"on"}, "off"), step("flip", {"off"}, "on")))


def test_a_step_that_is_also_a_verb_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Lifecycle(states=Light, initial="off", steps=(step("flip", {"on"}, "off"),),
                  verbs={"flip": Action(frozenset({"on"}))})


def test_an_operation_without_a_transitional_state_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a transitional state"):
        Lifecycle(states=Light, initial="off",
                  steps=(Step("flip", frozenset({"on"}), "off", operation="flip"),))


def test_a_transitional_state_without_an_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a transitional state"):
        Lifecycle(states=Light, initial="off",
                  steps=(Step("flip", frozenset({"on"}), "off", transitional="switching"),))


def test_an_initial_state_that_is_not_a_state_is_refused() -> None:
    with pytest.raises(ValueError, match="initial state"):
        Lifecycle(states=Light, initial="broken", steps=())


def test_a_step_with_a_transitional_state_runs_the_operation_named_after_its_action() -> None:
    row = step("flip", {"on"}, "off", via="switching")
    assert (row.transitional, row.operation) == ("switching", "flip")
    Lifecycle(states=Light, initial="off", steps=(row,))  # accepted
