"""Errors shared by server and agent.

Exception tree::

    CorralError                  base; ``code`` is an ErrorCode, ``str()`` is a sentence for a user
    ├── ProtocolError            a websocket frame that is not a valid message
    └── InstructionError         an instruction that failed; travels back to the server in a reply
        ├── HostNotConnected     the target host has no live agent session
        └── InstructionTimeout   no reply arrived in time
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The closed set of codes that replies and close reasons carry."""

    INVALID_MESSAGE = "invalidMessage"
    UNKNOWN_INSTRUCTION = "unknownInstruction"
    INVALID_DATA = "invalidData"
    NOT_FOUND = "notFound"
    CONFLICT = "conflict"
    RUNTIME_ERROR = "runtimeError"
    RUNTIME_UNAVAILABLE = "runtimeUnavailable"
    HOST_NOT_CONNECTED = "hostNotConnected"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class CorralError(Exception):
    """Base of every error Corral raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolError(CorralError):
    """A frame that could not be parsed into a message."""

    code = ErrorCode.INVALID_MESSAGE


class InstructionError(CorralError):
    """An instruction failed; the message is meant for the operator."""

    code = ErrorCode.RUNTIME_ERROR


class HostNotConnected(InstructionError):
    code = ErrorCode.HOST_NOT_CONNECTED


class InstructionTimeout(InstructionError):
    code = ErrorCode.TIMEOUT
