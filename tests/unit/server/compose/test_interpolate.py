"""docker-compose's variable substitution (server/compose/interpolate.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.compose.errors import Report
from server.compose.interpolate import InterpolationError, escape, interpolate, interpolate_tree

ENV = {"NAME": "web", "EMPTY": ""}


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("$NAME-1", "web-1"),
    ("${NAME}1", "web1"),
    ("$UNSET|${UNSET}", "|"),
    ("${UNSET:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""),
    ("${UNSET-dflt}", "dflt"),
    ("${NAME:-dflt}", "web"),
    ("${NAME:?needed}", "web"),
    ("$$NAME costs $$5", "$NAME costs $5"),
])
def test_each_form_substitutes_as_docker_compose_does(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("${NAME", "write $$ for a literal $"),
    ("cost $5", "write $$ for a literal $"),
    ("trailing $", "write $$ for a literal $"),
    ("${UNSET:?give a name}", "the variable UNSET is required: give a name"),
    ("${EMPTY:?}", "the variable EMPTY is required"),
])
def test_a_malformed_or_missing_required_variable_is_an_error(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message.replace("$", r"\$")):
        interpolate(text, ENV)


def test_the_tree_substitutes_values_not_keys_and_reports_each_bad_one_at_its_path() -> None:
    report = Report("dockerCompose")
    tree = {"$NAME": {"image": "${NAME}", "ports": ["${bad", 80], "ok": True}}
    assert interpolate_tree(tree, ENV, report) == \
        {"$NAME": {"image": "web", "ports": ["${bad", 80], "ok": True}}
    assert [p.path for p in report.problems] == ["$NAME.ports[0]"]


@given(st.text())
def test_escaped_text_interpolates_back_to_itself(text: str) -> None:
    assert interpolate(escape(text), ENV) == text
