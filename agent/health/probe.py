"""One health probe: a TCP connect, or with a request line an HTTP request whose status line
decides (2xx and 3xx are up, as in Rancher, whose HAProxy checks did the same).

Only the status line is read, so no HTTP library is needed: the request is the check's own
line, a ``Host`` header when it says HTTP/1.1 (which requires one), and ``Connection: close``.
Everything, connecting included, must end within the check's response timeout. A probe never
raises for the container's sake: every failure is a :class:`ProbeResult` with a short reason.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from shared.health import MAX_MESSAGE, HealthCheck

READ_LIMIT = 4096  # bytes of a status line: longer is not HTTP
CLOSE_TIMEOUT = 1.0  # seconds a graceful close may take
_STATUS = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?:[ \t].*)?\r?\n?")


@dataclass(frozen=True)
class ProbeResult:
    """Whether the container answered as a healthy one does, and why not."""

    ok: bool
    message: str | None = None


UP = ProbeResult(True)


def request_bytes(check: HealthCheck) -> bytes:
    """What an HTTP probe sends (``request_line`` is one line of ASCII, shared.health says)."""
    assert check.request_line is not None
    lines = [check.request_line]
    if check.request_line.rstrip().upper().endswith("HTTP/1.1"):
        lines.append(f"Host: {check.address}:{check.port}")
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def judge_status_line(line: bytes) -> ProbeResult:
    """Up for a 2xx or 3xx status line; down with ``HTTP <code>`` or why it is not one."""
    if not line:
        return ProbeResult(False, "connection closed before the status line")
    match = _STATUS.fullmatch(line)
    if match is None:
        return ProbeResult(False, "the answer is not an HTTP status line")
    code = int(match.group(1))
    return UP if 200 <= code < 400 else ProbeResult(False, f"HTTP {code}")


def _describe(exc: OSError) -> str:
    """A few words for a connection error: ``connection refused``, ``no route to host``."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if exc.strerror:  # the system's words: "no route to host", "network is unreachable"
        return exc.strerror.lower()[:MAX_MESSAGE]
    return (str(exc) or type(exc).__name__)[:MAX_MESSAGE]


async def probe(check: HealthCheck) -> ProbeResult:
    """Probe ``check``'s container once; see the module docstring."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.response_timeout_ms / 1000):
            reader, writer = await asyncio.open_connection(check.address, check.port,
                                                           limit=READ_LIMIT)
            return await _exchange(check, reader, writer)
    except TimeoutError:
        return ProbeResult(False, "timed out")
    except OSError as exc:
        return ProbeResult(False, _describe(exc))
    finally:
        if writer is not None:
            await _close(writer)


async def _exchange(check: HealthCheck, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> ProbeResult:
    if check.request_line is None:
        return UP
    writer.write(request_bytes(check))
    await writer.drain()
    try:
        line = await reader.readline()
    except ValueError:  # no end of line within READ_LIMIT bytes
        return ProbeResult(False, "the answer is not an HTTP status line")
    return judge_status_line(line)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the connection, outside the verdict's time: gracefully, or at once when the
    peer does not take what is left of the request."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass  # the peer reset it: closed all the same
