"""The container proxy's reading of a container's answer (pure): status, headers without the
hop-by-hop ones, redirects kept under the proxy's prefix, and an answer that is not HTTP."""

from __future__ import annotations

import pytest

from server.agents.proxy import BadGateway, parse_head, request_target
from server.api.errors import BadRequest

PREFIX = "/v1/container-proxy/t0ken"


def test_an_answer_keeps_its_status_and_headers_but_not_the_hop_by_hop_ones() -> None:
    status, reason, headers = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n"
        b"Connection: close\r\nTransfer-Encoding: identity", PREFIX)

    assert (status, reason) == (200, "OK")
    assert dict(headers) == {"Content-Type": "text/html", "Content-Length": "5"}


def test_a_redirect_to_a_path_stays_under_the_proxy_prefix() -> None:
    _, _, headers = parse_head(b"HTTP/1.0 302 Found\r\nLocation: /login?next=/", PREFIX)
    assert headers["Location"] == f"{PREFIX}/login?next=/"
    _, _, away = parse_head(b"HTTP/1.0 302 Found\r\nLocation: https://example.org/", PREFIX)
    assert away["Location"] == "https://example.org/"


def test_an_answer_that_is_not_http_is_a_502() -> None:
    with pytest.raises(BadGateway) as caught:
        parse_head(b"SSH-2.0-OpenSSH_9.6", PREFIX)
    assert caught.value.status == 502


def test_the_request_target_is_the_raw_path_below_the_prefix() -> None:
    assert request_target(f"{PREFIX}/", PREFIX) == "/"
    assert request_target(PREFIX, PREFIX) == "/"
    assert request_target(f"{PREFIX}?a=1", PREFIX) == "/?a=1"
    # Still encoded: an encoded line break cannot end the request line sent to the container.
    assert request_target(f"{PREFIX}/a%0d%0aX-Evil:%201?q=%20", PREFIX) == \
        "/a%0d%0aX-Evil:%201?q=%20"


def test_a_target_with_a_raw_control_character_is_a_400() -> None:
    with pytest.raises(BadRequest):
        request_target(f"{PREFIX}/a\r\nX-Evil: 1", PREFIX)


def test_header_lines_that_could_not_be_sent_on_are_dropped() -> None:
    status, reason, headers = parse_head(
        b"HTTP/1.0 200 O\x01K\r\nGood: yes\r\nBad Name: x\r\nBad-Value: a\nb\r\nNul: \x00",
        PREFIX)
    assert (status, reason, dict(headers)) == (200, "", {"Good": "yes"})
