"""The delivery engine: local fan-out of queue messages to sockets, never waiting.

Theory of operation
-------------------
The broker hands this node each message of a queue once; the hub appends it to the
queue's *unflushed* list and :meth:`DeliveryEngine.schedule` wakes the flusher, which runs
as soon as the delivering task reaches a checkpoint. (A shared broker's client hands over
the messages it read one per scheduler step; with such a broker the flusher first lets
the steps that bring more run, a bounded number of them, so that a burst is not written
one message at a time.) For every queue with messages:

* the frames delivered since the last flush are joined into one ``bytes`` (once per
  queue, and once per compression variant, see below);
* every **idle** subscriber (nothing waiting in its buffer, nothing pending on its
  connection) gets that same object with one non-blocking
  :meth:`~trio_ws.WebSocketConnection.send_frames_nowait`;
* **busy** subscribers get the messages appended to their bounded buffer instead.

So a paced stream costs one non-blocking ``send()`` per subscriber and message and no task
switch per subscriber, and a burst costs one ``send()`` per subscriber for everything
delivered since the last flush (measured: the flusher writing straight to idle subscribers
and leaving only backlogged ones to their task is the cheapest fan-out).

A subscriber becomes busy (DRAINING, :mod:`trio_ws._subscriber`) when the kernel did not
take a whole write, or when something was queued for it (a replay, a ``subscribed``
reply). A busy subscriber has exactly one send task, started on demand in the engine's
nursery: it waits until the connection has written what is pending, takes one round of its
buffer (priority and quota, :class:`~trio_ws._queue_model.SubscriberBuffer`), writes it
with one write, and repeats; when the buffer is empty and everything is written it ends
and the subscriber is idle again. When a queue's lane of the buffer is full the queue's
policy applies: ``drop`` (skip ahead, then a ``gap`` notice with the exact missed range)
or ``disconnect`` (close 1013). The publisher and the other subscribers never wait.

Compression. A connection that negotiated permessage-deflate with
``server_no_context_takeover`` (the server's default) can take a frame compressed by anyone
with the same window size, so each message is compressed at most once per window size and
the compressed frame is shared too. A connection whose compressor keeps its context gets
the uncompressed frame, which RFC 7692 always allows (a message whose RSV1 bit is clear
"is not compressed", §6). Notices (``subscribed``, ``gap``) are always sent uncompressed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import trio

from ._connection import ConnectionClosed, WebSocketConnection, dumps
from ._queue_model import OVERFLOW, Gap, Message
from ._subscriber import CLOSED, DRAINING, IDLE, ChannelSubscriber, Subscriber
from .protocol._deflate import MessageCompressor
from .protocol._errors import CloseCode
from .protocol._frames import Opcode, encode_frame

if TYPE_CHECKING:
    from ._broadcast import BroadcastQueue

__all__ = ["DeliveryEngine", "LostMessages", "notice_frame"]

log = logging.getLogger("trio_ws.broadcast")

_TEXT = Opcode.TEXT
# A backlogged subscriber's round is joined into one write of at most about this many
# bytes (and at least one message): the rest waits in its buffer as shared messages, not
# as a joined copy per subscriber.
_ROUND_BYTES = 256 << 10
# The most scheduler passes the flusher lets messages gather for (see DeliveryEngine):
# a burst of messages that arrive one per pass is written in 1/GATHER_STEPS the writes,
# and none waits more than this many passes.
GATHER_STEPS = 32
# ... and for at most this long: a busy node's passes are long (500 echo connections:
# several ms each), and a message should not wait many of them.
GATHER_SECONDS = 0.002


class LostMessages(Message):
    """A ``gap`` notice travelling in a queue's live stream, numbered by the last seq it
    reports: messages ``first`` .. ``seq`` will never come (the broker lost them while this
    node was away). It takes the place of those messages in every buffer and write, so it
    reaches each subscriber in order, and dropping it from a full lane widens the lane's
    gap over exactly the same range."""

    __slots__ = ("first",)

    def __init__(self, queue: str, first: int, last: int) -> None:
        body = dumps({"type": "gap", "group": queue, "from": first, "to": last}).encode()
        frame = encode_frame(_TEXT, body)
        super().__init__(last, frame, payload=memoryview(frame)[len(frame) - len(body) :])
        self.first = first


def notice_frame(message: dict[str, Any]) -> bytes:
    """The frame of a notice (``subscribed``, ``gap``): uncompressed text."""
    return encode_frame(_TEXT, dumps(message).encode())


class DeliveryEngine:
    """The flusher and the send tasks of one hub (see the module docstring).

    Args:
        remove: forgets a subscriber whose connection failed (the hub's ``remove``).
        close_timeout: seconds a too-slow subscriber gets to take its Close frame.
        compression_level: zlib level of the shared compressed frames.
        gather: messages arrive one per scheduler step (a shared broker's): before a
            flush, let the steps that bring more run, at most :data:`GATHER_STEPS`.
    """

    def __init__(
        self,
        remove: Callable[[Subscriber], None],
        *,
        close_timeout: float,
        compression_level: int,
        gather: bool = False,
    ) -> None:
        self._remove = remove
        self.gather = gather
        self.close_timeout = close_timeout
        self.compression_level = compression_level
        self._dirty: list[BroadcastQueue] = []
        self._stalled: list[Subscriber] = []  # busy before run() started
        self._wakeup: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._compressors: dict[int, MessageCompressor] = {}
        self.kicked = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled: the flusher, and the nursery of the send tasks."""
        if self._nursery is not None:
            raise RuntimeError("this hub is running already")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                stalled, self._stalled = self._stalled, []
                for sub in stalled:
                    if sub._state is DRAINING:
                        nursery.start_soon(self._send_task, sub)
                task_status.started()
                while True:
                    if self._dirty:
                        if self.gather:
                            await self._gather()
                        self._flush()
                    wakeup = self._wakeup = trio.Event()
                    await wakeup.wait()
            finally:
                self._nursery = None
                self._wakeup = None
                nursery.cancel_scope.cancel()

    async def _gather(self) -> None:
        """Yield while the scheduler's passes bring more messages, at most
        :data:`GATHER_STEPS` times: a burst from a broker that hands them over one per
        step goes out in a few writes per subscriber.

        It stops after two passes that brought nothing: trio runs the tasks of a pass in
        any order, so in one pass the flusher may look before the broker's task delivers;
        in the next it has always delivered (if it still has messages). A lone message
        waits two passes, and no message more than :data:`GATHER_SECONDS` (on a busy node
        a pass is long)."""
        pending = self._pending()
        quiet = 0
        deadline = trio.current_time() + GATHER_SECONDS
        for _ in range(GATHER_STEPS):
            await trio.lowlevel.checkpoint()
            if trio.current_time() >= deadline:
                return
            now = self._pending()
            if now == pending:
                quiet += 1
                if quiet == 2:
                    return
            else:
                pending, quiet = now, 0

    def _pending(self) -> int:
        return sum(len(queue._unflushed) for queue in self._dirty)

    def schedule(self, queue: BroadcastQueue) -> None:
        """``queue`` has unflushed messages: flush it at the flusher's next turn."""
        self._dirty.append(queue)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        if len(dirty) > 1:
            dirty.sort(key=lambda q: -q.options.priority)
        for queue in dirty:
            self.flush_queue(queue)

    def flush_queue(self, queue: BroadcastQueue) -> None:
        """Hand the queue's unflushed messages to its subscribers (see the module doc)."""
        messages = queue._unflushed
        if not messages:
            return
        queue._unflushed = []
        subs = queue._subs
        if len(messages) == 1:
            live = messages if not messages[0].retracted else []
        else:
            live = [m for m in messages if not m.retracted]
        if not subs or not live:
            return
        count = len(live)
        plain = live[0].frame if count == 1 else b"".join([m.frame for m in live])
        variants: dict[int, bytes] | None = None
        failed: list[Subscriber] | None = None
        kicked: list[Subscriber] | None = None
        policy = queue.options.policy
        for sub, lane in subs.items():
            state = sub._state
            if state is IDLE and not lane.held:
                conn = sub.connection
                assert conn is not None
                if sub._variant:
                    if variants is None:
                        variants = {}
                    data = variants.get(sub._variant)
                    if data is None:
                        data = variants[sub._variant] = b"".join(
                            [self._compressed(m, sub._variant) for m in live]
                        )
                else:
                    data = plain
                try:
                    if not conn.send_frames_nowait(data, count):
                        sub._move(DRAINING)
                        self._start_send_task(sub)
                except ConnectionClosed:
                    if failed is None:
                        failed = []
                    failed.append(sub)
            elif state is not CLOSED:
                offer = sub._buffer.offer
                for message in live:  # a retracted one must not take a lane's room
                    result = offer(lane, message, policy)
                    if result:
                        if result == OVERFLOW:
                            if kicked is None:
                                kicked = []
                            kicked.append(sub)
                            break
                        queue.dropped += 1
                if sub._waiter is not None:
                    assert isinstance(sub, ChannelSubscriber)
                    sub._notify()
        if failed:
            for sub in failed:
                self._remove(sub)
        if kicked:
            for sub in kicked:
                self.kick(sub, queue)

    def _compressed(self, message: Message, window_bits: int) -> bytes:
        cache = message.compressed
        if cache is None:
            cache = message.compressed = {}
        frame = cache.get(window_bits)
        if frame is None:
            compressor = self._compressors.get(window_bits)
            if compressor is None:
                compressor = self._compressors[window_bits] = MessageCompressor(
                    window_bits=window_bits,
                    no_context_takeover=True,
                    level=self.compression_level,
                )
            payload = compressor.compress(cast(bytes, message.payload))  # zlib takes a view
            frame = cache[window_bits] = encode_frame(message.opcode, payload, rsv1=True)
        return frame

    def _render(self, sub: Subscriber, items: Iterable[Message | Gap | bytes]) -> bytes:
        variant = sub._variant
        frames: list[bytes] = []
        for item in items:
            if type(item) is Message or type(item) is LostMessages:
                frames.append(self._compressed(item, variant) if variant else item.frame)
            elif type(item) is Gap:
                name = getattr(item.queue, "name", "")
                frames.append(
                    notice_frame({"type": "gap", "group": name, "from": item[0], "to": item[1]})
                )
            else:
                assert isinstance(item, bytes)
                frames.append(item)
        return b"".join(frames)

    def _pump(self, sub: Subscriber) -> bool:
        """Write rounds of ``sub``'s buffer until it is empty (True) or the socket is full."""
        conn = sub.connection
        assert conn is not None
        buffer = sub._buffer
        while True:
            items = buffer.take_round(_ROUND_BYTES)
            if not items:
                return True
            if not conn.writable:
                buffer.clear()
                return True
            if not conn.send_frames_nowait(self._render(sub, items), len(items)):
                return False

    def deliver_now(self, sub: Subscriber) -> None:
        """Write what was just queued for an idle subscriber, before returning.

        The ``subscribed`` reply and the replay then leave before any reply the caller
        sends next on the same connection, instead of waiting for the flusher's turn.
        """
        if sub._state is not IDLE:
            if sub._waiter is not None:
                assert isinstance(sub, ChannelSubscriber)
                sub._notify()
            return
        try:
            if not self._pump(sub):
                sub._move(DRAINING)
                self._start_send_task(sub)
        except ConnectionClosed:
            self._remove(sub)

    def _start_send_task(self, sub: Subscriber) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._send_task, sub)
        else:
            self._stalled.append(sub)

    async def _send_task(self, sub: Subscriber) -> None:
        """The send task of a busy subscriber: drain, write one round, repeat; then end."""
        conn = sub.connection
        assert conn is not None
        try:
            while True:
                await conn.drain()
                if sub._state is not DRAINING:
                    return
                if self._pump(sub):
                    sub._move(IDLE)
                    return
        except ConnectionClosed:
            self._remove(sub)

    def kick(self, sub: Subscriber, queue: BroadcastQueue) -> None:
        """Policy ``disconnect``: remove ``sub`` and close its connection with 1013."""
        if sub._state is CLOSED:
            return
        self.kicked += 1
        conn = sub.connection
        self._remove(sub)
        if conn is None:
            assert isinstance(sub, ChannelSubscriber)
            log.info("channel subscriber %r too slow for queue %s", sub.name, queue.name)
            sub.overflowed = True
            sub._notify()
            return
        log.info("#%d too slow for queue %s: closing (1013)", conn.id, queue.name)
        if self._nursery is not None:
            self._nursery.start_soon(self._close_slow, conn)
        else:
            conn.abort(CloseCode.TRY_AGAIN_LATER, "subscriber too slow")

    async def _close_slow(self, conn: WebSocketConnection) -> None:
        """Send Close 1013 behind what is pending; drop the connection if it cannot be sent.

        Once the Close is written, the connection's reader sees the peer's reply (or its
        keepalive gives up on a dead peer).
        """
        reason = "subscriber too slow"
        try:
            conn.close_nowait(CloseCode.TRY_AGAIN_LATER, reason)
            with trio.move_on_after(self.close_timeout):
                await conn.drain()
                return  # the Close is on its way; the reader sees the peer's reply
        except ConnectionClosed:
            return
        if conn.closed is None:
            conn.abort(CloseCode.TRY_AGAIN_LATER, reason)
