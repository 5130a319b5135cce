"""Typed reads of the JSON objects inside messages, for the ``parse`` functions of
``shared.instructions`` and ``shared.containers``. Pure.

A :class:`Fields` wraps one object and knows where it sits (``data.container.ports[1]``), so a
refusal is a sentence naming the exact field. What a refusal raises depends on who reads: the
agent must answer a bad request with ``invalidData`` (:func:`invalid_data`), while a bad reply
or report is a protocol fault (:class:`shared.errors.ProtocolError`).

Missing keys and JSON null read the same for every optional field: an older peer may leave a
key out where a newer one sends null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from shared.errors import CorralError, ErrorCode, InstructionError, ProtocolError

T = TypeVar("T")
Refuse = Callable[[str], CorralError]
JsonObject = dict[str, Any]


def invalid_data(message: str) -> CorralError:
    """A request the agent cannot carry out as sent: answered with ``invalidData``."""
    return InstructionError(message, ErrorCode.INVALID_DATA)


def protocol_error(message: str) -> CorralError:
    return ProtocolError(message)


class Fields:
    """One JSON object being read; every getter refuses a value of the wrong type."""

    def __init__(self, obj: object, where: str, refuse: Refuse) -> None:
        if not isinstance(obj, Mapping):
            raise refuse(f"{where} must be a JSON object")
        self.obj: Mapping[str, Any] = obj
        self.where = where
        self.refuse = refuse

    def _fail(self, key: str, what: str) -> CorralError:
        return self.refuse(f"{self.where}.{key} must be {what}")

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def text(self, key: str) -> str:
        """A required, non-empty string."""
        value = self.obj.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string or null")
        return value

    def integer(self, key: str) -> int:
        value = self.obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.integer(key)

    def opt_number(self, key: str, *, minimum: float | None = None) -> float | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or (
                minimum is not None and value < minimum):
            raise self._fail(key, "a number" if minimum is None else f"a number of at least "
                             f"{minimum:g}")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings; missing or null is the empty list."""
        value = self.obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def opt_texts(self, key: str) -> tuple[str, ...] | None:
        return None if self.obj.get(key) is None else self.texts(key)

    def text_map(self, key: str) -> dict[str, str]:
        """A map of strings to strings; missing or null is the empty map."""
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._fail(key, "a map of strings to strings")
        return dict(value)

    def json(self, key: str) -> JsonObject:
        """Any JSON object (free-form content such as host facts); missing is empty."""
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._fail(key, "a JSON object")
        return dict(value)

    def nested(self, key: str, parse: Callable[[Fields], T]) -> T:
        return parse(Fields(self.obj.get(key), f"{self.where}.{key}", self.refuse))

    def opt_nested(self, key: str, parse: Callable[[Fields], T]) -> T | None:
        return None if self.obj.get(key) is None else self.nested(key, parse)

    def nested_list(self, key: str, parse: Callable[[Fields], T]) -> tuple[T, ...]:
        """A list of objects; missing or null is the empty list."""
        value = self.obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return tuple(parse(Fields(item, f"{self.where}.{key}[{i}]", self.refuse))
                     for i, item in enumerate(value))


@dataclass(frozen=True)
class Applied:
    """The reply of an instruction that sends a whole desired state (``dns.apply``,
    ``health.apply``): the version the agent now runs."""

    version: str

    @classmethod
    def parse(cls, obj: object, where: str = "reply data",
              refuse: Refuse = protocol_error) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("version"))

    def dump(self) -> JsonObject:
        return {"version": self.version}


def bounded(f: Fields, key: str, default: int | None, maximum: int) -> int | None:
    """An optional positive integer of at most ``maximum``; ``default`` when absent."""
    value = f.opt_integer(key)
    if value is None:
        return default
    if not 0 < value <= maximum:
        raise f.refuse(f"{f.where}.{key} must be between 1 and {maximum}")
    return value


def bounded_or(f: Fields, key: str, default: int, maximum: int) -> int:
    """:func:`bounded` with a default that is a number: never None."""
    value = bounded(f, key, default, maximum)
    return default if value is None else value
