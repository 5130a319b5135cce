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

Every call blocks: the caller runs it off the event loop with ``asyncio.to_thread``. Pulls are
the exception to the translation above: every failure to pull an image (unknown image or tag,
registry unreachable, credentials refused) is an InstructionError with code RUNTIME_ERROR naming
the image and carrying Docker's own explanation, so that ``notFound`` keeps meaning "no such
container" in instance replies.

The docker client is created lazily, on the first call, because docker-py asks the engine for its
API version while constructing a client; building a :class:`DockerRuntime` therefore succeeds while
the daemon is down, and every call retries the connection until the daemon is back.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import docker
import docker.auth
import docker.errors
import docker.transport.unixconn
import docker.utils
import requests.exceptions

from agent.containers import UUID_LABEL, PullProgress
from shared.errors import ErrorCode, InstructionError

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "DEFAULT_TIMEOUT",
    "ContainerRuntime",
    "DockerRuntime",
    "EventStream",
    "OnPullProgress",
    "RuntimeUnavailable",
]

T = TypeVar("T")
OnPullProgress = Callable[[str, int | None], None]
"""Called during a pull with its phase (resolving, downloading, extracting, complete) and
overall percentage (None until the layers are known)."""

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
        """Release connections and end open event streams; further calls fail. Safe twice."""
        ...

    def find_container(self, uuid: str) -> dict[str, Any] | None:
        """The inspect answer of the container labelled with ``uuid``, or None."""
        ...

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        """``docker inspect`` of a container (NOT_FOUND if there is none)."""
        ...

    def list_containers(self) -> list[dict[str, Any]]:
        """The inspect answers of every container, running or not, managed or not."""
        ...

    def image_present(self, ref: str) -> bool:
        """Whether the engine has the image ``ref`` locally."""
        ...

    def pull(self, ref: str, auth: Mapping[str, Any] | None,
             on_progress: OnPullProgress) -> None:
        """Pull ``ref`` (with ``auth`` = {username, password, serveraddress} if given)."""
        ...

    def create_container(self, params: Mapping[str, Any]) -> str:
        """Create a container from :func:`agent.containers.create_params`; its docker id."""
        ...

    def start(self, container_id: str) -> None:
        """Start a container (nothing happens if it runs)."""
        ...

    def stop(self, container_id: str, timeout: float) -> None:
        """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        ...

    def restart(self, container_id: str, timeout: float) -> None:
        """Stop (as :meth:`stop`) and start a container."""
        ...

    def kill(self, container_id: str) -> None:
        """SIGKILL a running container (CONFLICT if it does not run)."""
        ...

    def unpause(self, container_id: str) -> None:
        """Resume a paused container."""
        ...

    def remove_container(self, container_id: str, volumes: bool, force: bool) -> None:
        """Remove a container; ``volumes`` also removes its anonymous volumes, ``force`` kills
        it first if it runs."""
        ...

    def remove_volume(self, name: str) -> None:
        """Remove a volume (NOT_FOUND if there is none, CONFLICT if a container uses it)."""
        ...

    def volume(self, name: str) -> dict[str, Any] | None:
        """``docker volume inspect``, or None if there is no such volume."""
        ...

    def events(self, since: float | None) -> EventStream:
        """The engine's container events from ``since`` (a Unix time; None: from now on)."""
        ...


