"""Trade a registration token for agent credentials (``POST /v1/register``).

A rejected token is final; a server that cannot be reached is retried for a while.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.logs import log

RETRY_SECONDS = 60.0


class RegistrationError(Exception):
    """Registration failed for good; the message is the one line to show."""


@dataclass(frozen=True)
class RegistrationUrl:
    origin: str
    token: str


@dataclass(frozen=True)
class Registered:
    host_id: str
    access_key: str
    secret_key: str
    agent_url: str


def parse_registration_url(url: str) -> RegistrationUrl:
    """Split ``http(s)://SERVER[:PORT]/v1/scripts/TOKEN``; ValueError otherwise."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"not a registration URL: bad port in {parts.netloc!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(segments) != 3 \
            or segments[:2] != ["v1", "scripts"] \
            or not re.fullmatch(r"[A-Za-z0-9]+", segments[2]):
        raise ValueError("not a registration URL: expected http(s)://SERVER:8080/v1/scripts/TOKEN")
    return RegistrationUrl(origin=f"{parts.scheme}://{parts.netloc}", token=segments[2])


def _post(url: RegistrationUrl, host_key: str) -> Registered:
    auth = base64.b64encode(f"registrationToken:{url.token}".encode()).decode()
    request = urllib.request.Request(
        f"{url.origin}/v1/register", data=json.dumps({"key": host_key}).encode(),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json",
                 "Accept": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message")
        except ValueError:
            message = None
        if exc.code == 401:
            raise RegistrationError("the registration token was rejected: it is wrong, revoked "
                                    "or removed; copy the command again from Corral") from None
        raise RegistrationError(f"registration refused ({exc.code}): "
                                f"{message or exc.reason}") from None
    try:
        return Registered(host_id=body["hostId"], access_key=body["accessKey"],
                          secret_key=body["secretKey"], agent_url=body["agentUrl"])
    except (KeyError, TypeError):
        raise RegistrationError(f"{url.origin} did not answer like a Corral server") from None


async def register(url: RegistrationUrl, host_key: str,
                   retry_seconds: float = RETRY_SECONDS) -> Registered:
    """Register, retrying while the server cannot be reached, at most ``retry_seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_seconds
    delay = 1.0
    while True:
        try:
            return await asyncio.to_thread(_post, url, host_key)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if loop.time() + delay > deadline:
                raise RegistrationError(f"cannot reach {url.origin}: {reason}") from None
            log.warning("cannot reach %s (%s); retrying in %.0f s", url.origin, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
