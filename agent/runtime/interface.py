"""The container runtime interface: what the agent asks of a container engine, and its errors.

Exception tree::

    InstructionError (shared.errors)   code RUNTIME_ERROR: the engine answered, with an error
    │                                  (code NOT_FOUND for 404, CONFLICT for 409, TIMEOUT when an
    │                                  answer took longer than the client timeout)
    └── RuntimeUnavailable             code RUNTIME_UNAVAILABLE: the engine cannot be reached
                                       (socket missing, connection refused, permission denied,
                                       no connection in time, TLS handshake failed)

Containers and statistics come back as Corral's own types (``shared.containers.ContainerState``,
``shared.instructions.StatsSample``): Docker's inspect dictionaries stay inside the
implementation, which translates them with ``agent.containers``. Every call blocks: the caller
runs it off the event loop with ``asyncio.to_thread``. Pulls are an exception to the codes
above: every failure to pull an image (unknown image or tag, registry unreachable, credentials
refused) is an InstructionError with code RUNTIME_ERROR naming the image and carrying Docker's
own explanation, so that ``notFound`` keeps meaning "no such container" in instance replies.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.containers import ContainerState
from shared.errors import ErrorCode, InstructionError
from shared.instructions import StatsSample

OnPullProgress = Callable[[str, int | None], None]
"""Called during a pull with its phase (resolving, downloading, extracting, complete) and
overall percentage (None until the layers are known)."""


class RuntimeUnavailable(InstructionError):
    """The container engine could not be reached; the message says where and why."""

    code = ErrorCode.RUNTIME_UNAVAILABLE


@dataclass(frozen=True)
class EngineEndpoint:
    """Where the engine's API listens, for a raw connection of the agent's own (the host's
    Docker socket, relayed to an API client): a unix socket ``path``, or ``host`` and ``port``
    over TCP, with ``tls`` when the engine wants it. ``address`` is safe to print."""

    address: str
    path: str | None = None
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None


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

    def engine_endpoint(self) -> EngineEndpoint:
        """Where to open a raw connection to the engine's API; RuntimeUnavailable when the
        engine is reached in a way the agent cannot relay (ssh, a named pipe)."""
        ...

    def find_container(self, uuid: str) -> ContainerState | None:
        """The state of the container labelled with ``uuid``, or None."""
        ...

    def inspect_container(self, container_id: str) -> ContainerState:
        """The state of a container, by docker id or name (NOT_FOUND if there is none)."""
        ...

    def list_containers(self) -> list[ContainerState]:
        """The states of every container, running or not, managed or not."""
        ...

    def image_present(self, ref: str) -> bool:
        """Whether the engine has the image ``ref`` locally."""
        ...

    def pull(self, ref: str, auth: Mapping[str, Any] | None,
             on_progress: OnPullProgress) -> None:
        """Pull ``ref`` (with ``auth`` = {username, password, serveraddress} if given)."""
        ...

    def create_container(self, params: Mapping[str, Any]) -> str:
        """Create a container from :func:`agent.containers.create_params`; its docker id.

        ``params`` are docker-py's ``create_container`` kwargs, except ``host_config``: the
        kwargs of ``create_host_config``; ``networking_config`` (None or the JSON of
        ``create_networking_config``) names the networks to join at creation.
        """
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

    def stats(self, container_id: str) -> StatsSample:
        """One sample of the container's resource use (takes ~1-2 s)."""
        ...

    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             timestamps: bool) -> ByteStream:
        """The container's output (stdout and stderr), from ``tail`` lines back."""
        ...

    def exec(self, container_id: str, command: list[str], *, tty: bool,
             stdin: bool) -> ExecSession:
        """Run ``command`` in the container, attached."""
        ...

    def events(self, since: float | None) -> EventStream:
        """The engine's container events from ``since`` (a Unix time; None: from now on)."""
        ...


class ByteStream(Protocol):
    """A blocking iterator of output chunks; ``close()`` from any thread ends it."""

    def __iter__(self) -> Iterator[bytes]: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None: ...


class ExecSession(Protocol):
    """A command running in a container, attached: blocking reads and writes."""

    def read(self) -> bytes | None:
        """The next output chunk, or None at the end."""
        ...

    def write(self, data: bytes) -> None: ...

    def close_input(self) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def exit_code(self) -> int | None: ...

    def close(self) -> None: ...


class EventStream(Protocol):
    """A blocking iterator of decoded engine events.

    ``close()`` may be called from any thread: it ends the iteration at once, also for a thread
    blocked waiting for the next event. The iteration also ends when the engine closes the stream
    (a daemon restart); it raises InstructionError when the engine fails.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
