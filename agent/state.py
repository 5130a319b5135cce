"""The agent's state dir: the host key that names this host, and the credentials it holds.

Both files are readable by root alone. Losing the host key makes the host register as new.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST_KEY_FILE = "host-key"
CREDENTIALS_FILE = "credentials.json"


class StateError(Exception):
    """The state dir cannot be read or written; the message says which file and why."""


@dataclass(frozen=True)
class Credentials:
    """What registration gave this agent, plus the options it was registered with."""

    server_url: str
    agent_url: str
    host_id: str
    access_key: str
    secret_key: str = field(repr=False)
    agent_ip: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state dir {self.path}: {exc.strerror}") from None

    def host_key(self) -> str:
        """This host's key, made on first use."""
        path = self.path / HOST_KEY_FILE
        try:
            if path.exists():
                key = path.read_text().strip()
                if key:
                    return key
            key = secrets.token_hex(32)
            write_private(path, key + "\n")
            return key
        except OSError as exc:
            raise StateError(f"cannot read or write {path}: {exc.strerror}") from None

    def load(self) -> Credentials | None:
        path = self.path / CREDENTIALS_FILE
        try:
            if not path.exists():
                return None
            return Credentials(**json.loads(path.read_text()))
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, TypeError):
            raise StateError(f"{path} is damaged: register again with the URL") from None

    def save(self, credentials: Credentials) -> None:
        path = self.path / CREDENTIALS_FILE
        try:
            write_private(path, json.dumps(asdict(credentials), indent=1) + "\n")
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror}") from None
