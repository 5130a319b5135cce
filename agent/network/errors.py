"""The overlay's errors. ``ValueError`` is for settings that can never work (see ``config``).

Exception tree::

    InstructionError (shared.errors)   code RUNTIME_ERROR
    └── OverlayError                   the host cannot be made to match: no interface holds the
        │                              underlay address, or it did not converge
        └── CommandFailed              one command failed; names it and quotes its stderr
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from shared.errors import InstructionError

_MAX_DETAIL = 300


class OverlayError(InstructionError):
    """The host's network could not be made to match the overlay's settings."""


class CommandFailed(OverlayError):
    """A command of the plan (or one reading the host's state) failed."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.detail = one_line(stderr)
        status = "timed out" if returncode is None else f"failed (exit {returncode})"
        super().__init__(f"Command `{shlex.join(self.argv)}` {status}: "
                         f"{self.detail or 'it printed no error message'}.")


def one_line(stderr: str) -> str:
    """A command's error output as one line, without usage hints (iptables' "Try `...`")."""
    lines = [line.strip() for line in stderr.splitlines()]
    kept = [line for line in lines if line and not line.startswith("Try `")]
    text = "; ".join(kept).rstrip(".")
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."
