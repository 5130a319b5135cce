"""The operation of the ``registering`` step of accounts and credentials: activation.

Nothing has to happen outside the store before such a record may be used, so the operation
only says the step reached its target (``active``); the runner records it. The state says
what is left, so an activation cut off by a restart is carried out on the next start.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.caller import Caller
from server.engine.runner import Operation, Outcome
from server.store import Record


async def activate(caller: Caller, record: Record) -> Outcome:
    """Registration done: the step's target, ``active``."""
    return Outcome()


OPERATIONS: Mapping[str, Operation] = {"create": activate}
