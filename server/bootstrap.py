"""Start-up: make sure there is an active admin account with an API key, in one transaction,
and that every environment has its default networks.

On the first start that is the admin account, the Default environment (with its default
networks), its registration token and the admin API key. A later start only makes sure an
admin key given in the environment (``CORRAL_ADMIN_*``) works: it belongs to the active
admin, is active and has the given secret. Should no active admin be left (a store from
before the last admin was protected), a new one is made, in the old admin's Default
environment if it is still there. All of it commits together or not at all, and a second
run changes nothing, so a start killed half-way, or a second server starting at the same
moment, leaves a usable store. Environments made before networks existed get theirs
afterwards, one transaction each (``network_defaults``).
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass

from server.config import Settings
from server.resources.credentials import (
    api_key_record,
    registration_commands,
    registration_token_record,
    registration_url,
)
from server.resources.network_defaults import ensure_defaults, ensure_every_environment
from server.security import ServerKey, digest, new_access_key, new_secret_key
from server.store import Condition, Conflict, NewRecord, Query, Record, Store, Transaction
from server.store.interface import Reader
from shared.ids import format_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstStart:
    """What to tell the operator once. ``secret_key`` is None when it came from the env."""

    access_key: str
    secret_key: str | None
    api_url: str
    command: str


def public_origin(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = _primary_address()
    return f"http://{host}:{settings.port}"


def _primary_address() -> str:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return "127.0.0.1"
    for info in infos:
        address = str(info[4][0])
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


async def _admin(store: Reader) -> Record | None:
    found = await store.list(Query(types=["account"], limit=1, conditions=[
        Condition("kind", "eq", "admin"), Condition("state", "eq", "active")]))
    return found[0] if found else None


async def default_token(store: Store, server_key: ServerKey) -> str | None:
    """The token of the first active registration token of the admin's default environment."""
    admin = await _admin(store)
    project_id = admin.data.get("defaultProjectId") if admin is not None else None
    if not isinstance(project_id, int):
        return None
    tokens = await store.list(Query(types=["registrationToken"], project_id=project_id,
                                    limit=1, conditions=[Condition("state", "eq", "active")]))
    return server_key.registration_token(tokens[0].uuid) if tokens else None


@dataclass(frozen=True)
class _Keys:
    """The admin key to make sure of, and the registration token a new environment gets."""

    access: str
    secret: str
    from_env: bool
    token_uuid: str
    token: str


async def bootstrap(store: Store, settings: Settings, server_key: ServerKey) -> FirstStart | None:
    """Make sure of the admin and its key; what to tell the operator when an admin was made."""
    if settings.admin_access_key and settings.admin_secret_key:
        access, secret, from_env = (settings.admin_access_key,
                                    settings.admin_secret_key.value, True)
    else:
        access, secret, from_env = new_access_key(), new_secret_key(), False
    token_uuid = str(uuid.uuid4())
    keys = _Keys(access, secret, from_env, token_uuid,
                 server_key.registration_token(token_uuid))
    for attempt in range(_ATTEMPTS):
        try:
            made = await store.transact(lambda tx: _ensure_admin(tx, keys))
            break
        except Conflict:
            # Another server bootstrapped the same store meanwhile: look again.
            if attempt == _ATTEMPTS - 1:
                raise
    # Environments made before networks existed get theirs (a new one has them already).
    await ensure_every_environment(store)
    if made is None:
        return None
    origin = public_origin(settings)
    token = server_key.registration_token(made)
    command = registration_commands(registration_url(origin, token))["command"]
    return FirstStart(access_key=access, secret_key=None if from_env else secret,
                      api_url=f"{origin}/v1", command=command)


_ATTEMPTS = 3


async def _ensure_admin(tx: Transaction, keys: _Keys) -> str | None:
    """When an admin account had to be made, the uuid of its environment's registration
    token; None when there was one (then only the env key was seen to)."""
    admin = await _admin(tx)
    if admin is not None:
        if keys.from_env:
            await _ensure_key(tx, admin, keys)
        return None
    earlier = await tx.list(Query(types=["account"], limit=1,
                                  conditions=[Condition("kind", "eq", "admin")]))
    admin = await tx.create(NewRecord(type="account", kind="admin", state="active",
                                      name="admin"))
    project = await _former_default(tx)
    if project is None:
        project = await tx.create(NewRecord(type="project", kind="project", state="active",
                                            name="Default", data={"orchestration": "cattle"}))
        await ensure_defaults(tx, project)
    tokens = await tx.list(Query(types=["registrationToken"], project_id=project.id, limit=1,
                                 conditions=[Condition("state", "eq", "active")]))
    token = tokens[0] if tokens else await tx.create(
        registration_token_record(project.id, keys.token_uuid, keys.token))
    await tx.update(admin.id, {}, {"defaultProjectId": project.id})
    await _ensure_key(tx, admin, keys)
    if earlier:
        log.warning("no active admin account was left: created admin account %s",
                    format_id("1a", admin.id))
    else:
        log.info("first start: created the admin account, the Default environment and keys")
    return token.uuid


async def _former_default(tx: Transaction) -> Record | None:
    """The Default environment of an earlier admin, if it is still there."""
    for account in await tx.list(Query(types=["account"], limit=100, conditions=[
            Condition("kind", "eq", "admin")])):
        number = account.data.get("defaultProjectId")
        project = await tx.get(number) if isinstance(number, int) else None
        if project is not None and project.type == "project" and project.removed is None:
            return project
    return None


async def _ensure_key(tx: Transaction, admin: Record, keys: _Keys) -> None:
    """The admin key exists, is the admin's, is active and has the given secret."""
    existing = await tx.get_by_lookup("apiKey", keys.access)
    if existing is None:
        await tx.create(api_key_record(admin.id, keys.access, keys.secret, "admin"))
        if keys.from_env:
            log.info("added the admin API key given in the environment")
        return
    wanted = {"state": "active", "removed": None, "transitioning": "no",
              "transitioning_message": None, "account_id": admin.id}
    if existing.data.get("secretHash") == digest(keys.secret) and \
            all(getattr(existing, name) == value for name, value in wanted.items()):
        return
    await tx.update(existing.id, wanted, {"secretHash": digest(keys.secret)})
    log.info("updated the admin API key given in the environment")


def banner(first: FirstStart) -> str:
    secret = first.secret_key if first.secret_key is not None else "(from CORRAL_ADMIN_SECRET_KEY)"
    return "\n".join([
        "",
        "Corral is ready. This is shown once; keep the secret key safe.",
        f"  API:         {first.api_url}",
        f"  Access key:  {first.access_key}",
        f"  Secret key:  {secret}",
        "  Register a host (run on the host):",
        f"    {first.command}",
        "",
    ])
