"""``open_session()``: a logged-in client of the demo protocol that reconnects and resumes.

Theory of operation
-------------------
A :class:`Session` holds what must outlive one WebSocket connection: the name, the
subscriptions (per queue the ``epoch`` and the last ``seq`` handed on), the buffers the user
reads, and the reconnection policy. Its nursery owns one task, ``_run``, that loops over
connections (docs/protocol.md section 9):

1. connect (``trio_ws.connect``) and log in; ``name_taken`` is retried on the same
   connection a few times (the server may not yet have seen the old connection end);
2. publish the connection as the session's *link*, then, in a task of the link's own
   nursery, resume every subscription with ``since`` (the last seq seen) and ``epoch``,
   while the link's reader hands what arrives to the requests and subscriptions;
3. when the connection ends: fail the requests that were waiting on it (they may or may
   not have been carried out), decide whether the end is final (a close code that says
   "don't come back", a refused login) and otherwise wait (exponential backoff with
   jitter, bounded) and go back to 1. The backoff starts again once a connection has
   logged in and resumed every subscription.

Requests and replies. The server answers one client's requests in order (section 2), and a
reply names what it answers by its ``type`` (and ``group``): each connection keeps the
requests in flight oldest first; a reply goes to the oldest request waiting for that type
and group, an ``error`` to the oldest request not yet answered. A request the server
answers only when it fails (``publish``, ``routed``) is followed by an application
``ping``: its ``pong`` says the request succeeded, unless an ``error`` came first. A
request that times out stays in the list, so the replies after it still find their owners.

Subscriptions. Each one counts the last seq it handed on (in the epoch it counts in);
what arrives at or below it is a duplicate and is dropped; a ``gap`` (or a hole the server
did not announce, which the protocol rules out but a client cannot) becomes a
:class:`~trio_ws.QueueGap` item; a ``subscribed`` with another epoch than the one counted
in (the server lost its history: a restart with the memory broker, or Redis lost its
data) becomes a :class:`HistoryLost` item, after which the count starts again at 0 and the
server replays the new history. So what the user reads is, per queue, every seq once and
in order, or an item saying which ones will never come. A buffer the user does not read
is bounded: past ``max_buffer`` items, new messages become a gap item instead.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import attrs
import trio

from ._broadcast import QueueGap
from ._client import HandshakeFailed, connect
from ._connection import ConnectionClosed, WebSocketConnection
from .protocol._errors import CloseCode, WebSocketError

__all__ = [
    "DEFAULT_FATAL_CLOSE_CODES",
    "Backoff",
    "ConnectionLost",
    "HistoryLost",
    "LoginFailed",
    "ReconnectFailed",
    "Received",
    "RequestFailed",
    "Session",
    "SessionClosed",
    "SessionError",
    "SessionRefused",
    "SessionState",
    "SessionStatistics",
    "Subscription",
    "SubscriptionItem",
    "open_session",
]

log = logging.getLogger("trio_ws.client")

DEFAULT_FATAL_CLOSE_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,  # 1002: we broke the protocol; again would do the same
        CloseCode.UNSUPPORTED_DATA,  # 1003
        CloseCode.INVALID_DATA,  # 1007: we sent text that is not UTF-8
        CloseCode.POLICY_VIOLATION,  # 1008: a takeover, the fifth failed login, no login
        CloseCode.MESSAGE_TOO_BIG,  # 1009: we sent a message over the server's limit
        CloseCode.MANDATORY_EXTENSION,  # 1010
    }
)
"""Close codes, received from the server, after which a session does not reconnect: each
says that coming back would be refused again or would repeat what got us closed. 1008 in
particular is how a server hands a name to a new login (a takeover): reconnecting would
take it back, and the two clients would evict each other for ever. Every other end (1001
shutdown, 1006 a lost connection, 1011, 1012, 1013 a slow reader, ...) is retried."""

MAX_IN_FLIGHT = 10_000
"""Requests in flight on one connection (those given up on included) beyond which the
session takes the connection for dead and reconnects."""

# HTTP answers to the opening handshake that another attempt would get again.
_FATAL_STATUSES = frozenset({400, 401, 403, 404, 405, 426})

# A login the server refuses for a reason that another attempt would not change.
_FATAL_LOGIN_CODES = frozenset({"bad_name", "unauthorized", "bad_message"})

# What ends one connection attempt, to be tried again after the backoff.
_TRANSIENT_ERRORS = (
    OSError,
    HandshakeFailed,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)

# Errors that say "try again": the resume of a subscription that gets one reconnects.
_TRANSIENT_CODES = frozenset({"broker_unavailable", "rate_limited"})

# The reply each request of the demo protocol gets ("" : none unless it fails).
_REPLIES = {
    ("echo", None): "echo",
    ("who", None): "who",
    ("ping", None): "pong",
    ("routed", None): "",
    ("grouped", "publish"): "",
    ("grouped", "members"): "members",
}

# Managed by the session itself: subscriptions are resumed, so they go through subscribe().
_MANAGED = frozenset({("login", None), ("grouped", "subscribe"), ("grouped", "unsubscribe")})


# ---------------------------------------------------------------------------- errors


class SessionError(WebSocketError):
    """The root of the errors a :class:`Session` raises."""


class LoginFailed(SessionError):
    """The server refused the login for good; ``code`` is its error code (``bad_name``,
    ``unauthorized``, or ``name_taken`` when the name stayed taken)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"login refused ({code}): {message}")
        self.code = code
        self.message = message


