"""One open WebSocket on a transport: the reader, the single writer, the close handshake.

Theory of operation
-------------------
A :class:`WebSocketConnection` adds I/O to a sans-IO :class:`WebSocketProtocol`. There is no
background task: the task that calls :meth:`~WebSocketConnection.receive` is the reader. It
feeds bytes to the protocol, flushes what the protocol owes the peer (pongs, the close
reply) *before* returning messages to anyone who might block (STYLE.md rule 4), and records
the time of the last frame for keepalive.

Every write, from any task, goes through :meth:`_write`: when nothing is pending it is one
non-blocking ``send()``; whatever does not fit is queued and the writer that queued it waits
for writability and drains the queue, while other writers append behind it — so frames
never interleave. Writers that find more than ``write_buffer_size`` bytes pending wait for
the drain, at most ``send_timeout`` seconds; then the connection is closed (the slow peer
pays, the sender does not hang).

Other layers never drive the protocol object; they use the connection's non-blocking verbs
(:meth:`~WebSocketConnection.send_frames_nowait` for frames encoded once for many
connections, :meth:`~WebSocketConnection.send_nowait`, :meth:`~WebSocketConnection.ping_nowait`,
:meth:`~WebSocketConnection.close_nowait`). What those leave pending is drained by a task
the connection starts in its server's nursery (``background``), bounded by ``send_timeout``.

A reader in the background. Normally the task that handles messages is also the reader,
which is the fast path (no task switch per message). When that task blocks for long inside
a service (a slow database call, a long sleep), the application calls
:meth:`~WebSocketConnection.read_in_background`: from then on a second task reads, answers
pings and the close handshake, and queues messages (at most ``_INBOX_LIMIT`` of them and
about ``_INBOX_BYTES``) for
:meth:`~WebSocketConnection.receive`, which then waits on that queue. Order is kept.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from ._transport import Transport, TransportClosed
from .protocol._connection import ConnectionState, WebSocketProtocol
from .protocol._errors import CloseCode, RemoteProtocolError, WebSocketError
from .protocol._events import Close, Pong
from .protocol._handshake import Request

log = logging.getLogger("trio_ws.connection")
_OPEN = ConnectionState.OPEN
_ids = itertools.count(1)

Message = str | bytes

# A background reader stops reading (the kernel and then TCP hold the rest back) once this
# many messages, or this many bytes of them, wait unhandled: it exists to answer pings and
# the Close, not to buffer. (What one read completes may go over, by at most that read.)
_INBOX_LIMIT = 16
_INBOX_BYTES = 1 << 20
# A drain joins what is queued into one write up to this size; a larger backlog (a large
# payload queued apart from its header, see the protocol's data_to_send_vectored()) is
# written as its buffers, with vectored writes, so the payload is not copied.
_JOIN_MAX = 65536
# receive() hands out at most this many already-parsed messages in a row before a
# checkpoint: one 64 KiB read can hold thousands of tiny messages, and a flooder's would
# otherwise add its whole handling time to everyone's latency.
_MESSAGES_PER_CHECKPOINT = 16


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` say how (1006: no close frame).

    Raised as :class:`ConnectionClosedOK` for a normal end (1000, 1001, or a Close without
    a code, 1005) and :class:`ConnectionClosedError` for anything else; catch this base
    class for both.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason

    @property
    def ok(self) -> bool:
        """Whether the connection ended normally (1000, 1001 or 1005)."""
        return self.code in _OK_CODES


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended normally (1000, 1001 or 1005)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended with an error code, or without a close handshake (1006)."""


_OK_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})


def closed_exception(code: int, reason: str = "") -> ConnectionClosed:
    """The one place a connection's close state becomes an exception, of the right kind."""
    kind = ConnectionClosedOK if code in _OK_CODES else ConnectionClosedError
    return kind(code, reason)


_dumps_utf8: Callable[[Any], str] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False
).encode
_dumps_ascii: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode


def dumps(message: dict[str, Any]) -> str:
    """JSON-encode an application message compactly, non-ASCII as UTF-8 (not ``\\u``
    escapes, which cost up to 6 bytes a character). One encoder each: ``json.dumps`` with
    options builds a new one per call, which doubles the cost of a small message. Text
    that UTF-8 cannot carry (a lone surrogate decoded from a client's ``\\ud800``) is
    sent escaped instead."""
    text = _dumps_utf8(message)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return _dumps_ascii(message)
    return text


class WebSocketConnection:
    """An open WebSocket connection (server or client side).

    Attributes:
        id: a process-unique number, used in log lines.
        request: the handshake request (server side), else ``None``.
        subprotocol: the negotiated subprotocol, or ``None``.
        remote: ``"host:port"`` of the peer when known.
    """

    __slots__ = (
        "_aborted",
        "_clock",
        "_closed",
        "_closed_event",
        "_drain_task",
        "_drained",
        "_draining",
        "_error",
        "_frames",
        "_inbox",
        "_inbox_changed",
        "_inbox_head",
        "_message_seen",
        "_on_admit",
        "_pending",
        "_pending_size",
        "_pong_waiters",
        "_reader_running",
        "_unsettled",
        "_unyielded",
        "background",
        "bytes_in",
        "bytes_out",
        "close_timeout",
        "id",
        "last_received",
        "messages_in",
        "messages_out",
        "ping_sent_at",
        "protocol",
        "remote",
        "request",
        "send_timeout",
        "subprotocol",
        "transport",
        "write_buffer_size",
    )

    def __init__(
        self,
        transport: Transport,
        protocol: WebSocketProtocol,
        *,
        request: Request | None = None,
        subprotocol: str | None = None,
        remote: str | None = None,
        write_buffer_size: int = 1 << 20,
        send_timeout: float | None = 10.0,
        close_timeout: float = 5.0,
        background: trio.Nursery | None = None,
    ) -> None:
        self.id = next(_ids)
        self.transport = transport
        self.protocol = protocol
        # The protocol's frame parser, kept: its ``missing`` is read before every read.
        self._frames = protocol.frame_parser
        self.request = request
        self.subprotocol = subprotocol
        self.remote = remote
        self.write_buffer_size = write_buffer_size
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        # The run's clock, looked up once: a read per chunk received is on the hot path.
        self._clock: Callable[[], float] = trio.lowlevel.current_clock().current_time
        self.last_received = self._clock()
        self.ping_sent_at: float | None = None
        self.messages_in = 0
        self.messages_out = 0
        # What the kernel did not take yet, in order. The rest of a partly written frame is
        # kept as a view: a frame shared by a thousand subscribers is not copied for each.
        self._pending: list[bytes | memoryview] = []
        self._pending_size = 0
        self._draining = False
        self._drained: trio.Event | None = None
        self._closed: ConnectionClosed | None = None
        self._aborted = False  # the transport was dropped: nothing more can be written
        self._pong_waiters: dict[bytes, trio.Event] = {}
        # Messages parsed and not handed out yet: inbox[_inbox_head:], in order. A list
        # and an index rather than a deque: an empty list holds no array (a deque holds a
        # 64-slot block, 600 bytes, on every idle connection), and it is emptied, its array
        # freed, as soon as the last message is handed out.
        self._inbox: list[Message] = []
        self._inbox_head = 0
        self._error: RemoteProtocolError | None = None
        self._unsettled = False  # fed bytes whose replies and errors are not handled yet
        self.bytes_in = 0
        self.bytes_out = 0
        self.background = background
        """Where the connection starts its helper tasks (drains, a background reader)."""
        self._drain_task = False
        self._reader_running = False
        self._inbox_changed: trio.Event | None = None
        self._unyielded = 0
        self._on_admit: Callable[[], None] | None = None
        self._message_seen: tuple[int, float] | None = None
        self._closed_event: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<WebSocketConnection #{self.id} {self.remote or ''} {self.state.name}>"

    @property
    def state(self) -> ConnectionState:
        return self.protocol.state

    @property
    def closed(self) -> ConnectionClosed | None:
        """How the connection ended, or ``None`` while it is open."""
        return self._closed

    def message_started_at(self, now: float) -> float | None:
        """When the fragmented message being received started, as first seen at a call
        (the keepalive task calls it with the current time), or ``None`` between
        messages."""
        progress = self.protocol.message_in_progress
        if progress is None:
            self._message_seen = None
            return None
        seen = self._message_seen
        if seen is None or seen[0] != progress.number:
            self._message_seen = seen = (progress.number, now)
        return seen[1]

    def admit(self) -> None:
        """Mark the connection admitted (logged in): it stops counting against the
        server's limits on pending connections. Idempotent."""
        callback, self._on_admit = self._on_admit, None
        if callback is not None:
            callback()

    @property
    def writable(self) -> bool:
        """Whether data messages may still be sent (open, and no Close sent or received)."""
        return self._closed is None and self.protocol.state is _OPEN

    @property
    def pending_size(self) -> int:
        """Bytes queued for the peer that the kernel has not taken yet."""
        return self._pending_size

    # ------------------------------------------------------------------ reading

    async def receive(self) -> Message:
        """Return the next message (``str`` for text, ``bytes`` for binary).

        Answers pings and the close handshake on the way. Only one task may receive.

        Raises:
            ConnectionClosed: the connection is closed (after a close handshake, a protocol
                error, or a transport failure). Cancellation leaves the connection usable.
        """
        inbox = self._inbox
        while True:
            if self._unsettled:  # bytes fed and not settled yet: flush replies, fail on error
                self._unsettled = False
                owed = self.protocol.data_to_send()
                if owed or self._error is not None:
                    await self._settle(owed)
            if inbox:
                unyielded = self._unyielded + 1
                if unyielded > _MESSAGES_PER_CHECKPOINT:
                    # A chunk of many small messages must not hold the loop: let the other
                    # connections run before handing out more.
                    self._unyielded = 0
                    await trio.lowlevel.checkpoint()
                    continue
                self._unyielded = unyielded
                return self._pop()
            if self._closed is not None:
                raise self._closed
            self._unyielded = 0  # reading or waiting is a checkpoint
            if self._reader_running:
                await self._wait_inbox()
            else:
                # _read_once() without its settle, which the top of the loop does: the
                # per-message path awaits nothing but the read.
                try:
                    data = await self.transport.receive_some(self._frames.missing)
                except TransportClosed:
                    data = b""
                self.feed(data)

    def receive_nowait(self) -> Message:
        """Return the next message if it was received already (read and parsed with the
        ones before it), without waiting: to take what arrived in one read together, such
        as several messages to publish in one :meth:`~trio_ws.BroadcastQueue.publish_many`.

        Raises:
            trio.WouldBlock: no message is there yet (:meth:`receive` waits for one).
            ConnectionClosed: the connection is closed, and every message received before
                was taken.
        """
        if not self._inbox:
            if self._closed is not None:
                raise self._closed
            raise trio.WouldBlock
        self._unyielded += 1  # the next receive() still checkpoints in time
        return self._pop()

    def _pop(self) -> Message:
        inbox = self._inbox
        self.messages_in += 1
        head = self._inbox_head
        message = inbox[head]
        head += 1
        if head == len(inbox):
            inbox.clear()
            head = 0
        self._inbox_head = head
        if self._reader_running:
            self._inbox_event()  # there may be room for the reader again
        return message

    def _inbox_event(self) -> None:
        changed = self._inbox_changed
        if changed is not None:
            self._inbox_changed = None
            changed.set()

    async def _wait_inbox(self) -> None:
        if self._inbox_changed is None:
            self._inbox_changed = trio.Event()
        await self._inbox_changed.wait()

    def read_in_background(self) -> bool:
        """From now on, read in a task of its own (see the module docstring); idempotent.

        Returns whether a background reader runs (it needs ``background``, a nursery).
        """
        if self._reader_running:
            return True
        if self.background is None or self._closed is not None:
            return False
        self._reader_running = True
        self.background.start_soon(self._background_reader)
        return True

    async def _background_reader(self) -> None:
        inbox = self._inbox
        try:
            while self._closed is None:
                waiting = len(inbox) - self._inbox_head
                if (
                    waiting >= _INBOX_LIMIT
                    or sum(map(len, inbox[self._inbox_head :])) >= _INBOX_BYTES
                ):
                    await self._wait_inbox()
                    continue
                await self._read_once()
                if len(inbox) - self._inbox_head != waiting:
                    self._inbox_event()
        except ConnectionClosed:
            pass
        finally:
            self._inbox_event()

    async def _read_once(self) -> None:
        """Read one chunk into the protocol, flush what it owes, sort out the events."""
        try:
            data = await self.transport.receive_some(self._frames.missing)
        except TransportClosed:
            data = b""
        self.feed(data)
        self._unsettled = False
        await self._settle(self.protocol.data_to_send())

    async def _settle(self, owed: bytes) -> None:
        """After a feed: flush what the protocol owes the peer (``owed``, taken from it by
        the caller), then fail on its error."""
        if owed:
            # What the protocol owes the peer (a pong, the close reply) is written even if
            # this receive is cancelled meanwhile: a write cut off mid-frame (always
            # possible on TLS, where every write waits) would break the connection. A short
            # shield with a deadline (STYLE.md rule 8); a peer that stops reading still
            # ends in the abort.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.close_timeout
                try:
                    await self._write(owed)
                except ConnectionClosed:
                    pass
        if self._error is not None:
            self._finish(closed_exception(self._error.close_code, self._error.reason))

    def feed(self, data: bytes) -> None:
        """Hand received bytes (``b""`` for end of stream) to the protocol; sort the events.

        What the protocol owes the peer is flushed by the next read or write.
        """
        self._unsettled = True
        proto = self.protocol
        if not data:
            proto.receive_eof()
        else:
            self.bytes_in += len(data)
            self.last_received = self._clock()
            self.ping_sent_at = None
            try:
                proto.receive_data(data)
            except RemoteProtocolError as exc:
                if self._error is None:
                    log.info(
                        "#%d protocol error: %s (close %d)", self.id, exc.reason, exc.close_code
                    )
                    self._error = exc
        inbox = self._inbox
        for event in proto.take_received():
            kind = type(event)
            if kind is str or kind is bytes:
                inbox.append(event)  # type: ignore[arg-type]
            else:
                self._control_event(event)

    def _control_event(self, event: object) -> None:
        if type(event) is Close:
            assert isinstance(event, Close)
            self._finish(closed_exception(event.code, event.reason))
        elif type(event) is Pong:
            assert isinstance(event, Pong)
            waiter = self._pong_waiters.pop(event.payload, None)
            if waiter is not None:
                waiter.set()
        # Ping: the protocol queued the Pong already.

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection is closed (someone else must be receiving); return how.

        Cancellation leaves the connection as it is.
        """
        if self._closed is None:
            if self._closed_event is None:
                self._closed_event = trio.Event()
            await self._closed_event.wait()
        assert self._closed is not None
        return self._closed

    def _finish(self, closed: ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = closed
            if self._closed_event is not None:
                self._closed_event.set()
            self._inbox_event()
            for waiter in self._pong_waiters.values():
                waiter.set()
            self._pong_waiters.clear()
            if self._drained is not None:
                self._drained.set()

    async def __aiter__(self) -> AsyncIterator[Message]:
        """Iterate over messages until the connection closes normally (1000/1001/1005)."""
        while True:
            try:
                yield await self.receive()
            except ConnectionClosedOK:
                return

    # ------------------------------------------------------------------ writing

    async def _write(self, data: bytes | list[bytes]) -> None:
        """Write bytes in order with every other writer; see the module docstring."""
        if self.write_nowait(data):
            return
        if not self._draining:
            await self._drain()
        elif self._pending_size > self.write_buffer_size:
            await self._wait_drained()

    def write_nowait(self, data: bytes | list[bytes]) -> bool:
        """Write or queue ``data`` (bytes, or a list of buffers written in order) without
        waiting; return True if nothing is left pending.

        Bytes that do not fit stay queued, in order; the next writer (or a task calling
        :meth:`drain`) sends them. After a Close was received the protocol's reply still
        goes out; only a dropped transport refuses bytes.
        """
        if self._aborted:
            raise self._closed_error()
        if type(data) is list:
            return self._write_parts_nowait(data)
        assert isinstance(data, bytes)
        self.bytes_out += len(data)
        if self._pending or self._draining:
            # Behind what is queued, and behind the chunk a drain is writing now: a write
            # of its own would land in the middle of a frame.
            self._pending.append(data)
            self._pending_size += len(data)
            return False
        try:
            sent = self.transport.send_nowait(data)
        except TransportClosed:
            self._broken()
            raise self._closed_error() from None
        if sent == len(data):
            return True
        self._pending.append(memoryview(data)[sent:] if sent else data)
        self._pending_size += len(data) - sent
        return False

    def _write_parts_nowait(self, parts: list[bytes]) -> bool:
        """:meth:`write_nowait` for a list of buffers: one vectored write, no join."""
        size = sum(map(len, parts))
        self.bytes_out += size
        pending = self._pending
        if pending or self._draining:
            pending += parts
            self._pending_size += size
            return False
        try:
            sent = self.transport.send_parts_nowait(parts)
        except TransportClosed:
            self._broken()
            raise self._closed_error() from None
        if sent == size:
            return True
        self._pending_size += size - sent
        for part in parts:  # queue what is left, the part cut short as a view
            n = len(part)
            if sent >= n:
                sent -= n
                continue
            pending.append(memoryview(part)[sent:] if sent else part)
            sent = 0
        return False

    async def drain(self) -> None:
        """Wait until everything queued is written (returns at once if nothing is)."""
        if self._draining:
            await self._wait_drained()
        elif self._pending:
            await self._drain()

    async def _drain(self) -> None:
        self._draining = True
        pending = self._pending
        # The drainer waits on the peer too: it gets the same bounded wait as the writers
        # queued behind it, or one peer that never reads would hold its sender forever.
        deadline = trio.current_time() + (
            self.send_timeout if self.send_timeout is not None else float("inf")
        )
        closing = False
        try:
            while pending:
                size = self._pending_size
                if len(pending) == 1 or size < _JOIN_MAX or not self.transport.resumable:
                    left = [memoryview(pending[0] if len(pending) == 1 else b"".join(pending))]
                else:  # large: written as the buffers they are, without a join
                    left = [memoryview(part) for part in pending]
                pending.clear()
                self._pending_size = 0
                with trio.move_on_at(deadline) as scope:
                    await self._send_views(left)
                if not scope.cancelled_caught:
                    continue
                if closing or not self.transport.resumable:
                    # A TLS write cut off mid-frame leaves nothing to close with.
                    log.info("#%d send timeout: the peer does not read, closing", self.id)
                    self._broken(CloseCode.POLICY_VIOLATION, "send timeout")
                    raise self._closed_error()
                # The peer stopped reading. What it is owed stays queued, and a real Close
                # goes behind it: a peer that reads again gets everything and then 1008; one
                # that does not within close_timeout is dropped.
                log.info("#%d send timeout: the peer does not read; Close 1008", self.id)
                closing = True
                pending[:0] = left
                self._pending_size += sum(map(len, left))
                if self.protocol.state is _OPEN and self._closed is None:
                    self.protocol.send_close(CloseCode.POLICY_VIOLATION, "send timeout")
                    data = self.protocol.data_to_send()
                    pending.append(data)
                    self._pending_size += len(data)
                deadline = trio.current_time() + self.close_timeout
        except TransportClosed:
            self._broken()
            raise self._closed_error() from None
        except trio.Cancelled:
            # A frame may be half written: the stream is unusable. Abort, then let go.
            self._broken()
            raise
        finally:
            self._draining = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    async def _send_views(self, left: list[memoryview]) -> None:
        """Write the views in order; what is still unwritten stays in ``left`` (emptied as
        it goes), for a caller whose wait was cut short."""
        transport = self.transport
        left[:] = [view for view in left if view]
        while left:
            if len(left) == 1:
                view = left[0]
                left[0] = view[await transport.send_some(view) :]
                if not left[0]:
                    left.clear()
                continue
            sent = await transport.send_some_parts(left)
            while sent:
                n = len(left[0])
                if sent >= n:
                    sent -= n
                    del left[0]
                else:
                    left[0] = left[0][sent:]
                    sent = 0

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = trio.Event()
        drained = self._drained
        with trio.move_on_after(
            self.send_timeout if self.send_timeout is not None else float("inf")
        ):
            await drained.wait()
            if self._closed is not None:
                raise self._closed
            return
        log.info("#%d send timeout: %d bytes waiting, closing", self.id, self._pending_size)
        self._broken(CloseCode.POLICY_VIOLATION, "send timeout")
        raise self._closed_error()

    def abort(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        """Drop the connection now, without a close handshake; the reader sees ``code``."""
        self._broken(code, reason)

    def _broken(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        self._aborted = True
        self._finish(closed_exception(code, reason))
        if self.protocol.state is not ConnectionState.CLOSED:
            self.protocol.receive_eof()
            self.protocol.take_received()
        self.transport.abort()

    def _closed_error(self) -> ConnectionClosed:
        return self._closed or closed_exception(CloseCode.ABNORMAL_CLOSURE)

    def _check_writable(self) -> None:
        if self._closed is not None:
            raise self._closed
        if self.protocol.state is not ConnectionState.OPEN:
            raise closed_exception(
                self.protocol.close_sent.code
                if self.protocol.close_sent
                else CloseCode.NORMAL_CLOSURE
            )

    async def send(self, message: Message | dict[str, Any]) -> None:
        """Send a text (``str``), binary (``bytes``) or JSON (``dict``) message.

        Safe from any task. Waits only if the peer is not reading and more than
        ``write_buffer_size`` bytes are already queued, at most ``send_timeout`` seconds.

        Raises:
            ConnectionClosed: the connection is closed or closing. If cancelled while a
                frame is half written, the connection is aborted.
        """
        if self._closed is not None or self.protocol.state is not _OPEN:
            self._check_writable()
        # _write() inlined: the per-message path is one non-blocking send, no await.
        if self.write_nowait(self._encode(message)):
            return
        if not self._draining:
            await self._drain()
        elif self._pending_size > self.write_buffer_size:
            await self._wait_drained()

    def _encode(self, message: Message | dict[str, Any]) -> bytes | list[bytes]:
        """The frames of one message, counted as sent (the caller checked it may send):
        bytes, or a list of buffers when a large payload is kept apart from its header."""
        proto = self.protocol
        if isinstance(message, str):
            proto.send_text(message)
        elif isinstance(message, bytes | bytearray | memoryview):
            proto.send_bytes(message)
        elif isinstance(message, dict):
            proto.send_text(dumps(message))
        else:
            raise TypeError(f"cannot send {type(message).__name__}; use str, bytes or dict")
        self.messages_out += 1
        out = proto.data_to_send_vectored()
        return out[0] if len(out) == 1 else out

    def send_nowait(self, message: Message | dict[str, Any]) -> None:
        """Send a message without waiting, from any task (routed messages, notices).

        Whatever the kernel does not take at once is drained by a task in ``background``
        (bounded by ``send_timeout``).

        Raises:
            ConnectionClosed: the connection is closed or closing.
            trio.WouldBlock: more than ``write_buffer_size`` bytes are queued already: the
                peer is not reading. Nothing was sent.
        """
        self._check_writable()
        if self._pending_size > self.write_buffer_size:
            raise trio.WouldBlock
        if not self.write_nowait(self._encode(message)):
            self.drain_soon()

    def send_frames_nowait(self, frames: bytes, count: int = 1) -> bool:
        """Write ``count`` data frames encoded once for many connections (broadcast).

        Returns False when part of it is left pending: then :meth:`drain` must be awaited
        (by the caller's own task) before more is certain to go out. Once the connection is
        closing nothing is written (only the close handshake goes out now) and True is
        returned.

        Raises:
            ConnectionClosed: the transport is gone.
        """
        if self.protocol.state is not _OPEN or self._closed is not None:
            return True
        self.messages_out += count
        return self.write_nowait(frames)

    def ping_nowait(self, payload: bytes = b"keepalive") -> None:
        """Send a Ping without waiting (keepalive) and note when; harmless once closing."""
        if not self.writable:
            return
        self.ping_sent_at = trio.current_time()
        self.protocol.send_ping(payload)
        try:
            if not self.write_nowait(self.protocol.data_to_send()):
                self.drain_soon()
        except ConnectionClosed:
            pass

    def close_nowait(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool:
        """Start the close handshake without waiting; the reader sees the peer's reply.

        Returns False when part of the Close is left pending: the caller drains (or gives
        up and aborts). Harmless once closing (returns True).

        Raises:
            ConnectionClosed: the transport is gone.
        """
        if not self.writable:
            return True
        self.protocol.send_close(code, reason)
        return self.write_nowait(self.protocol.data_to_send())

    def drain_soon(self) -> None:
        """Have what is pending written by a task in ``background`` (bounded by
        ``send_timeout``), for a caller that must not wait; harmless when one already is."""
        if self._drain_task or self.background is None:
            return
        self._drain_task = True
        self.background.start_soon(self._background_drain)

    async def _background_drain(self) -> None:
        try:
            await self.drain()
        except ConnectionClosed:
            pass
        finally:
            self._drain_task = False

    async def ping(self, payload: bytes | None = None) -> trio.Event:
        """Send a Ping; return an event set when its Pong arrives (or the connection ends).

        The Pong is seen by whichever task is receiving; someone must be.
        """
        self._check_writable()
        if payload is None:
            payload = next(_ids).to_bytes(8, "big")
        event = trio.Event()
        self._pong_waiters[payload] = event
        self.protocol.send_ping(payload)
        await self._write(self.protocol.data_to_send())
        return event

    async def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a Close frame if the connection is still open; the reader sees the reply."""
        if self._closed is None and self.protocol.state is ConnectionState.OPEN:
            self.protocol.send_close(code, reason)
            try:
                await self._write(self.protocol.data_to_send())
            except ConnectionClosed:
                pass

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close: send Close, wait up to ``close_timeout`` for the reply, close the transport.

        Call it from the task that receives (or when no task receives). Cancellation
        closes the transport at once.
        """
        try:
            await self.send_close(code, reason)
            with trio.move_on_after(self.close_timeout):
                while self._closed is None:
                    if self._reader_running:
                        # The background reader sees the reply; what it queued after our
                        # Close is not wanted, and must not stop it reading.
                        self._inbox.clear()
                        self._inbox_head = 0
                        self._inbox_event()
                        await self._wait_inbox()
                    else:
                        await self._read_once()
        finally:
            if self._closed is None:
                self._finish(closed_exception(code, reason))
            await self.transport.aclose()
