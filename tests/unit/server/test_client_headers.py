"""The client address a response names: the peer's, or what trusted proxies forwarded for."""

from __future__ import annotations

import pytest

from server.api.client_headers import client_ip, parse_networks
from server.config import Settings

PROXIES = parse_networks("10.0.0.0/8, 192.0.2.1 2001:db8::/32")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.5", [], "203.0.113.5"),
    ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # an untrusted peer forges nothing
    ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
    ("10.1.2.3", ["198.51.100.1, 192.0.2.1"], "198.51.100.1"),  # through two proxies
    ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the client forged the first
    ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # two headers read as one
    ("10.1.2.3", ["10.9.9.9"], "10.9.9.9"),  # only proxies: the farthest one
    ("10.1.2.3", ["garbage"], "10.1.2.3"),
    ("10.1.2.3", [""], "10.1.2.3"),
    ("2001:db8::1", ["2001:db9::7"], "2001:db9::7"),
])
def test_client_ip_reads_forwarded_for_only_through_trusted_proxies(
        peer: str, forwarded: list[str], expected: str) -> None:
    assert client_ip(peer, forwarded, PROXIES) == expected


def test_no_proxy_is_trusted_by_default() -> None:
    settings = Settings.from_sources({"data_dir": "/tmp/x"}, {})
    assert settings.trusted_proxies == ()
    assert client_ip("10.1.2.3", ["198.51.100.1"], settings.trusted_proxies) == "10.1.2.3"


def test_trusted_proxies_come_from_the_environment_and_bad_ones_are_refused() -> None:
    settings = Settings.from_sources({"data_dir": "/tmp/x"},
                                     {"CORRAL_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(ValueError, match="trusted proxies"):
        Settings.from_sources({"data_dir": "/tmp/x"}, {"CORRAL_TRUSTED_PROXIES": "10.0.0.0/33"})
