"""Subscribers: one connection's (or one in-process consumer's) side of the broadcast queues.

Delivery states and what moves them (checked: an illegal step raises
:class:`~trio_ws.LocalProtocolError` naming both states)::

    IDLE     --a write left bytes pending, or something was queued-->  DRAINING
    DRAINING --its send task wrote everything and the buffer is empty-->  IDLE
    IDLE     --removed (disconnect, takeover, too slow)-------------->  CLOSED
    DRAINING --removed---------------------------------------------->  CLOSED

An IDLE subscriber has nothing waiting: the flusher writes to it directly. A DRAINING one
is owned by its one send task (for a :class:`ChannelSubscriber`, by its consumer), and new
messages go into its bounded buffer. A CLOSED one gets nothing and is in no queue.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import trio

from ._queue_model import SubscriberBuffer
from .protocol._errors import LocalProtocolError

if TYPE_CHECKING:
    from ._connection import WebSocketConnection

__all__ = ["ChannelSubscriber", "Subscriber", "SubscriberState"]


class SubscriberState(enum.Enum):
    IDLE = "idle"
    DRAINING = "draining"
    CLOSED = "closed"


IDLE = SubscriberState.IDLE
DRAINING = SubscriberState.DRAINING
CLOSED = SubscriberState.CLOSED

_TRANSITIONS = frozenset({(IDLE, DRAINING), (DRAINING, IDLE), (IDLE, CLOSED), (DRAINING, CLOSED)})


class Subscriber:
    """One connection's side of the broadcast: its name, buffer and delivery state.

    Create it with :meth:`BroadcastHub.subscriber <trio_ws.BroadcastHub.subscriber>`, one
    per connection.

    Attributes:
        connection: the connection the messages are written to (``None`` for a channel).
        name: the name shown in presence lists (``members``); ``""`` shows nothing.
    """

    __slots__ = ("_buffer", "_state", "_variant", "_waiter", "connection", "name")

    def __init__(
        self,
        connection: WebSocketConnection | None,
        name: str,
        capacity: int,
        max_bytes: int | None = None,
    ) -> None:
        self.connection = connection
        self.name = name
        self._buffer = SubscriberBuffer(capacity, max_bytes)
        self._state = IDLE
        self._waiter: trio.Event | None = None
        deflate = connection.protocol.deflate if connection is not None else None
        # 0: uncompressed frames; else the window size of the shareable compressed frames.
        self._variant = (
            deflate.server_max_window_bits
            if deflate is not None and deflate.server_no_context_takeover
            else 0
        )

    def __repr__(self) -> str:
        where = f"#{self.connection.id}" if self.connection is not None else "channel"
        return f"<{type(self).__name__} {self.name!r} {where} {self._state.value}>"

    @property
    def state(self) -> SubscriberState:
        return self._state

    def _move(self, new: SubscriberState) -> None:
        if (self._state, new) not in _TRANSITIONS:
            raise LocalProtocolError(
                f"a subscriber cannot go from {self._state.value} to {new.value}"
            )
        self._state = new

    @property
    def subscriptions(self) -> list[str]:
        """Names of the queues subscribed to, in subscription order."""
        return [getattr(q, "name", str(q)) for q in self._buffer.lanes]

    @property
    def buffered(self) -> int:
        """Messages waiting in this subscriber's buffer."""
        return self._buffer.size

    @property
    def buffered_bytes(self) -> int:
        """Bytes (of frames) waiting in this subscriber's buffer."""
        return self._buffer.bytes

    @property
    def removed(self) -> bool:
        """Whether the subscriber was removed (disconnect, takeover, or too slow)."""
        return self._state is CLOSED


class ChannelSubscriber(Subscriber):
    """An in-process consumer's subscriber: always DRAINING, its consumer takes the rounds."""

    __slots__ = ("overflowed",)

    def __init__(self, name: str, capacity: int, max_bytes: int | None = None) -> None:
        super().__init__(None, name, capacity, max_bytes)
        self._move(DRAINING)
        self.overflowed = False
        """Removed by a ``disconnect`` queue for being too slow."""

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def _wait(self) -> None:
        if self._waiter is None:
            self._waiter = trio.Event()
        await self._waiter.wait()
