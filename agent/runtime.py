"""The container runtime: the agent's only door to the Docker engine.

This is the only agent module that imports ``docker`` (and the ``requests``/``urllib3`` stack under
it). Everything the engine raises is translated here into Corral errors, so callers see only:

Exception tree::

    InstructionError (shared.errors)   code RUNTIME_ERROR: the engine answered, with an error
    │                                  (code NOT_FOUND for 404, CONFLICT for 409, TIMEOUT when an
    │                                  answer took longer than the client timeout)
    └── RuntimeUnavailable             code RUNTIME_UNAVAILABLE: the engine cannot be reached
                                       (socket missing, connection refused, permission denied,
                                       no connection in time, TLS handshake failed)

Every call blocks: the caller runs it off the event loop with ``asyncio.to_thread``.

The docker client is created lazily, on the first call, because docker-py asks the engine for its
API version while constructing a client; building a :class:`DockerRuntime` therefore succeeds while
the daemon is down, and every call retries the connection until the daemon is back.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import docker
import docker.errors
import docker.transport.unixconn
import docker.utils
import requests.exceptions

from shared.errors import ErrorCode, InstructionError

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "DEFAULT_TIMEOUT",
    "ContainerRuntime",
    "DockerRuntime",
    "RuntimeUnavailable",
]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60.0
"""Seconds docker-py waits for a connection and for each read of an answer."""

_TRANSLATED = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
_PASSWORD_IN_URL = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", re.I)


class RuntimeUnavailable(InstructionError):
    """The container engine could not be reached; the message says where and why."""

    code = ErrorCode.RUNTIME_UNAVAILABLE


class ContainerRuntime(Protocol):
    """What the agent needs from a container engine. Every method blocks."""

    def version(self) -> dict[str, Any]:
        """The engine's version (``docker version``: Version, ApiVersion, Os, Arch, ...)."""
        ...

    def info(self) -> dict[str, Any]:
        """The engine's system information (``docker info``)."""
        ...

    def close(self) -> None:
        """Release connections; further calls fail. Safe to call twice."""
        ...


class DockerRuntime:
    """A :class:`ContainerRuntime` backed by a Docker engine through docker-py."""

    def __init__(self, client_kwargs: Mapping[str, Any], *, address: str, timeout: float) -> None:
        """Prefer :meth:`from_env`; ``client_kwargs`` go to ``docker.DockerClient`` unchanged."""
        self.address = address
        """Where the engine is, safe to print (passwords removed)."""
        self._client_kwargs = dict(client_kwargs)
        self._timeout = timeout
        self._client: Any = None
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
    ) -> DockerRuntime:
        """Configure from DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH in ``environ``.

        Same meaning as ``docker.DockerClient.from_env(environment=...)``, with two differences
        that keep configuration in the caller's hands: ``os.environ`` is never consulted (docker-py
        falls back to it when the mapping is empty), and Docker CLI contexts are ignored.
        Nothing is contacted here. Raises ``ValueError`` when the settings are unusable (bad
        DOCKER_HOST, missing TLS files).
        """
        environment = _docker_environment(environ)
        host = environment["DOCKER_HOST"]
        try:
            client_kwargs = docker.utils.kwargs_from_env(environment=environment)
            docker.utils.parse_host(host, False, tls=bool(client_kwargs.get("tls")))
        except docker.errors.DockerException as exc:
            raise ValueError(
                f"The Docker settings are unusable: {_redact(str(exc)).rstrip('.')}. "
                "Check DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH."
            ) from exc
        return cls(client_kwargs, address=_redact(host), timeout=timeout)

    def version(self) -> dict[str, Any]:
        return self._call(lambda client: client.version())

    def info(self) -> dict[str, Any]:
        return self._call(lambda client: client.info())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"DockerRuntime(address={self.address!r})"

    def _call(self, operation: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one docker-py call, translating its failures into Corral errors."""
        try:
            answer = operation(self._connected_client())
        except _TRANSLATED as exc:
            raise _translate(exc, self.address, self._timeout) from exc
        if not isinstance(answer, dict):
            raise InstructionError(
                f"Docker engine at {self.address} sent an answer that is not a JSON object."
            )
        return answer

    def _connected_client(self) -> Any:
        """The docker client, created on first use (creating it contacts the engine)."""
        with self._lock:
            if self._closed:
                raise RuntimeUnavailable(
                    f"The connection to the Docker engine at {self.address} is closed; "
                    "the agent is shutting down."
                )
            if self._client is None:
                self._client = docker.DockerClient(timeout=self._timeout, **self._client_kwargs)
            return self._client


def _docker_environment(environ: Mapping[str, str]) -> dict[str, str]:
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


def _translate(exc: BaseException, address: str, timeout: float) -> InstructionError:
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
    detail = _redact(str(exc)).rstrip(".") or type(exc).__name__
    return InstructionError(f"Docker engine at {address} failed: {detail}.")


def _api_error(exc: Any, address: str) -> InstructionError:
    """An error answer from the engine; keeps the engine's explanation, which names the object."""
    status: int | None = exc.status_code
    explanation = _redact(str(exc.explanation or exc)).rstrip(".")
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


def _redact(text: str) -> str:
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