class RequestFailed(SessionError):
    """The server answered a request with an ``error``; ``code`` says why (section 6)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(SessionError):
    """The connection ended before the request's reply came: it may or may not have been
    carried out. The session reconnects meanwhile (unless reconnecting is off)."""


class SessionRefused(SessionError):
    """The server closed the connection with a code that says not to come back (see
    :data:`DEFAULT_FATAL_CLOSE_CODES`), or refused the handshake with such a status."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class ReconnectFailed(SessionError):
    """Reconnecting was given up after ``attempts`` attempts in a row (the last failure is
    the ``__cause__``)."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"gave up reconnecting after {attempts} failed attempts")
        self.attempts = attempts


class SessionClosed(SessionError):
    """The session has ended; if it ended because of an error, that is the ``__cause__``."""


# ---------------------------------------------------------------------------- records


@attrs.frozen
class Backoff:
    """How a session waits between connection attempts: exponential, bounded, jittered.

    The ``n``-th wait since the last good connection (from 0) is
    ``min(maximum, initial * factor ** n)``, reduced by a random fraction of up to
    ``jitter`` of it, so that many clients that lost the same server do not all come back
    at the same instant. A connection is good once it logged in and resumed every
    subscription; that resets the count. After ``max_attempts`` failed attempts in a row
    the session gives up with :class:`ReconnectFailed`.
    """

    initial: float = attrs.field(default=0.5)
    """Seconds before the first retry."""
    maximum: float = attrs.field(default=10.0)
    """The longest wait, in seconds."""
    factor: float = attrs.field(default=2.0)
    """How much each wait grows over the one before."""
    jitter: float = attrs.field(default=0.5)
    """The largest fraction (0 to 1) taken off a wait at random."""
    max_attempts: int | None = attrs.field(default=None)
    """Failed attempts in a row before giving up (the first connection included);
    ``None``: never give up."""

    def __attrs_post_init__(self) -> None:
        if not (self.initial > 0 and math.isfinite(self.initial)):
            raise ValueError(f"initial must be a positive number of seconds: {self.initial!r}")
        if not (self.maximum >= self.initial and math.isfinite(self.maximum)):
            raise ValueError(f"maximum must be finite and >= initial: {self.maximum!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be at least 1: {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1: {self.jitter!r}")
        if self.max_attempts is not None and (
            type(self.max_attempts) is not int or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be a positive int or None: {self.max_attempts!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th failure in a row (counted from 0)."""
        # factor ** attempt overflows for large attempts: cap the exponent first.
        steps = math.log(self.maximum / self.initial, self.factor) if self.factor > 1 else 0
        base = (
            self.maximum
            if attempt > steps
            else min(self.maximum, self.initial * self.factor**attempt)
        )
        return base * (1 - self.jitter * (rng or random).random())


@attrs.frozen
class Received:
    """A message of a queue, handed on once, in seq order."""

    queue: str
    """The group (``"stream"`` for the ticker)."""
    seq: int
    message: dict[str, Any]
    """The message as the server sent it (``type``, ``seq``, ``text``/``data``, ...)."""


@attrs.frozen
class HistoryLost:
    """The server lost the queue's history (its epoch changed): what followed ``last_seq``
    of ``previous_epoch`` will never come. Numbering starts again in ``epoch``: the kept
    messages of the new history follow (with a gap for those no longer kept)."""

    queue: str
    last_seq: int
    """The last seq received in the old history."""
    previous_epoch: str | None
    epoch: str


SubscriptionItem: TypeAlias = Received | QueueGap | HistoryLost
"""What a :class:`Subscription` hands out."""


