"""Rancher-style resource ids such as ``1h3``: a prefix naming the kind, then the row number.

Rows of every type share one number sequence, so a prefix only decorates the number;
parsing checks that the prefix is the one the caller expects.
"""

from __future__ import annotations

import re
from typing import NewType

ResourceId = NewType("ResourceId", str)
"""The public form of an id, e.g. ``1h3``."""

_ID_RE = re.compile(r"^(1[a-z]+)([1-9][0-9]{0,17})$")
# Row numbers are 32-bit in the store (PostgreSQL's ``integer``): a larger one names nothing.
MAX_ROW = 2**31 - 1


def format_id(prefix: str, number: int) -> ResourceId:
    """Return the public id for row ``number`` of a type whose prefix is ``prefix``."""
    return ResourceId(f"{prefix}{number}")


def parse_id(value: str, prefix: str) -> int | None:
    """Return the row number of ``value`` if it is a well-formed id with ``prefix``, else None."""
    match = _ID_RE.fullmatch(value)
    if match is None or match.group(1) != prefix:
        return None
    number = int(match.group(2))
    return number if number <= MAX_ROW else None


def prefix_for(base_type: str) -> str:
    """Rancher's rule: ``1``, the first letter of the base type, then its capitals, lowercased."""
    capitals = "".join(ch for ch in base_type[1:] if ch.isupper())
    return "1" + (base_type[0] + capitals).lower()
