"""Tokens the server signs, and the public key that checks them.

A token is a compact JWT signed with Ed25519 (``alg`` EdDSA): its claims say what it grants
and until when (``exp``, seconds since the epoch), so any server process with the key can
check one without a table of the tokens it gave out. The signing key is derived from the
server's own key (``server.key``): it survives restarts, and its public half is served at
``/v1/scripts/api.crt`` as Rancher served its token-signing key.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.security import ServerKey

_HEADER = {"alg": "EdDSA", "typ": "JWT"}
ISSUER = "corral"
# The longest token: it travels in a URL, within the request line the server accepts. A longer
# one offered is no token of ours, and nothing is decoded from it.
MAX_TOKEN_LENGTH = 16 * 1024


class TokenRefused(Exception):
    """Why a token was not accepted: for the log, never a secret."""


class TokenTooLong(ValueError):
    """What a token would carry does not fit in ``MAX_TOKEN_LENGTH``."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_ENCODED_HEADER = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())


class TokenSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key()

    @classmethod
    def of(cls, server_key: ServerKey) -> TokenSigner:
        return cls(Ed25519PrivateKey.from_private_bytes(server_key.derive("token-signing")))

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: Mapping[str, Any], lifetime: float) -> str:
        """A token of ``claims`` valid for ``lifetime`` seconds, with a unique ``jti``."""
        now = time.time()
        body = {**claims, "iss": ISSUER, "iat": int(now), "exp": now + lifetime,
                "jti": secrets.token_urlsafe(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        signed = f"{_ENCODED_HEADER}.{payload}"
        token = f"{signed}.{_b64(self._key.sign(signed.encode()))}"
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenTooLong(f"a token of {len(token)} characters; at most "
                               f"{MAX_TOKEN_LENGTH} fit in a URL")
        return token

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this key signed and that has not expired."""
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise TokenRefused("not a token")
        header, payload, signature = token.split(".")
        if header != _ENCODED_HEADER:
            raise TokenRefused("not a token of this server")
        try:
            self._public.verify(_unb64(signature), f"{header}.{payload}".encode())
            claims = json.loads(_unb64(payload))
        except (InvalidSignature, binascii.Error, ValueError):
            raise TokenRefused("bad signature") from None
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            raise TokenRefused("not a token of this server")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or expires < time.time():
            raise TokenRefused("expired")
        return claims
