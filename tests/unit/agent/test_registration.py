"""The registration URL an operator pastes: what is accepted, and a one-line error for the rest."""

from __future__ import annotations

import pytest

from agent.registration import RegistrationUrl, parse_registration_url

TOKEN = "mfrggzdfmztwq2lknnwg23tpobyxe43u"  # the server's tokens are 32 characters of [a-z2-7]


@pytest.mark.parametrize(("url", "origin", "token"), [
    (f"http://corral.example:8080/v1/scripts/{TOKEN}", "http://corral.example:8080", TOKEN),
    (f"https://corral.example/v1/scripts/{TOKEN}", "https://corral.example", TOKEN),
    (f"https://corral.example:8443/v1/scripts/{TOKEN}", "https://corral.example:8443", TOKEN),
    (f"http://10.0.0.5:8080/v1/scripts/{TOKEN}", "http://10.0.0.5:8080", TOKEN),
    (f"http://[fd00::1]:8080/v1/scripts/{TOKEN}", "http://[fd00::1]:8080", TOKEN),
    (f"http://corral:8080/v1/scripts/{TOKEN}/", "http://corral:8080", TOKEN),
    ("http://corral:8080/v1/scripts/ABCdef123", "http://corral:8080", "ABCdef123"),
])
def test_good_urls_give_origin_and_token(url: str, origin: str, token: str) -> None:
    assert parse_registration_url(url) == RegistrationUrl(origin=origin, token=token)


@pytest.mark.parametrize("url", [
    f"ftp://corral:8080/v1/scripts/{TOKEN}",
    f"ws://corral:8080/v1/scripts/{TOKEN}",
    f"file:///v1/scripts/{TOKEN}",
    f"corral:8080/v1/scripts/{TOKEN}",          # no scheme
    f"http:///v1/scripts/{TOKEN}",              # no server
    f"http://corral:8080/v2/scripts/{TOKEN}",   # wrong path
    f"http://corral:8080/v1/script/{TOKEN}",
    f"http://corral:8080/scripts/{TOKEN}",
    f"http://corral:8080/v1/{TOKEN}",
    f"http://corral:8080/{TOKEN}",
    "http://corral:8080/v1/scripts",            # missing token
    "http://corral:8080/v1/scripts/",
    "http://corral:8080/",
    "http://corral:8080",
    f"http://corral:8080/v1/scripts/{TOKEN}/extra",   # extra segments
    f"http://corral:8080/prefix/v1/scripts/{TOKEN}",
    "http://corral:8080/v1/scripts/abc-def",    # odd characters in the token
    "http://corral:8080/v1/scripts/abc_def",
    "http://corral:8080/v1/scripts/abc.def",
    "http://corral:8080/v1/scripts/abc%2Fdef",
    "http://corral:8080/v1/scripts/abc%20def",
    "http://corral:8080/v1/scripts/$(reboot)",
    "",
    "not a url",
])
def test_anything_else_is_a_value_error_with_a_one_line_message(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_registration_url(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "not a registration URL" in message
    assert "/v1/scripts/TOKEN" in message


@pytest.mark.parametrize("token", ["t\u00f6k\u00e9n", "abc\u00b2", "\u0661\u0662\u0663"])
def test_a_token_with_non_ascii_characters_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError, match="not a registration URL"):
        parse_registration_url(f"http://corral:8080/v1/scripts/{token}")