class SessionState(enum.Enum):
    """Where a session is: CONNECTING (no link, trying or waiting to try), CONNECTED
    (logged in), CLOSED (ended, for good)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@attrs.frozen
class SessionStatistics:
    """Counters of a :class:`Session` since it opened."""

    state: SessionState
    connections: int
    """Connections that logged in (the first one included)."""
    attempts: int
    """Connection attempts made, successful or not."""
    duplicates: int
    """Queue messages dropped because their seq had been handed on already."""
    gaps: int
    """Gap items handed to subscriptions (announced by the server, or buffers overflowing)."""
    dropped: int
    """Messages dropped because a buffer (a subscription's or the inbox) was full."""


# ---------------------------------------------------------------------------- internals


@attrs.define(eq=False)
class _Pending:
    """A request in flight on one connection."""

    reply: str
    group: str | None = None
    fenced: bool = False
    """Answered only when it fails: a ping follows it, and its pong ends the wait."""
    on_reply: Callable[[dict[str, Any]], None] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    lost: bool = False


@attrs.define(eq=False)
class _Link:
    """One logged-in connection, and the requests in flight on it."""

    conn: WebSocketConnection
    pending: deque[_Pending] = attrs.field(factory=deque)
    send_lock: trio.Lock = attrs.field(factory=trio.Lock)


class _Buffer:
    """A buffer one task reads, bounded in items and in bytes (of the messages as they
    came), with a wake-up for its reader."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.items: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.size = 0
        self._lot = trio.lowlevel.ParkingLot()

    def full(self, size: int = 0) -> bool:
        return len(self.items) >= self.capacity or self.size + size > self.max_bytes

    def put(self, item: Any, size: int = 0) -> None:
        self.items.append(item)
        self._sizes.append(size)
        self.size += size
        self._lot.unpark_all()

    def pop(self) -> Any:
        self.size -= self._sizes.popleft()
        return self.items.popleft()

    def wake(self) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        await self._lot.park()


class Subscription(trio.abc.ReceiveChannel[SubscriptionItem]):
    """A queue subscription of a :class:`Session` (made by :meth:`Session.subscribe`).

    A trio receive channel of :data:`SubscriptionItem`\\ s: ``async for item in sub``.
    It lasts across reconnections; :meth:`aclose` (or ``async with sub:``) unsubscribes.

    Attributes:
        queue: the group (``"stream"`` for the ticker).
        seq: the last seq handed on (``None`` before the first ``subscribed``).
        epoch: the epoch ``seq`` counts in.
    """

    def __init__(
        self,
        session: Session,
        queue: str,
        *,
        streamed: bool,
        since: int | None,
        epoch: str | None,
    ) -> None:
        self.queue = queue
        self.seq: int | None = since
        self.epoch = epoch
        self._session = session
        self._streamed = streamed
        self._buffer = _Buffer(session.max_buffer, session.max_buffer_bytes)
        self._link: _Link | None = None  # the link whose `subscribed` came
        self._ready = trio.Event()
        self._error: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Subscription {self.queue!r} seq={self.seq} epoch={self.epoch}>"

    # -- the user's side

    async def receive(self) -> SubscriptionItem:
        """The next item, waiting for it.

        Raises:
            trio.ClosedResourceError: :meth:`aclose` was called.
            trio.EndOfChannel: the session ended normally (its block was left).
            SessionClosed: the session ended with an error (the ``__cause__``).
            RequestFailed: the server refused to resume this subscription.

        Cancellation loses nothing: an item is taken only when it is returned.
        """
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the subscription is closed")
            if self._buffer.items:
                await trio.lowlevel.checkpoint()
                if self._buffer.items:
                    return self._buffer.pop()  # type: ignore[no-any-return]
                continue
            if self._error is not None:
                self._raise_error()
            await self._buffer.wait()

    def receive_nowait(self) -> SubscriptionItem:
        """The next item if one is waiting.

        Raises:
            trio.WouldBlock: nothing is waiting (yet).
        """
        if self._closed:
            raise trio.ClosedResourceError("the subscription is closed")
        if self._buffer.items:
            return self._buffer.pop()  # type: ignore[no-any-return]
        if self._error is not None:
            self._raise_error()
        raise trio.WouldBlock

    def _raise_error(self) -> None:
        error = self._error
        if isinstance(error, RequestFailed):
            raise RequestFailed(error.code, error.message)
        if isinstance(error, SessionClosed):
            raise SessionClosed(str(error)) from error.__cause__
        raise trio.EndOfChannel

    async def aclose(self) -> None:
        """Unsubscribe: nothing more is handed on, and the server is told (without
        waiting for its answer). Cancellation still leaves it closed."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._buffer.wake()
        session = self._session
        if session._subs.get(self.queue) is self:
            del session._subs[self.queue]
        link = session._link
        # Even if its subscribed has not come yet on this connection (a resume in flight):
        # the unsubscribe follows the subscribe on the wire, and is harmless without one.
        if link is not None:
            request = (
                {"type": "streamed", "action": "unsubscribe"}
                if self._streamed
                else {"type": "grouped", "action": "unsubscribe", "group": self.queue}
            )
            try:
                await session._send(link, request, _Pending("unsubscribed", self.queue))
            except (ConnectionClosed, ConnectionLost):
                pass  # the connection ended: nothing to unsubscribe from
        else:
            await trio.lowlevel.checkpoint()

    # -- the session's side (the link's reader)

    def _request(self) -> dict[str, Any]:
        message: dict[str, Any] = (
            {"type": "streamed", "action": "subscribe"}
            if self._streamed
            else {"type": "grouped", "action": "subscribe", "group": self.queue}
        )
        if self.seq is not None:
            message["since"] = self.seq
            if self.epoch is not None:
                message["epoch"] = self.epoch
        return message

    def _put(self, item: SubscriptionItem, size: int = 0) -> None:
        session = self._session
        buffer = self._buffer
        if isinstance(item, QueueGap):
            session._gaps += 1
        if isinstance(item, Received) and buffer.full(size):
            # Full: the message becomes (part of) a gap at the end, never silently lost.
            session._dropped += 1
            last = buffer.items[-1]
            if isinstance(last, QueueGap) and last.last == item.seq - 1:
                buffer.items[-1] = QueueGap(self.queue, last.first, item.seq)
                return
            session._gaps += 1
            item = QueueGap(self.queue, item.seq, item.seq)
            size = 0
        buffer.put(item, size)

    def _on_subscribed(self, link: _Link, reply: dict[str, Any]) -> None:
        seq, epoch = reply.get("seq"), reply.get("epoch")
        if type(seq) is not int or seq < 0 or not (epoch is None or isinstance(epoch, str)):
            log.warning("ignoring a malformed subscribed reply %r", reply)
            return
        if self._closed:
            return
        if epoch is not None and self.epoch is not None and epoch != self.epoch:
            # The history we counted in is gone; the server takes our since as 0.
            self._put(HistoryLost(self.queue, self.seq or 0, self.epoch, epoch))
            self.seq = 0
        if epoch is not None:
            self.epoch = epoch
        if self.seq is None:
            self.seq = seq  # the live stream follows from seq + 1
        self._link = link
        self._ready.set()

    def _on_gap(self, first: Any, last: Any) -> None:
        if type(first) is not int or type(last) is not int or self.seq is None:
            return
        if last <= self.seq:
            return  # covered already
        self._put(QueueGap(self.queue, max(first, self.seq + 1), last))
        self.seq = last

    def _on_message(self, seq: Any, message: dict[str, Any], size: int) -> None:
        if type(seq) is not int or self.seq is None:
            return
        if seq <= self.seq:
            self._session._duplicates += 1
            return
        if seq > self.seq + 1:  # a hole nobody announced: say so rather than hide it
            self._put(QueueGap(self.queue, self.seq + 1, seq - 1))
        self._put(Received(self.queue, seq, message), size)
        self.seq = seq

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._ready.set()
        self._buffer.wake()


# ---------------------------------------------------------------------------- the session


class Session:
    """A logged-in client that reconnects and resumes; made by :func:`open_session`.

    Attributes:
        name: the name as the server registered it.
        max_buffer: items a subscription (or the inbox) holds before it overflows.
        max_buffer_bytes: bytes a subscription (or the inbox) holds before it overflows.
        request_timeout: seconds a request waits (for a connection and for its reply).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        token: str | None,
        backoff: Backoff | None,
        request_timeout: float | None,
        max_buffer: int,
        max_buffer_bytes: int,
        login_attempts: int,
        login_retry_interval: float,
        keepalive_interval: float | None,
        keepalive_timeout: float,
        fatal_close_codes: frozenset[int],
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None,
        connect_options: dict[str, Any],
    ) -> None:
        self.url = url
        self.name = name
        self._token = token
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self._login_attempts = login_attempts
        self._login_retry_interval = login_retry_interval
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self.fatal_close_codes = fatal_close_codes
        self._open_stream = open_stream
        self._connect_options = connect_options
        self._rng = random.Random()
        self._state = SessionState.CONNECTING
        self._link: _Link | None = None
        self._link_changed = trio.lowlevel.ParkingLot()
        self._subs: dict[str, Subscription] = {}
        self._inbox = _Buffer(max_buffer, max_buffer_bytes)
        self._fatal: BaseException | None = None
        self._body_scope: trio.CancelScope | None = None
        self._connections = 0
        self._attempts = 0
        self._duplicates = 0
        self._gaps = 0
        self._dropped = 0

    def __repr__(self) -> str:
        return f"<Session {self.name!r} {self._state.value} {self.url}>"

    @property
    def state(self) -> SessionState:
        """CONNECTING, CONNECTED or CLOSED."""
        return self._state

    def statistics(self) -> SessionStatistics:
        """Counters since the session opened."""
        return SessionStatistics(
            state=self._state,
            connections=self._connections,
            attempts=self._attempts,
            duplicates=self._duplicates,
            gaps=self._gaps,
            dropped=self._dropped,
        )

    async def wait_connected(self) -> None:
        """Wait until the session is logged in on a connection (returns at once if so).

        Raises:
            SessionClosed: the session has ended.
        """
        await self._wait_link()

    # ------------------------------------------------------------------ requests

    async def request(self, message: dict[str, Any], *, reply: str | None = None) -> Any:
        """Send a request and return its reply (``None`` for one the server answers only
        when it fails, e.g. ``publish`` and ``routed``).

        Args:
            message: the request, a JSON object with a ``type``.
            reply: the ``type`` of the expected reply; by default the demo protocol's
                (``echo`` -> ``echo``, ``who`` -> ``who``, ``ping`` -> ``pong``, ...), and
                none for a type it does not know (then an application ping follows the
                request, and its pong says the request succeeded).

        Waits for a connection first while the session is reconnecting. Cancellation (or
        the timeout) while waiting for the reply does not withdraw the request.

        Raises:
            RequestFailed: the server answered with an ``error``.
            ConnectionLost: the connection ended before the reply (the request may have
                been carried out).
            trio.TooSlowError: no reply within ``request_timeout``.
            SessionClosed: the session has ended.
            ValueError: a login or (un)subscribe, which the session manages itself.
        """
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ValueError(f"a request needs a string 'type': {message!r}")
        action = message.get("action") if kind in ("grouped", "streamed") else None
        if (kind, action) in _MANAGED or kind == "streamed":
            raise ValueError(f"use Session.subscribe() for {kind!r} {action or ''}".rstrip())
        if reply is None:
            reply = _REPLIES.get((kind, action), "")
        group = message.get("group") if reply == "members" else None
        pending = _Pending(reply or "pong", group, fenced=not reply)
        with trio.fail_after(_forever(self.request_timeout)):
            link = await self._wait_link()
            await self._send(link, message, pending)
            await pending.done.wait()
        self._check_fatal()
        if pending.error is not None:
            raise RequestFailed(
                str(pending.error.get("code")), str(pending.error.get("message", ""))
            )
        if pending.lost:
            raise ConnectionLost(f"the connection was lost before the reply to {kind!r}")
        return None if pending.fenced else pending.result

    async def echo(self, text: str) -> str:
        """The server's echo of ``text`` (see :meth:`request` for the errors)."""
        reply = await self.request({"type": "echo", "text": text})
        return str(reply.get("text"))

    async def ping(self) -> None:
        """An application ping; returns when its pong came."""
        await self.request({"type": "ping"})

    async def who(self) -> list[str]:
        """The names of the clients connected now, sorted."""
        reply = await self.request({"type": "who"})
        return list(reply.get("names", []))

    async def members(self, group: str) -> list[str]:
        """The names subscribed to ``group`` now, sorted."""
        reply = await self.request({"type": "grouped", "action": "members", "group": group})
        return list(reply.get("names", []))

    async def publish(self, group: str, text: str) -> None:
        """Publish ``text`` to ``group``; returns once the server took it.

        Raises:
            RequestFailed: e.g. ``bad_message``, ``rate_limited``, ``broker_unavailable``.
            ConnectionLost: the connection ended first: it may or may not be published.
        """
        await self.request({"type": "grouped", "action": "publish", "group": group, "text": text})

    async def send_to(self, name: str, text: str) -> None:
        """Send ``text`` to the client called ``name`` (``routed``).

        Raises:
            RequestFailed: ``unknown_recipient``, ``recipient_busy``, ...
        """
        await self.request({"type": "routed", "to": name, "text": text})

    async def receive(self) -> dict[str, Any]:
        """The next message that is neither a reply nor of a subscription: ``routed``
        messages, and types the session does not know. Cancellation loses nothing.

        Raises:
            SessionClosed: the session has ended and nothing is left to read.
        """
        inbox = self._inbox
        while True:
            if inbox.items:
                await trio.lowlevel.checkpoint()
                if inbox.items:
                    return inbox.pop()  # type: ignore[no-any-return]
                continue
            if self._state is SessionState.CLOSED:
                raise SessionClosed("the session has ended") from self._fatal
            await inbox.wait()

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self, group: str, *, since: int | None = None, epoch: str | None = None
    ) -> Subscription:
        """Join ``group`` and return the subscription, once the server confirmed it.

        Args:
            group: the group's name.
            since: resume after this seq (e.g. one kept from an earlier run).
            epoch: the epoch ``since`` belongs to.

        Raises:
            RequestFailed: refused (``bad_message``, ``too_many_subscriptions``, ...).
            RuntimeError: already subscribed to ``group`` in this session.
            trio.TooSlowError: not confirmed within ``request_timeout``.
        """
        return await self._subscribe(group, streamed=False, since=since, epoch=epoch)

    async def subscribe_stream(
        self, *, since: int | None = None, epoch: str | None = None
    ) -> Subscription:
        """Subscribe to the server's ticker (``streamed``); as :meth:`subscribe`."""
        return await self._subscribe("stream", streamed=True, since=since, epoch=epoch)

    async def _subscribe(
        self, queue: str, *, streamed: bool, since: int | None, epoch: str | None
    ) -> Subscription:
        self._check_fatal()
        if queue in self._subs:
            raise RuntimeError(f"already subscribed to {queue!r} in this session")
        if since is not None and (type(since) is not int or since < 0):
            raise ValueError(f"since must be a non-negative int: {since!r}")
        sub = Subscription(self, queue, streamed=streamed, since=since, epoch=epoch)
        self._subs[queue] = sub
        try:
            with trio.fail_after(_forever(self.request_timeout)):
                link = self._link
                if link is not None:  # otherwise the next connection's resume subscribes it
                    pending = self._subscribed_pending(sub)
                    try:
                        await self._send(link, sub._request(), pending)
                    except ConnectionLost:
                        pass  # the resume on the next connection subscribes it
                await sub._ready.wait()
        except BaseException:
            if self._subs.get(queue) is sub:
                del self._subs[queue]
            sub._closed = True
            raise
        if sub._error is not None:
            if self._subs.get(queue) is sub:
                del self._subs[queue]
            if isinstance(sub._error, RequestFailed):
                raise RequestFailed(sub._error.code, sub._error.message)
            raise SessionClosed("the session has ended") from self._fatal
        return sub

    def _subscribed_pending(self, sub: Subscription) -> _Pending:
        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("type") == "subscribed":
                if self._link is not None:
                    sub._on_subscribed(self._link, reply)
            elif not sub._ready.is_set():  # refused at the first subscribe
                sub._fail(RequestFailed(str(reply.get("code")), str(reply.get("message", ""))))

        return _Pending("subscribed", sub.queue, on_reply=on_reply)

    # ------------------------------------------------------------------ plumbing

    def _check_fatal(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionClosed("the session has ended") from self._fatal

    async def _wait_link(self) -> _Link:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_fatal()
            link = self._link
            if link is not None:
                return link
            await self._link_changed.park()

    async def _send(self, link: _Link, message: dict[str, Any], pending: _Pending) -> None:
        """Send ``message`` on ``link`` with ``pending`` waiting for its reply; the list of
        requests in flight has the order of the wire (the lock)."""
        async with link.send_lock:
            if self._link is not link:
                raise ConnectionLost("the connection was lost before the request was sent")
            if len(link.pending) >= MAX_IN_FLIGHT:
                # Requests given up on stay listed until answered: a server that leaves
                # this many unanswered is not answering. Start again on a new connection.
                log.warning("%s: %d requests unanswered: reconnecting", self.name, MAX_IN_FLIGHT)
                link.conn.abort()
                self._lose(link)
                raise ConnectionLost("the server left too many requests unanswered")
            link.pending.append(pending)
            try:
                await link.conn.send(message)
                if pending.fenced:
                    await link.conn.send({"type": "ping"})
            except ConnectionClosed:
                if pending in link.pending:
                    link.pending.remove(pending)
                raise ConnectionLost("the connection was lost while sending") from None

    def _dispatch(self, link: _Link, message: dict[str, Any], size: int = 0) -> None:
        """What the link's reader does with one message from the server."""
        kind = message.get("type")
        if kind == "grouped" or kind == "streamed":
            queue = "stream" if kind == "streamed" else message.get("group")
            sub = self._subs.get(queue) if isinstance(queue, str) else None
            if sub is not None and sub._link is link:
                sub._on_message(message.get("seq"), message, size)
            return
        if kind == "gap":
            queue = message.get("group")
            sub = self._subs.get(queue) if isinstance(queue, str) else None
            if sub is not None and sub._link is link:
                sub._on_gap(message.get("from"), message.get("to"))
            return
        if kind == "error":
            for pending in link.pending:
                if pending.error is None:
                    pending.error = message
                    if not pending.fenced:
                        link.pending.remove(pending)
                        self._resolved(pending)
                    return
            log.warning("%s: an error that answers no request: %r", self.name, message)
            return
        if isinstance(kind, str):
            group = message.get("group")
            for pending in link.pending:
                if pending.reply == kind and (pending.group is None or pending.group == group):
                    link.pending.remove(pending)
                    pending.result = message
                    if pending.on_reply is not None and pending.error is None:
                        pending.on_reply(message)
                    self._resolved(pending)
                    return
        if kind in ("subscribed", "unsubscribed", "pong", "echo", "who", "members"):
            return  # the answer to a request given up on, or a duplicate subscribe
        inbox = self._inbox
        if inbox.full(size):
            self._dropped += 1
            log.warning("%s: the inbox is full; dropped %r", self.name, kind)
            return
        inbox.put(message, size)

    def _resolved(self, pending: _Pending) -> None:
        if pending.on_reply is not None and pending.error is not None:
            pending.on_reply(pending.error)
        pending.done.set()

    # ------------------------------------------------------------------ the connections

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, log in, resume, read; again after each end, until an end is final.
        Never raises (but Cancelled): a final error is kept for the session's block."""
        failures = 0  # failed attempts in a row, for max_attempts
        waits = 0  # waits since the last good connection, for the backoff
        started = False

        def logged_in() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            while True:
                last: BaseException | None = None
                try:
                    if await self._connection(logged_in):
                        failures = waits = 0  # logged in and resumed: a good connection
                    else:
                        failures += 1
                except _Final as final:
                    self._close(final.error)
                    return
                except _TRANSIENT_ERRORS as exc:
                    last = exc
                    failures += 1
                    log.info("%s: connection attempt failed: %r", self.name, exc)
                error: SessionError
                if self.backoff is None:
                    error = ConnectionLost("the connection was lost and reconnecting is off")
                    error.__cause__ = last
                    self._close(error)
                    return
                if self.backoff.max_attempts is not None and failures >= self.backoff.max_attempts:
                    error = ReconnectFailed(failures)
                    error.__cause__ = last
                    self._close(error)
                    return
                delay = self.backoff.delay(waits, self._rng)
                waits += 1
                log.info("%s: reconnecting in %.2f s", self.name, delay)
                await trio.sleep(delay)
        except Exception as exc:  # a bug of ours: end the session with it, visibly
            log.exception("%s: the session failed", self.name)
            self._close(exc)
        finally:
            if self._state is not SessionState.CLOSED:
                self._close(None)
            if not started:  # ended before the first login: open_session raises the error
                started = True
                task_status.started()

    async def _connection(self, logged_in: Callable[[], None]) -> bool:
        """One connection, from connecting to its end. Returns whether it logged in and
        resumed every subscription; raises what ended it otherwise."""
        self._attempts += 1
        stream = await self._open_stream() if self._open_stream is not None else None
        try:
            async with connect(self.url, stream=stream, **self._connect_options) as conn:
                try:
                    return await self._logged_in(conn, logged_in)
                except ConnectionClosed as exc:
                    self._check_close(conn, exc)
                    raise
        except HandshakeFailed as exc:
            if exc.status in _FATAL_STATUSES:
                raise _Final(
                    SessionRefused(f"the server refused the handshake: {exc}", status=exc.status)
                ) from exc
            raise

    async def _logged_in(self, conn: WebSocketConnection, logged_in: Callable[[], None]) -> bool:
        """Log in on ``conn``, resume, read until the connection ends."""
        await self._login(conn)
        link = _Link(conn)
        to_resume = list(self._subs.values())
        self._link = link
        self._state = SessionState.CONNECTED
        self._connections += 1
        self._link_changed.unpark_all()
        log.info("%s: logged in (connection %d)", self.name, self._connections)
        logged_in()
        resumed: list[bool] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._resume, link, to_resume, resumed)
                if self._keepalive_interval is not None:
                    nursery.start_soon(self._keepalive, conn, self._keepalive_interval)
                await self._read(link)
                nursery.cancel_scope.cancel()
        finally:
            self._lose(link)
        closed = conn.closed
        assert closed is not None
        self._check_close(conn, closed)
        return bool(resumed)

    def _check_close(self, conn: WebSocketConnection, closed: ConnectionClosed) -> None:
        received = conn.protocol.close_received
        if received is not None and received.code in self.fatal_close_codes:
            raise _Final(
                SessionRefused(
                    f"the server closed the connection with {received.code} "
                    f"{received.reason}".rstrip(),
                    code=received.code,
                )
            )
        log.info("%s: the connection ended (%d %s)", self.name, closed.code, closed.reason)

    async def _login(self, conn: WebSocketConnection) -> None:
        message: dict[str, Any] = {"type": "login", "name": self.name}
        if self._token is not None:
            message["token"] = self._token
        for attempt in range(self._login_attempts):
            if attempt:
                await trio.sleep(self._login_retry_interval)
            await conn.send(message)
            with trio.fail_after(_forever(self.request_timeout)):
                reply, _ = await self._receive_json(conn)
                while reply.get("type") not in ("welcome", "error"):
                    reply, _ = await self._receive_json(conn)
            if reply["type"] == "welcome":
                self.name = str(reply.get("name", self.name))
                return
            code = str(reply.get("code"))
            if code in _FATAL_LOGIN_CODES:
                raise _Final(LoginFailed(code, str(reply.get("message", ""))))
            if code != "name_taken":
                log.info("%s: login failed (%s), reconnecting", self.name, code)
                await conn.aclose()
                raise ConnectionClosed(CloseCode.NORMAL_CLOSURE, f"login failed: {code}")
        if self._connections == 0:  # someone else has the name
            raise _Final(LoginFailed("name_taken", f"the name {self.name!r} stayed taken"))
        # After a reconnection it is most likely our own old connection, which a server
        # that was killed keeps in a shared broker until its lease ends: try again later
        # (a failed attempt, so max_attempts still bounds it).
        log.info("%s: the name is still taken: reconnecting later", self.name)
        await conn.aclose()
        raise ConnectionClosed(CloseCode.NORMAL_CLOSURE, "the name is still taken")

    async def _receive_json(self, conn: WebSocketConnection) -> tuple[dict[str, Any], int]:
        """The next JSON object from the server, and its size (bytes, as it came)."""
        while True:
            data = await conn.receive()
            if isinstance(data, str):
                try:
                    message = json.loads(data)
                except ValueError:
                    log.warning("%s: the server sent text that is not JSON", self.name)
                    continue
                if isinstance(message, dict):
                    return message, len(data)

    async def _read(self, link: _Link) -> None:
        """Hand what arrives to the requests and subscriptions, until the connection ends."""
        try:
            while True:
                message, size = await self._receive_json(link.conn)
                self._dispatch(link, message, size)
        except ConnectionClosed:
            return

    async def _resume(self, link: _Link, subs: Sequence[Subscription], done: list[bool]) -> None:
        """Subscribe again to every queue of ``subs``, resuming from its last seq."""
        waiting = []
        try:
            for sub in subs:
                if sub._closed:
                    continue
                pending = self._subscribed_pending(sub)
                await self._send(link, sub._request(), pending)
                waiting.append((sub, pending))
            with trio.fail_after(_forever(self.request_timeout)):
                for _sub, pending in waiting:
                    await pending.done.wait()
        except (ConnectionLost, trio.TooSlowError):
            link.conn.abort()
            return
        for sub, pending in waiting:
            if pending.error is not None:
                code = str(pending.error.get("code"))
                if code in _TRANSIENT_CODES:
                    log.info("%s: resuming %r failed (%s)", self.name, sub.queue, code)
                    await link.conn.send_close(CloseCode.NORMAL_CLOSURE, "resume failed")
                    return
                sub._fail(RequestFailed(code, str(pending.error.get("message", ""))))
                if self._subs.get(sub.queue) is sub:
                    del self._subs[sub.queue]
            elif pending.lost:
                return
        done.append(True)

    async def _keepalive(self, conn: WebSocketConnection, interval: float) -> None:
        """Ping when the server has been quiet for ``interval``; drop a connection whose
        pong does not come within ``keepalive_timeout`` (a half-open TCP connection)."""
        try:
            while True:
                quiet = trio.current_time() - conn.last_received
                if quiet < interval:
                    await trio.sleep(interval - quiet)
                    continue
                pong = await conn.ping()
                with trio.move_on_after(self._keepalive_timeout) as scope:
                    await pong.wait()
                if scope.cancelled_caught:
                    log.info("%s: no pong within %s s: reconnecting", self.name, interval)
                    conn.abort()
                    return
                await trio.sleep(interval)
        except ConnectionClosed:
            return

    def _lose(self, link: _Link) -> None:
        """The link ended: fail what waited on it."""
        if self._link is link:
            self._link = None
            if self._state is SessionState.CONNECTED:
                self._state = SessionState.CONNECTING
        for pending in link.pending:
            pending.lost = True
            pending.done.set()
        link.pending.clear()
        for sub in self._subs.values():
            if sub._link is link:
                sub._link = None
        self._link_changed.unpark_all()

    def _close(self, error: BaseException | None) -> None:
        """The session ended, for good: wake everyone; cancel the user's block on an error."""
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        self._fatal = error
        if error is not None:
            log.warning("%s: the session ended: %r", self.name, error)
        ended: BaseException
        if error is None:
            ended = trio.EndOfChannel()
        else:
            ended = SessionClosed(f"the session has ended: {error}")
            ended.__cause__ = error
        for sub in list(self._subs.values()):
            sub._fail(ended)
        self._subs.clear()
        self._inbox.wake()
        self._link_changed.unpark_all()
        if error is not None and self._body_scope is not None:
            self._body_scope.cancel()


