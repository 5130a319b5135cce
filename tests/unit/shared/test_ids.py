"""Rancher-style ids: prefixes derived from the base type, formatting, and strict parsing."""

from __future__ import annotations

import pytest

from shared.ids import format_id, parse_id, prefix_for


@pytest.mark.parametrize(("base_type", "prefix"), [
    ("host", "1h"),
    ("instance", "1i"),
    ("storagePool", "1sp"),
    ("registrationToken", "1rt"),
    ("account", "1a"),
    ("credential", "1c"),
    ("loadBalancerService", "1lbs"),
])
def test_prefix_is_1_then_first_letter_then_capitals_lowercased(base_type: str,
                                                                 prefix: str) -> None:
    assert prefix_for(base_type) == prefix


@pytest.mark.parametrize(("prefix", "number", "text"), [
    ("1h", 1, "1h1"),
    ("1i", 42, "1i42"),
    ("1sp", 7, "1sp7"),
    ("1rt", 10, "1rt10"),
])
def test_format_id_joins_prefix_and_row_number(prefix: str, number: int, text: str) -> None:
    assert format_id(prefix, number) == text


@pytest.mark.parametrize("number", [1, 9, 10, 1234, 2**31 - 1])
@pytest.mark.parametrize("prefix", ["1h", "1sp", "1rt"])
def test_parse_id_reads_back_what_format_id_wrote(prefix: str, number: int) -> None:
    assert parse_id(format_id(prefix, number), prefix) == number


@pytest.mark.parametrize("number", [2**31, 10**17, 10**18 - 1])
def test_a_row_number_beyond_the_store_s_32_bits_names_nothing(number: int) -> None:
    assert parse_id(format_id("1h", number), "1h") is None


@pytest.mark.parametrize(("value", "prefix"), [
    ("1i5", "1h"),        # another type's id
    ("1sp5", "1s"),       # a longer prefix that starts with the expected one
    ("1s5", "1sp"),       # a shorter prefix
    ("1h05", "1h"),       # leading zero
    ("1h0", "1h"),        # row 0 never exists
    ("1h00", "1h"),
    ("1h", "1h"),         # no number
    ("h5", "1h"),         # no leading 1
    ("2h5", "1h"),
    ("5", "1h"),
    ("", "1h"),
    ("1H5", "1h"),        # upper case
    ("1h5x", "1h"),       # trailing garbage
    ("1h5 ", "1h"),
    (" 1h5", "1h"),
    ("1h-5", "1h"),
    ("1h+5", "1h"),
    ("1h1e3", "1h"),
    ("1h5.0", "1h"),
    ("1h\u0665", "1h"),   # ARABIC-INDIC DIGIT FIVE
    ("1h1234567890123456789", "1h"),  # more than 18 digits
    ("1h5/1h6", "1h"),
])
def test_parse_id_rejects_anything_but_the_exact_form(value: str, prefix: str) -> None:
    assert parse_id(value, prefix) is None


def test_parse_id_rejects_a_trailing_newline() -> None:
    assert parse_id("1h5\n", "1h") is None
