"""The Docker engine behind the runtime interface, through docker-py: the only place of the
agent that imports ``docker``. Docker's answers about containers leave it as Corral's types
(``ContainerState``, ``StatsSample``), translated by the pure functions of ``agent.containers``.

The docker client is created lazily, on the first call, because docker-py asks the engine for its
API version while constructing a client; building a :class:`DockerRuntime` therefore succeeds while
the daemon is down, and every call retries the connection until the daemon is back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import docker
import docker.auth
import docker.errors
import docker.transport.unixconn
import docker.utils

from agent.containers import UUID_LABEL, PullProgress, state_summary, stats_summary
from agent.runtime.docker_endpoint import engine_endpoint
from agent.runtime.docker_errors import (
    DEFAULT_TIMEOUT,
    TRANSLATED,
    api_explanation,
    docker_environment,
    pull_error,
    redact,
    registry_of,
    translate,
)
from agent.runtime.docker_streams import DockerExec, DockerLogStream
from agent.runtime.interface import (
    ByteStream,
    EngineEndpoint,
    EventStream,
    ExecSession,
    OnPullProgress,
    RuntimeUnavailable,
)
from shared.containers import ContainerState
from shared.errors import ErrorCode, InstructionError
from shared.instructions import StatsSample

T = TypeVar("T")


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
        environment = docker_environment(environ)
        host = environment["DOCKER_HOST"]
        try:
            client_kwargs = docker.utils.kwargs_from_env(environment=environment)
            docker.utils.parse_host(host, False, tls=bool(client_kwargs.get("tls")))
        except docker.errors.DockerException as exc:
            raise ValueError(
                f"The Docker settings are unusable: {redact(str(exc)).rstrip('.')}. "
                "Check DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH."
            ) from exc
        return cls(client_kwargs, address=redact(host), timeout=timeout)

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

    def engine_endpoint(self) -> EngineEndpoint:
        return engine_endpoint(str(self._client_kwargs.get("base_url") or ""),
                               self._client_kwargs.get("tls"))

    def find_container(self, uuid: str) -> ContainerState | None:
        found = self._api(lambda api: api.containers(
            all=True, filters={"label": f"{UUID_LABEL}={uuid}"}))
        # Never more than one unless someone copied the label by hand; the oldest is ours.
        for summary in sorted(found, key=lambda c: c.get("Created", 0)):
            with contextlib.suppress(_Gone):
                return self._inspect_or_gone(summary["Id"])
        return None

    def inspect_container(self, container_id: str) -> ContainerState:
        return state_summary(self._call(lambda client: client.api.inspect_container(
            container_id)))

    def list_containers(self) -> list[ContainerState]:
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
        registry = registry_of(ref)
        auth_config = {k: v for k, v in (auth or {}).items() if v is not None} or None
        progress = PullProgress(on_progress)
        try:
            events = self._api(lambda api: api.pull(ref, stream=True, decode=True,
                                                    auth_config=auth_config))
        except InstructionError as exc:
            if exc.code in (ErrorCode.RUNTIME_UNAVAILABLE, ErrorCode.TIMEOUT):
                raise
            raise pull_error(ref, registry, api_explanation(exc), auth_config is not None
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
            raise pull_error(ref, registry, error, auth_config is not None)
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
            # ``networking_config`` is already the JSON create_networking_config would build
            # (docker-py sends it as it is), so it goes on with the other kwargs.
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

    def stats(self, container_id: str) -> StatsSample:
        return stats_summary(self._api(lambda api: api.stats(container_id, stream=False)))

    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             timestamps: bool) -> ByteStream:
        raw = self._api(lambda api: api.logs(container_id, stdout=True, stderr=True,
                                             stream=True, follow=follow, timestamps=timestamps,
                                             tail="all" if tail is None else tail))
        return DockerLogStream(raw, self.address, self._timeout)

    def exec(self, container_id: str, command: list[str], *, tty: bool,
             stdin: bool) -> ExecSession:
        def start(api: Any) -> DockerExec:
            created = api.exec_create(container_id, command, stdin=stdin, tty=tty)
            sock = api.exec_start(created["Id"], tty=tty, socket=True)
            return DockerExec(created["Id"], sock, tty, api, self._translated)

        return self._api(start)

    def events(self, since: float | None) -> EventStream:
        # Docker reads "seconds.nanoseconds"; a float's repr could be "1e9" or lose the padding.
        start = None if since is None else f"{since:.9f}"
        raw = self._api(lambda api: api.events(since=start, filters={"type": "container"},
                                               decode=True))
        stream = _DockerEventStream(raw, self)
        with self._lock:
            closed = self._closed
            if not closed:
                self._streams.add(stream)
        if closed:  # close() ran while the stream was opening
            stream.close()
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
        except TRANSLATED as exc:
            raise translate(exc, self.address, self._timeout) from exc

    def _inspect_or_gone(self, container_id: str) -> ContainerState:
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
            if isinstance(exc, TRANSLATED):
                raise translate(exc, self._runtime.address, self._runtime._timeout) from exc
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
        with contextlib.suppress(*TRANSLATED, AttributeError):
            self._raw.close()
        self._runtime._forget(self)

    def _release(self) -> None:
        with contextlib.suppress(*TRANSLATED, AttributeError):
            self._raw._response.close()
        self._runtime._forget(self)


