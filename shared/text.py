"""Text every part of Corral can hold: a ``str`` may carry lone surrogates (JSON's
``"\\ud800"``), which UTF-8 (the database, the wire, the log) cannot encode."""

from __future__ import annotations


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
