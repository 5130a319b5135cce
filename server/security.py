"""Keys, secrets and tokens: generation, hashing, and the server's own key in the data dir.

API secret keys are random and stored only as SHA-256 digests (a slow hash adds nothing to
256-bit random secrets). Registration tokens are derived with HMAC from the server key and the
token's uuid, so the server can show a token again without storing it; only its digest is
stored, for look-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

# Rancher's keys avoid characters that are easy to misread or that need quoting.
_KEY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_SECRET_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows in a repr, a log line or a traceback."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def new_access_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(20))


def new_secret_key() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def digest(value: str) -> str:
    """The stored form of a secret: hex SHA-256. Any string has one, even one holding lone
    surrogates (JSON ``"\\ud800"``, undecodable header bytes): a bad guess is a 401, not a 500."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def matches(value: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(value), stored_digest)


class ServerKey:
    """The server's own 32-byte key, kept in ``DATA_DIR/server.key`` (mode 0600)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServerKey:
        path = data_dir / "server.key"
        if path.exists():
            key = path.read_bytes()
            if len(key) != 32:
                raise RuntimeError(f"{path} is damaged: expected 32 bytes, found {len(key)}")
            return cls(key)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, purpose: str, value: str) -> str:
        """``value`` encrypted at rest (Fernet: AES-CBC with HMAC), under a key per purpose."""
        return self._fernet(purpose).encrypt(value.encode()).decode()

    def decrypt(self, purpose: str, token: str) -> str:
        try:
            return self._fernet(purpose).decrypt(token.encode()).decode()
        except InvalidToken:
            raise RuntimeError(f"a stored {purpose} cannot be decrypted with this server's key "
                               "(was server.key replaced?)") from None

    def _fernet(self, purpose: str) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self.derive("fernet:" + purpose)))

    def registration_token(self, token_uuid: str) -> str:
        """The token string of a registration token record: 32 characters of [a-z2-7]."""
        mac = self.derive("registrationToken:" + token_uuid)[:20]
        return base64.b32encode(mac).decode().lower()
