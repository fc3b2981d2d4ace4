"""Services: the handlers registered per message type, their field checks and profiles."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .protocol._errors import WebSocketError

if TYPE_CHECKING:
    from ._clients import Client

__all__ = ["FieldTypes", "Service", "ServiceError", "ServiceStatistics", "field_error"]

Service = Callable[["Client", Any], Awaitable[None]]
FieldTypes = Mapping[str, type | tuple[type, ...]]


class ServiceError(WebSocketError):
    """Raise from a service to answer the client with ``error`` / ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define
class ServiceEntry:
    handler: Service
    fields: FieldTypes
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    recent: deque[float] = attrs.field(factory=lambda: deque(maxlen=1024))
    """Durations of the latest calls, for percentiles (the Push Framework profiler)."""

    def record(self, elapsed: float) -> None:
        self.calls += 1
        self.seconds += elapsed
        self.recent.append(elapsed)

    def statistics(self) -> ServiceStatistics:
        recent = sorted(self.recent)
        p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else 0.0
        mean = self.seconds / self.calls if self.calls else 0.0
        return ServiceStatistics(self.calls, self.errors, mean, p99)


@attrs.frozen
class ServiceStatistics:
    """Calls and time spent in one service."""

    calls: int
    errors: int
    mean_seconds: float
    p99_seconds: float
    """Over the latest 1,024 calls."""


def field_error(message: dict[str, Any], fields: FieldTypes) -> str | None:
    """What is wrong with ``message`` against ``fields`` (``None``: nothing)."""
    for name, types in fields.items():
        value = message.get(name)
        # bool is an int in Python, not in JSON: refuse true for an int field.
        if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in _as_tuple(types)
        ):
            if value is None and name not in message:
                return f"missing field {name!r}"
            return f"field {name!r} must be {_type_names(types)}"
    return None


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES.get(t, t.__name__) for t in _as_tuple(types))