class EventStream(Protocol):
    """A blocking iterator of decoded engine events.

    ``close()`` may be called from any thread: it ends the iteration at once, also for a thread
    blocked waiting for the next event. The iteration also ends when the engine closes the stream
    (a daemon restart); it raises InstructionError when the engine fails.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


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
        self._streams: set[_DockerEventStream] = set()

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
            streams, self._streams = list(self._streams), set()
        for stream in streams:
            stream.close()
        if client is not None:
            client.close()

    def find_container(self, uuid: str) -> dict[str, Any] | None:
        found = self._api(lambda api: api.containers(
            all=True, filters={"label": f"{UUID_LABEL}={uuid}"}))
        # Never more than one unless someone copied the label by hand; the oldest is ours.
        for summary in sorted(found, key=lambda c: c.get("Created", 0)):
            with contextlib.suppress(_Gone):
                return self._inspect_or_gone(summary["Id"])
        return None

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return self._call(lambda client: client.api.inspect_container(container_id))

    def list_containers(self) -> list[dict[str, Any]]:
        listed = self._api(lambda api: api.containers(all=True))
        containers = []
        for summary in listed:
            with contextlib.suppress(_Gone):  # removed since the listing
                containers.append(self._inspect_or_gone(summary["Id"]))
        return containers

    def image_present(self, ref: str) -> bool:
        try:
            self._api(lambda api: api.inspect_image(ref))
        except InstructionError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return False
            raise
        return True

    def pull(self, ref: str, auth: Mapping[str, Any] | None,
             on_progress: OnPullProgress) -> None:
        registry = _registry(ref)
        auth_config = {k: v for k, v in (auth or {}).items() if v is not None} or None
        progress = PullProgress(on_progress)
        try:
            events = self._api(lambda api: api.pull(ref, stream=True, decode=True,
                                                    auth_config=auth_config))
        except InstructionError as exc:
            if exc.code in (ErrorCode.RUNTIME_UNAVAILABLE, ErrorCode.TIMEOUT):
                raise
            raise _pull_error(ref, registry, _api_explanation(exc), auth_config is not None
                              ) from exc

        def consume() -> str | None:
            """Feed the events to ``progress``; the error the stream ends with, if any."""
            for event in events:
                error = event.get("error") or (event.get("errorDetail") or {}).get("message")
                if error:
                    return str(error)
                progress.feed(event)
            return None

        error = self._translated(consume)
        if error is not None:
            raise _pull_error(ref, registry, error, auth_config is not None)
        progress.finish()

    def create_container(self, params: Mapping[str, Any]) -> str:
        kwargs = dict(params)
        host_config_kwargs = kwargs.pop("host_config", None) or {}

        def create(api: Any) -> str:
            try:
                host_config = api.create_host_config(**host_config_kwargs)
            except (docker.errors.InvalidArgument, docker.errors.InvalidVersion,
                    ValueError, TypeError) as exc:
                raise InstructionError(f"The container settings are not valid for Docker: "
                                       f"{exc}.", ErrorCode.INVALID_DATA) from exc
            # use_config_proxy=False: never copy proxies from the agent user's ~/.docker.
            answer = api.create_container(host_config=host_config, use_config_proxy=False,
                                          **kwargs)
            return str(answer["Id"])

        return self._api(create)

    def start(self, container_id: str) -> None:
        self._api(lambda api: api.start(container_id))

    def stop(self, container_id: str, timeout: float) -> None:
        self._api(lambda api: api.stop(container_id, timeout=int(timeout)))

    def restart(self, container_id: str, timeout: float) -> None:
        self._api(lambda api: api.restart(container_id, timeout=int(timeout)))

    def kill(self, container_id: str) -> None:
        self._api(lambda api: api.kill(container_id))

    def unpause(self, container_id: str) -> None:
        self._api(lambda api: api.unpause(container_id))

    def remove_container(self, container_id: str, volumes: bool, force: bool) -> None:
        self._api(lambda api: api.remove_container(container_id, v=volumes, force=force))

    def remove_volume(self, name: str) -> None:
        self._api(lambda api: api.remove_volume(name))

    def volume(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(lambda client: client.api.inspect_volume(name))
        except InstructionError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return None
            raise

    def events(self, since: float | None) -> EventStream:
        # Docker reads "seconds.nanoseconds"; a float's repr could be "1e9" or lose the padding.
        start = None if since is None else f"{since:.9f}"
        raw = self._api(lambda api: api.events(since=start, filters={"type": "container"},
                                               decode=True))
        stream = _DockerEventStream(raw, self)
        with self._lock:
            if self._closed:
                stream.close()
            else:
                self._streams.add(stream)
        return stream

    def __repr__(self) -> str:
        return f"DockerRuntime(address={self.address!r})"

    def _call(self, operation: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one docker-py call that answers a JSON object, translating its failures."""
        answer = self._translated(lambda: operation(self._connected_client()))
        if not isinstance(answer, dict):
            raise InstructionError(
                f"Docker engine at {self.address} sent an answer that is not a JSON object."
            )
        return answer

    def _api(self, operation: Callable[[Any], T]) -> T:
        """Run one call on the low-level API client (``client.api``), translating failures."""
        return self._translated(lambda: operation(self._connected_client().api))

    def _translated(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except _TRANSLATED as exc:
            raise _translate(exc, self.address, self._timeout) from exc

    def _inspect_or_gone(self, container_id: str) -> dict[str, Any]:
        try:
            return self.inspect_container(container_id)
        except InstructionError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise _Gone from exc
            raise

    def _forget(self, stream: _DockerEventStream) -> None:
        with self._lock:
            self._streams.discard(stream)

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


class _Gone(Exception):
    """A container vanished between being listed and being inspected."""


class _DockerEventStream:
    """An :class:`EventStream` over docker-py's ``CancellableStream``.

    docker-py's ``close()`` shuts the socket down, which ends a ``next()`` blocked in another
    thread (docker-py turns the socket error into StopIteration). The HTTP response is released
    by the reading thread when it sees the end, never under its feet.
    """

    def __init__(self, raw: Any, runtime: DockerRuntime) -> None:
        self._raw = raw
        self._runtime = runtime
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            self._release()
            raise StopIteration
        try:
            event: dict[str, Any] = next(self._raw)
        except StopIteration:
            self._release()
            raise
        except Exception as exc:
            self._release()
            if self._closed:  # closed while reading: whatever broke, the stream just ends
                raise StopIteration from None
            if isinstance(exc, _TRANSLATED):
                raise _translate(exc, self._runtime.address, self._runtime._timeout) from exc
            if isinstance(exc, ValueError):  # a frame that is not JSON
                raise InstructionError(f"Docker engine at {self._runtime.address} sent an "
                                       f"event that is not JSON: {exc}.") from exc
            raise
        return event

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # docker-py's close() trips over missing attributes once the response is gone.
        with contextlib.suppress(*_TRANSLATED, AttributeError):
            self._raw.close()
        self._runtime._forget(self)

    def _release(self) -> None:
        with contextlib.suppress(*_TRANSLATED, AttributeError):
            self._raw._response.close()
        self._runtime._forget(self)


def _registry(ref: str) -> str:
    """The registry an image reference pulls from (``docker.io`` for Docker Hub names)."""
    repository, _ = docker.utils.parse_repository_tag(ref)
    try:
        registry, _ = docker.auth.resolve_repository_name(repository)
    except docker.errors.DockerException:
        return "docker.io"
    return str(registry)


def _api_explanation(exc: InstructionError) -> str:
    """Docker's own words inside a message built by :func:`_api_error`."""
    cause = exc.__cause__
    if isinstance(cause, docker.errors.APIError):
        return _redact(str(cause.explanation or cause)).rstrip(".")
    return str(exc).rstrip(".")


_AUTH_REFUSED = ("no basic auth credentials", "unauthorized", "authentication required",
                 "incorrect username or password")


def _pull_error(ref: str, registry: str, explanation: str, had_auth: bool) -> InstructionError:
    """Why ``ref`` could not be pulled, naming the image, the registry and Docker's reason."""
    explanation = _redact(explanation).rstrip(".")
    if any(marker in explanation.lower() for marker in _AUTH_REFUSED):
        hint = ("the credentials given for it were refused" if had_auth else
                "no credentials were given for it; add a registry with its credentials")
        return InstructionError(f"Registry {registry} refused to let this host pull image "
                                f"{ref}: {hint} (Docker said: {explanation}).")
    return InstructionError(f"Could not pull image {ref}: {explanation}.")


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
