"""Reading compose YAML with marks, and refusing hostile input (server/compose/document.py)."""

from __future__ import annotations

import pytest

from server.compose.document import MAX_BYTES, MAX_DEPTH, load
from server.compose.errors import ComposeError, ComposeProblem


def problems(text: str) -> tuple[ComposeProblem, ...]:
    with pytest.raises(ComposeError) as caught:
        load(text, "dockerCompose")
    return caught.value.problems


def test_keys_and_values_carry_their_one_based_line_and_column() -> None:
    doc = load("services:\n  web:\n    ports: [80, 443]\n", "dockerCompose")
    assert doc.value == {"services": {"web": {"ports": [80, 443]}}}
    assert doc.key_marks["services.web.ports"] == (3, 5)
    assert doc.value_marks["services.web.ports"] == (3, 12)
    assert doc.value_marks["services.web.ports[1]"] == (3, 17)


def test_a_syntax_error_is_one_problem_at_the_place_yaml_reports() -> None:
    (problem,) = problems("services:\n  web:\n    image: [busybox\n")
    assert (problem.file, problem.path, problem.line, problem.column) == \
        ("dockerCompose", "", 4, 1)
    assert "expected ',' or ']'" in problem.message


def test_a_bad_indentation_is_placed_on_its_line() -> None:
    (problem,) = problems("web:\n  image: a\n image: b\n")
    assert problem.line == 3 and problem.message.startswith("YAML syntax error")


def test_anchors_and_merge_keys_work_and_explicit_keys_win() -> None:
    doc = load("x-base: &base {image: a, tty: true}\nweb:\n  <<: *base\n  image: b\n",
               "dockerCompose")
    assert doc.value["web"] == {"image": "b", "tty": True}


def test_an_alias_bomb_is_refused_once_it_expands_past_the_node_limit() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    (problem,) = problems("\n".join(lines) + "\n")
    assert "more than 100000 YAML nodes" in problem.message and problem.line is not None


def test_a_text_over_one_mebibyte_is_refused_unread() -> None:
    (problem,) = problems("#" * (MAX_BYTES + 1))
    assert "larger than" in problem.message and problem.path == ""


@pytest.mark.parametrize("text", ["[" * 5000, "a:\n" + "".join(
    "  " * i + f"k{i}:\n" for i in range(1, MAX_DEPTH + 5))])
def test_deep_nesting_is_refused(text: str) -> None:
    (problem,) = problems(text)
    assert "nest" in problem.message


def test_non_string_keys_and_duplicate_keys_are_problems_at_the_key() -> None:
    found = problems("web:\n  image: x\n  image: y\n80: 1\nyes: 2\n")
    assert [(p.line, p.column) for p in found] == [(3, 3), (4, 1), (5, 1)]
    assert "given twice" in found[0].message
    assert found[1].message == "the key 80 is not a string; quote it"


def test_foreign_tags_and_binary_are_refused() -> None:
    found = problems("a: !!python/object:os.system x\nb: !!binary aGk=\nc: !custom {x: 1}\n")
    assert [p.path for p in found] == ["a", "b", "c"]


def test_timestamps_stay_as_written() -> None:
    assert load("d: 2024-01-02\n", "dockerCompose").value == {"d": "2024-01-02"}


def test_an_empty_file_has_no_value() -> None:
    assert load("", "rancherCompose").value is None
