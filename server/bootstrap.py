"""First start: the admin account, the Default environment, its registration token and the
admin API key. Later starts only make sure an admin key given in the environment works."""

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
from server.security import ServerKey, digest, new_access_key, new_secret_key
from server.store import Condition, NewRecord, Query, Record, Store, Transaction

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


async def _admin(store: Store) -> Record | None:
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


async def bootstrap(store: Store, settings: Settings, server_key: ServerKey) -> FirstStart | None:
    admin = await _admin(store)
    if admin is not None:
        await _ensure_env_key(store, settings, admin)
        return None
    token_uuid = str(uuid.uuid4())
    token = server_key.registration_token(token_uuid)
    if settings.admin_access_key and settings.admin_secret_key:
        access, secret, shown = (settings.admin_access_key, settings.admin_secret_key.value,
                                 None)
    else:
        access, secret = new_access_key(), new_secret_key()
        shown = secret

    async def first_records(tx: Transaction) -> None:
        # All or nothing: a start killed half-way leaves no admin without a key.
        admin = await tx.create(NewRecord(type="account", kind="admin", state="active",
                                          name="admin"))
        project = await tx.create(NewRecord(type="project", kind="project", state="active",
                                            name="Default", data={"orchestration": "cattle"}))
        await tx.update(admin.id, {}, {"defaultProjectId": project.id})
        await tx.create(registration_token_record(project.id, token_uuid, token))
        await tx.create(api_key_record(admin.id, access, secret, "admin"))

    await store.transact(first_records)
    origin = public_origin(settings)
    command = registration_commands(registration_url(origin, token))["command"]
    log.info("first start: created the admin account, the Default environment and keys")
    return FirstStart(access_key=access, secret_key=shown, api_url=f"{origin}/v1",
                      command=command)


async def _ensure_env_key(store: Store, settings: Settings, admin: Record) -> None:
    access, secret = settings.admin_access_key, settings.admin_secret_key
    if not access or secret is None:
        return
    existing = await store.get_by_lookup("apiKey", access)
    if existing is None:
        await store.create(api_key_record(admin.id, access, secret.value, "admin"))
        log.info("added the admin API key given in the environment")
    elif existing.data.get("secretHash") != digest(secret.value) or existing.state != "active":
        await store.update(existing.id, {"state": "active", "removed": None},
                           {"secretHash": digest(secret.value)})
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
