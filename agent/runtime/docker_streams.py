"""Attached Docker streams: a container's log output and an exec session's socket."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import docker.utils.socket as docker_socket

from agent.runtime.docker_errors import TRANSLATED, translate
from shared.errors import InstructionError

CHUNK = 32 * 1024


class DockerLogStream:
    """docker-py's log stream (already demultiplexed into payload chunks), closable from any
    thread."""

    def __init__(self, raw: Any, address: str, timeout: float) -> None:
        self._raw = raw
        self._iter = iter(raw)
        self._address = address
        self._timeout = timeout
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return bytes(next(self._iter))
        except StopIteration:
            raise
        except TRANSLATED as exc:
            if self._closed:
                raise StopIteration from None
            raise translate(exc, self._address, self._timeout) from exc

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(*TRANSLATED, AttributeError):
            self._raw.close()


class DockerExec:
    """An exec session on its hijacked socket. Without a tty Docker multiplexes stdout and
    stderr in 8-byte-headed frames; with one the bytes come as they are."""

    def __init__(self, exec_id: str, sock: Any, tty: bool, api: Any,
                 translated: Callable[[Callable[[], Any]], Any]) -> None:
        self._id = exec_id
        self._sock = sock
        self._raw: socket.socket = getattr(sock, "_sock", sock)
        self._tty = tty
        self._api = api
        self._translated = translated
        self._write_lock = threading.Lock()
        self._closed = False

    def read(self) -> bytes | None:
        try:
            if self._tty:
                data = docker_socket.read(self._sock, CHUNK)
                return bytes(data) if data else None
            header = docker_socket.next_frame_header(self._sock)
            if header[1] <= 0:
                return None
            return bytes(docker_socket.read_exactly(self._sock, header[1]))
        except (OSError, ValueError, docker_socket.SocketError):
            return None  # the socket ended, or was closed under a blocked read

    def write(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self._raw.sendall(data)
            except OSError as exc:
                raise InstructionError(f"the command no longer reads its input: {exc}") \
                    from None

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)

    def resize(self, cols: int, rows: int) -> None:
        if self._tty:
            self._translated(lambda: self._api.exec_resize(self._id, height=rows, width=cols))

    def exit_code(self) -> int | None:
        info = self._translated(lambda: self._api.exec_inspect(self._id))
        code = info.get("ExitCode") if isinstance(info, dict) else None
        return int(code) if isinstance(code, int) else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
