"""Docker's failures as Corral errors: the translation at the edge of the runtime.

Messages are sentences an operator can act on; passwords in engine URLs are replaced by ``***``.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

import docker.errors
import docker.transport.unixconn
import requests.exceptions

from agent.runtime.interface import RuntimeUnavailable
from shared.errors import ErrorCode, InstructionError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60.0
"""Seconds docker-py waits for a connection and for each read of an answer."""

TRANSLATED = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
_PASSWORD_IN_URL = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", re.I)


def registry_of(ref: str) -> str:
    """The registry an image reference pulls from (``docker.io`` for Docker Hub names)."""
    repository, _ = docker.utils.parse_repository_tag(ref)
    try:
        registry, _ = docker.auth.resolve_repository_name(repository)
    except docker.errors.DockerException:
        return "docker.io"
    return str(registry)


def api_explanation(exc: InstructionError) -> str:
    """Docker's own words inside a message built by :func:`_api_error`."""
    cause = exc.__cause__
    if isinstance(cause, docker.errors.APIError):
        return redact(str(cause.explanation or cause)).rstrip(".")
    return str(exc).rstrip(".")


_AUTH_REFUSED = ("no basic auth credentials", "unauthorized", "authentication required",
                 "incorrect username or password")


def pull_error(ref: str, registry: str, explanation: str, had_auth: bool) -> InstructionError:
    """Why ``ref`` could not be pulled, naming the image, the registry and Docker's reason."""
    explanation = redact(explanation).rstrip(".")
    if any(marker in explanation.lower() for marker in _AUTH_REFUSED):
        hint = ("the credentials given for it were refused" if had_auth else
                "no credentials were given for it; add a registry with its credentials")
        return InstructionError(f"Registry {registry} refused to let this host pull image "
                                f"{ref}: {hint} (Docker said: {explanation}).")
    return InstructionError(f"Could not pull image {ref}: {explanation}.")


def docker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The DOCKER_* settings from ``environ``, always with a DOCKER_HOST.

    A non-empty result matters: docker-py reads ``os.environ`` when handed an empty mapping.
    """
    environment = {
        name: environ[name]
        for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        if name in environ
    }
    if not environment.get("DOCKER_HOST"):
        environment["DOCKER_HOST"] = DEFAULT_DOCKER_HOST
    tls_wanted = environment.get("DOCKER_TLS_VERIFY", "") != "" or environment.get(
        "DOCKER_CERT_PATH"
    )
    if tls_wanted and not environment.get("DOCKER_CERT_PATH"):
        # docker-py would look in ~/.docker through os.path.expanduser, i.e. os.environ["HOME"].
        home = environ.get("HOME")
        if not home:
            raise ValueError(
                "DOCKER_TLS_VERIFY is set but DOCKER_CERT_PATH is not: set DOCKER_CERT_PATH to "
                "the directory holding ca.pem, cert.pem and key.pem."
            )
        environment["DOCKER_CERT_PATH"] = f"{home.rstrip('/')}/.docker"
    return environment


def translate(exc: BaseException, address: str, timeout: float) -> InstructionError:
    """Turn a docker-py, requests or socket failure into a Corral error."""
    chain = list(_causes(exc))
    if any(isinstance(cause, requests.exceptions.ReadTimeout) for cause in chain):
        return InstructionError(
            f"Docker engine at {address} did not answer within {timeout:g} s.", ErrorCode.TIMEOUT
        )
    reason = _unreachable_reason(chain, timeout)
    if reason is not None:
        return RuntimeUnavailable(f"Docker engine at {address} is not reachable: {reason}.")
    if isinstance(exc, docker.errors.APIError):
        return _api_error(exc, address)
    detail = redact(str(exc)).rstrip(".") or type(exc).__name__
    return InstructionError(f"Docker engine at {address} failed: {detail}.")


def _api_error(exc: Any, address: str) -> InstructionError:
    """An error answer from the engine; keeps the engine's explanation, which names the object."""
    status: int | None = exc.status_code
    explanation = redact(str(exc.explanation or exc)).rstrip(".")
    code = {404: ErrorCode.NOT_FOUND, 409: ErrorCode.CONFLICT}.get(
        status or 0, ErrorCode.RUNTIME_ERROR
    )
    return InstructionError(
        f"Docker engine at {address} refused the request: {explanation} (HTTP {status}).", code
    )


def _unreachable_reason(chain: list[BaseException], timeout: float) -> str | None:
    """Why no connection could be made, or None if a connection was made."""
    for cause in chain:
        match cause:
            case FileNotFoundError():
                return "its socket does not exist (is the Docker daemon running?)"
            case PermissionError():
                return "permission denied (run the agent as root or in the docker group)"
            case ConnectionRefusedError():
                return "connection refused"
            case socket.gaierror():
                return "its host name does not resolve"
            case ssl.SSLError():
                return "the TLS handshake failed (check DOCKER_CERT_PATH and DOCKER_TLS_VERIFY)"
            case requests.exceptions.ConnectTimeout() | TimeoutError():
                return f"no connection within {timeout:g} s"
            case ConnectionResetError() | ConnectionAbortedError():
                return "the connection was closed by the other side"
    if any(isinstance(cause, requests.exceptions.ConnectionError) for cause in chain):
        return "the connection failed"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from or while handling, without looping."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def redact(text: str) -> str:
    """Hide passwords in URLs (``ssh://user:secret@host`` becomes ``ssh://user:***@host``)."""
    return _PASSWORD_IN_URL.sub(r"\g<prefix>:***@", text)


def _close_unix_socket_on_connect_failure() -> None:
    """Patch docker-py so a failed unix-socket connect closes its socket.

    docker-py 7 leaves the socket open when ``connect()`` raises (docker/docker-py#3356, open),
    so every call while the daemon is down ends in a ResourceWarning, an error under our test
    settings. The replacement is the upstream method plus the ``close()``.
    """
    connection_class: Any = docker.transport.unixconn.UnixHTTPConnection
    if getattr(connection_class.connect, "_closes_on_failure", False):
        return

    def connect(self: Any) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    connect._closes_on_failure = True  # type: ignore[attr-defined]
    connection_class.connect = connect


_close_unix_socket_on_connect_failure()