class _Final(Exception):
    """An end after which the session must not reconnect; carries the user's error."""

    def __init__(self, error: SessionError) -> None:
        super().__init__(str(error))
        self.error = error


def _forever(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


@asynccontextmanager
async def open_session(
    url: str,
    *,
    name: str,
    token: str | None = None,
    reconnect: bool | Backoff = True,
    request_timeout: float | None = 10.0,
    max_buffer: int = 1000,
    max_buffer_bytes: int = 16 << 20,
    login_attempts: int = 4,
    login_retry_interval: float = 0.5,
    keepalive_interval: float | None = 20.0,
    keepalive_timeout: float = 20.0,
    fatal_close_codes: frozenset[int] = DEFAULT_FATAL_CLOSE_CODES,
    headers: Sequence[tuple[str, str]] = (),
    compression: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float | None = 10.0,
    open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
) -> AsyncIterator[Session]:
    """A session of the demo protocol (docs/protocol.md) for the length of the block.

    Connects, logs in as ``name`` and returns once logged in; then stays logged in:
    after an unexpected end it reconnects (``reconnect``), logs in again and resumes every
    subscription where it stopped (see :mod:`the theory of operation
    <trio_ws._client_session>`)::

        async with trio_ws.open_session("ws://127.0.0.1:8000/ws", name="carol") as session:
            lobby = await session.subscribe("lobby")
            await session.publish("lobby", "hello")
            async for item in lobby:
                ...   # Received, QueueGap or HistoryLost

    Args:
        url: the WebSocket endpoint, ``ws://host:port/ws`` (or ``wss://``).
        name: the login name.
        token: a credential for servers that check one.
        reconnect: ``True`` (the default :class:`Backoff`), a :class:`Backoff`, or
            ``False``: a lost connection ends the session with :class:`ConnectionLost`.
        request_timeout: seconds a request (or a subscribe, or the login) may wait;
            ``None``: no limit.
        max_buffer: items a subscription, and the inbox, hold unread before overflowing
            (a subscription's overflow becomes a gap item; the inbox's is dropped and
            counted).
        max_buffer_bytes: bytes (of the messages as received) each of them holds unread
            before overflowing the same way; 16 MiB.
        login_attempts: logins tried on one connection while the name is taken (the
            server closes a connection at the fifth failure, so at most 4).
        login_retry_interval: seconds between them.
        keepalive_interval: seconds of silence from the server after which a ping is sent
            (``None``: never).
        keepalive_timeout: seconds the pong may take before the connection counts as lost.
        fatal_close_codes: close codes from the server after which the session ends
            rather than reconnects.
        headers, compression, ssl_context, open_timeout: as for :func:`trio_ws.connect`.
        open_stream: opens the stream of each connection instead of TCP (for example
            :meth:`trio_ws.testing.MemoryListener.connect`).

    Leaving the block closes the connection (1000) and stops the session's tasks. If the
    session ends for good while the block runs (given up, refused), the block is
    cancelled and the error is raised from ``async with``: :class:`ReconnectFailed`,
    :class:`LoginFailed`, :class:`SessionRefused` or :class:`ConnectionLost`. An error
    of the block itself is raised unchanged.

    Raises:
        LoginFailed: the first login was refused for good.
        SessionRefused: the server refused the handshake, or closed with a fatal code.
        ReconnectFailed: ``max_attempts`` connection attempts failed in a row.
        ValueError: an invalid option.
    """
    if not 1 <= login_attempts <= 4:
        raise ValueError(
            f"login_attempts must be 1 to 4 (the fifth failure closes): {login_attempts!r}"
        )
    if type(max_buffer) is not int or max_buffer < 1:
        raise ValueError(f"max_buffer must be a positive int: {max_buffer!r}")
    if type(max_buffer_bytes) is not int or max_buffer_bytes < 1:
        raise ValueError(f"max_buffer_bytes must be a positive int: {max_buffer_bytes!r}")
    if request_timeout is not None and not request_timeout > 0:
        raise ValueError(f"request_timeout must be positive or None: {request_timeout!r}")
    if keepalive_interval is not None and not keepalive_interval > 0:
        raise ValueError(f"keepalive_interval must be positive or None: {keepalive_interval!r}")
    if isinstance(reconnect, Backoff):
        backoff: Backoff | None = reconnect
    elif reconnect is True:
        backoff = Backoff()
    elif reconnect is False:
        backoff = None
    else:
        raise TypeError(f"reconnect must be a bool or a Backoff, not {reconnect!r}")
    options: dict[str, Any] = {
        "headers": headers,
        "compression": compression,
        "ssl_context": ssl_context,
        "open_timeout": open_timeout,
    }
    session = Session(
        url,
        name=name,
        token=token,
        backoff=backoff,
        request_timeout=request_timeout,
        max_buffer=max_buffer,
        max_buffer_bytes=max_buffer_bytes,
        login_attempts=login_attempts,
        login_retry_interval=login_retry_interval,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
        fatal_close_codes=frozenset(fatal_close_codes),
        open_stream=open_stream,
        connect_options=options,
    )
    body_error: Exception | None = None
    cancelled_by_session = False
    async with trio.open_nursery() as nursery:
        await nursery.start(session._run)  # returns at the first login, or when it ended
        if session._state is SessionState.CLOSED:
            nursery.cancel_scope.cancel()
            entered = False
        else:
            entered = True
            with trio.CancelScope() as scope:
                session._body_scope = scope
                try:
                    yield session
                except Exception as exc:  # raised below, unchanged (not in a group)
                    body_error = exc
            session._body_scope = None
            cancelled_by_session = scope.cancelled_caught
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    if session._fatal is not None and (not entered or cancelled_by_session):
        raise session._fatal
    if not entered:
        raise SessionClosed("the session ended before it logged in")
