"""Host registration: the install script, the agent wheel, and the token-for-credentials trade.

``POST /v1/register`` with ``Basic registrationToken:<token>`` and ``{"key": <host key>}``
returns agent credentials. The host key (kept in the agent's state dir, stored here only as a
digest) names the host: the same key always reattaches to the same host record, and gets fresh
credentials that replace the old ones.
"""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web

from server.agents import package
from server.agents.install_script import install_script
from server.agents.liveness import AgentState
from server.api.auth import authenticate_registration, registration_token
from server.api.errors import Conflict as ApiConflict
from server.api.errors import NotFound, invalid
from server.api.handlers import SERVICES
from server.api.throttle import CredentialKind
from server.api.validation import check_body
from server.api.web import json_response, origin, read_json
from server.engine.ipam import PoolExhausted
from server.engine.overlay_state import lease_host_subnet
from server.resources.hosts import HOST
from server.resources.volumes import create_local_pool
from server.security import digest, new_access_key, new_secret_key
from server.store import Condition, Conflict, NewRecord, Query, Record, Store, Transaction
from shared.ids import format_id
from shared.protocol import AGENT_PATH

log = logging.getLogger(__name__)
_HOST_KEY = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


def _public_origin(request: web.Request) -> str:
    return request.app[SERVICES].settings.public_url or origin(request)


async def _check_token(request: web.Request, token: str) -> None:
    """The token in a script URL is its credential: throttled and counted like a login."""
    services = request.app[SERVICES]
    await services.auth_guard.attempt_for(request, token,
                                          CredentialKind.REGISTRATION_TOKEN,
                                          lambda: registration_token(services.store, token))


async def script(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    await _check_token(request, token)
    url = f"{_public_origin(request)}/v1/scripts/{token}"
    body = install_script(url, f"{url}/{package.wheel_name()}")
    return web.Response(text=body, content_type="text/x-shellscript")


async def wheel(request: web.Request) -> web.Response:
    await _check_token(request, request.match_info["token"])
    if request.match_info["filename"] != package.wheel_name():
        raise NotFound(f"this server serves {package.wheel_name()}")
    return web.Response(body=package.build_wheel(), content_type="application/octet-stream")


async def _host_for_key(store: Store, project_id: int, key_hash: str) -> Record:
    host = await store.get_by_lookup("host", key_hash)
    if host is None:

        async def new_host(tx: Transaction) -> Record:
            created = await tx.create(NewRecord(
                type="host", kind="docker", state="registering", project_id=project_id,
                lookup_key=key_hash, data={"agentState": AgentState.REGISTERING.value}))
            await create_local_pool(tx, created)
            # Its subnet of the managed network, in the transaction that makes it: two hosts
            # registering at once never get the same one. A full pool leaves it without one,
            # which the host then shows as its network error.
            with contextlib.suppress(PoolExhausted):
                await lease_host_subnet(tx, created)
            return created

        try:
            return await store.transact(new_host)
        except Conflict:  # the same host registering twice at once
            host = await store.get_by_lookup("host", key_hash)
            assert host is not None
    if host.project_id != project_id:
        raise ApiConflict("this host is registered in another environment; remove it there "
                          "before registering it here")
    return host


async def _issue_key(store: Store, host: Record) -> tuple[str, str]:
    access, secret = new_access_key(), new_secret_key()
    keys = await store.list(Query(types=["agentApiKey"], limit=1, conditions=[
        Condition("hostId", "eq", host.id, "int"), Condition("state", "eq", "active")]))
    if keys:
        await store.update(keys[0].id, {"lookup_key": access}, {"secretHash": digest(secret)})
    else:
        await store.create(NewRecord(type="agentApiKey", kind="agentApiKey", state="active",
                                     project_id=host.project_id, lookup_key=access,
                                     data={"hostId": host.id, "secretHash": digest(secret)}))
    return access, secret


async def register(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    header = request.headers.get("Authorization")
    principal = await services.auth_guard.attempt_for(
        request, header, CredentialKind.REGISTRATION_TOKEN,
        lambda: authenticate_registration(services.store, header))
    body = check_body(await read_json(request))
    key = body.get("key")
    if not isinstance(key, str) or not _HOST_KEY.match(key):
        raise invalid("InvalidFormat", "key", "key must be 32 to 256 letters, digits, - or _")
    assert principal.project_id is not None
    host = await _host_for_key(services.store, principal.project_id, digest(key))
    access, secret = await _issue_key(services.store, host)
    host_id = format_id(HOST.id_prefix, host.id)
    log.info("host %s registered from %s", host_id, request.remote)
    # The agent reached us at this origin to register: its websocket goes to the same place.
    ws_origin = origin(request).replace("http", "ws", 1)
    return json_response({"type": "agentRegistration", "hostId": host_id,
                          "accessKey": access, "secretKey": secret,
                          "agentUrl": f"{ws_origin}{AGENT_PATH}"})
