"""Tokens the server signs: what they grant, until when, and that nothing else passes."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import given
from hypothesis import strategies as st

from server.agents.streams import StreamTickets, Ticket
from server.security import ServerKey
from server.tokens import MAX_TOKEN_LENGTH, TokenRefused, TokenSigner, TokenTooLong

KEY = ServerKey(b"k" * 32)


def signer(key: ServerKey = KEY) -> TokenSigner:
    return TokenSigner.of(key)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_signed_token_gives_back_its_claims() -> None:
    claims = signer().verify(signer().sign({"grant": {"hostId": 7}}, 60))
    assert claims["grant"] == {"hostId": 7} and claims["iss"] == "corral"
    assert time.time() < claims["exp"] <= time.time() + 60


def test_every_token_is_unique() -> None:
    assert signer().sign({}, 60) != signer().sign({}, 60)


def test_an_expired_token_is_refused() -> None:
    token = signer().sign({}, -1)
    with pytest.raises(TokenRefused, match="expired"):
        signer().verify(token)


def test_a_token_of_another_server_key_is_refused() -> None:
    token = signer(ServerKey(b"o" * 32)).sign({}, 60)
    with pytest.raises(TokenRefused, match="bad signature"):
        signer().verify(token)


def test_a_changed_claim_breaks_the_signature() -> None:
    header, payload, signature = signer().sign({"grant": {"hostId": 7}}, 60).split(".")
    claims = json.loads(_unb64(payload))
    claims["grant"]["hostId"] = 8
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenRefused, match="bad signature"):
        signer().verify(f"{header}.{forged}.{signature}")


def test_the_public_key_is_pem_and_checks_the_signature() -> None:
    pem = signer().public_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    public = load_pem_public_key(pem)
    assert isinstance(public, Ed25519PublicKey)
    header, payload, signature = signer().sign({}, 60).split(".")
    public.verify(_unb64(signature), f"{header}.{payload}".encode())  # raises if not


def test_the_signing_key_follows_from_the_server_key_across_restarts() -> None:
    assert signer(ServerKey(b"k" * 32)).public_pem() == signer(KEY).public_pem()
    assert signer(ServerKey(b"o" * 32)).public_pem() != signer(KEY).public_pem()


@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_=-]{0,40}\.[A-Za-z0-9_=-]{0,40}\."
                                           r"[A-Za-z0-9_=-]{0,90}", fullmatch=True))
def test_anything_else_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(TokenRefused):
        signer().verify(text)


def test_an_over_long_token_is_not_even_decoded() -> None:
    with pytest.raises(TokenRefused, match="not a token"):
        signer().verify("a." * MAX_TOKEN_LENGTH + "b")


def ticket(**overrides: object) -> Ticket:
    values: dict[str, object] = {"host_id": 3, "instruction": "instance.logs",
                                 "resource_id": "1i9", "data": {"uuid": "u", "tail": 10}}
    values.update(overrides)
    return Ticket(**values)  # type: ignore[arg-type]


def test_a_stream_ticket_is_redeemed_once() -> None:
    tickets = StreamTickets(signer())
    token = tickets.issue(ticket())
    found = tickets.redeem(token)
    assert found is not None
    assert (found.host_id, found.instruction, found.resource_id, found.data) == \
        (3, "instance.logs", "1i9", {"uuid": "u", "tail": 10})
    assert tickets.redeem(token) is None


def test_a_ticket_is_checked_by_any_server_with_the_same_key() -> None:
    token = StreamTickets(signer()).issue(ticket())
    assert StreamTickets(signer(ServerKey(b"k" * 32))).lookup(token) is not None
    assert StreamTickets(signer(ServerKey(b"o" * 32))).lookup(token) is None


def test_a_proxy_ticket_is_good_many_times_until_it_expires() -> None:
    tickets = StreamTickets(signer())
    token = tickets.issue(ticket(instruction="instance.proxy"))
    assert tickets.lookup(token) is not None and tickets.lookup(token) is not None
    expired = tickets.issue(ticket(expires=time.time() - 1))
    assert tickets.lookup(expired) is None and tickets.redeem(expired) is None


def test_a_token_that_would_not_fit_in_a_url_is_not_made() -> None:
    with pytest.raises(TokenTooLong):
        signer().sign({"grant": {"data": "x" * MAX_TOKEN_LENGTH}}, 60)
