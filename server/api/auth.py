"""Authentication: HTTP Basic credentials to a Principal, for each kind of caller.

API keys (``apiKey``) authenticate REST callers; agent keys (``agentApiKey``) authenticate
only agent websockets; registration tokens authenticate only registration. A key of one kind
never works where another is expected.
"""

from __future__ import annotations

import base64
import time

from server.api.context import Principal, PrincipalKind
from server.api.errors import Unauthorized
from server.security import digest, matches
from server.store import Record, Store

REGISTRATION_USER = "registrationToken"


def basic_credentials(header: str | None) -> tuple[str, str]:
    """Split an ``Authorization: Basic ...`` header; raise Unauthorized if absent or malformed."""
    if not header:
        raise Unauthorized("authentication required: send an API key with HTTP Basic auth")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("unsupported authorization scheme: use HTTP Basic with an API key")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
        raise Unauthorized("malformed Basic credentials") from None
    access, sep, secret = decoded.partition(":")
    if not sep or not access:
        raise Unauthorized("malformed Basic credentials")
    return access, secret


async def _active_key(store: Store, type_: str, access: str, secret: str) -> Record:
    record = await store.get_by_lookup(type_, access)
    stored = record.data.get("secretHash") if record is not None else None
    if record is None or not isinstance(stored, str) or not matches(secret, stored) \
            or record.state != "active":
        raise Unauthorized("invalid API key: wrong access key or secret, or the key is inactive")
    return record


class KeyCache:
    """API keys verified in the last few seconds, so that a busy client does not cost two
    look-ups per request. Any change to a key, an account or an environment in this process
    clears it; the short life bounds what another server's change can take to be seen."""

    def __init__(self, seconds: float = 5.0) -> None:
        self._seconds = seconds
        self._entries: dict[str, tuple[str, Principal, float]] = {}

    def get(self, access: str, secret: str) -> Principal | None:
        entry = self._entries.get(access)
        if entry is None or entry[2] < time.monotonic() or not matches(secret, entry[0]):
            return None
        return entry[1]

    def put(self, access: str, secret: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[access] = (digest(secret), principal, time.monotonic() + self._seconds)

    def on_change(self, record: Record) -> None:
        if record.type in ("apiKey", "account", "project"):
            self._entries.clear()


async def authenticate_api(store: Store, header: str | None,
                           cache: KeyCache | None = None) -> Principal:
    access, secret = basic_credentials(header)
    if cache is not None and (known := cache.get(access, secret)) is not None:
        return known
    key = await _active_key(store, "apiKey", access, secret)
    account = await store.get(key.account_id) if key.account_id is not None else None
    if account is None or account.state != "active":
        raise Unauthorized("the account of this API key is not active")
    kind = PrincipalKind.ADMIN if account.kind == "admin" else PrincipalKind.USER
    default = account.data.get("defaultProjectId")
    principal = Principal(kind=kind, account_id=account.id, credential_id=key.id,
                          default_project_id=default if isinstance(default, int) else None)
    if cache is not None:
        cache.put(access, secret, principal)
    return principal


async def authenticate_agent(store: Store, header: str | None) -> Principal:
    access, secret = basic_credentials(header)
    key = await _active_key(store, "agentApiKey", access, secret)
    host_id = key.data.get("hostId")
    if not isinstance(host_id, int):
        raise Unauthorized("this agent key is not bound to a host")
    return Principal(kind=PrincipalKind.AGENT, account_id=None, credential_id=key.id,
                     project_id=key.project_id, host_id=host_id)


async def registration_token(store: Store, token: str) -> Record:
    """The active registration token record for ``token``; Unauthorized otherwise."""
    record = await store.get_by_lookup("registrationToken", digest(token)) if token else None
    if record is None or record.state != "active":
        raise Unauthorized("invalid registration token: it is wrong, revoked or removed")
    return record


async def authenticate_registration(store: Store, header: str | None) -> Principal:
    user, token = basic_credentials(header)
    if user != REGISTRATION_USER:
        raise Unauthorized(f"registration needs Basic credentials {REGISTRATION_USER}:<token>")
    record = await registration_token(store, token)
    return Principal(kind=PrincipalKind.REGISTRATION, account_id=None, credential_id=record.id,
                     project_id=record.project_id)
