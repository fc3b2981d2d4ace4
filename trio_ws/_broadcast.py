"""Broadcast queues: publish once, deliver to every subscriber, never wait for the slowest.

Theory of operation
-------------------
A :class:`BroadcastHub` holds named :class:`BroadcastQueue` objects and one
:class:`Subscriber` per connection that subscribed to something. The pure bookkeeping
(sequence numbers, history, replay, per-subscriber lanes, gaps, priority rounds) lives in
:mod:`trio_ws._queue_model`; this module adds encoding, sockets and tasks.

:meth:`BroadcastQueue.publish` is synchronous and never blocks (STYLE.md rule 9). It numbers
the message, encodes its frame once, keeps it in the history, appends it to the queue's
*unflushed* list and wakes the hub's flusher, which runs as soon as the publisher reaches a
checkpoint. The flusher then handles every queue that received messages:

* it joins the frames published since the last flush into one ``bytes`` (once per queue,
  and once per compression variant, see below);
* to every **idle** subscriber (nothing waiting in its buffer, nothing pending on its
  connection) it writes that same object with one non-blocking ``write_nowait``;
* **busy** subscribers get the messages appended to their bounded buffer instead.

So a paced stream costs one non-blocking ``send()`` per subscriber and message and no task
switch per subscriber, and a burst costs one ``send()`` per subscriber for everything
published since the last flush (measured in issue 4: the publisher writing straight to
idle subscribers and leaving only backlogged ones to their task is the cheapest fan-out).

A subscriber becomes busy when the kernel did not take a whole write (the rest waits on the
connection) or when something was queued for it (a replay, a ``subscribed`` reply). A busy
subscriber has exactly one send task, started on demand in the hub's nursery: it waits until
the connection has written what is pending, takes one round of its buffer (priority and
quota, see :class:`~trio_ws._queue_model.SubscriberBuffer`), writes it with one write, and
repeats; when the buffer is empty and everything is written it ends and the subscriber is
idle again. A subscriber that is not reading therefore holds at most one round pending on
its connection plus ``max_subscriber_buffer`` messages per queue in its buffer; when a
queue's lane of the buffer is full the queue's policy applies: ``drop`` (skip ahead, then a
``gap`` notice with the exact missed range) or ``disconnect`` (close 1013). The publisher
and the other subscribers never wait for it.

Compression. A connection that negotiated permessage-deflate with
``server_no_context_takeover`` (the server's default) can take a frame compressed by anyone
with the same window size, so each message is compressed at most once per window size and
the compressed frame is shared too. A connection whose compressor keeps its context cannot
share one: it gets the uncompressed frame, which RFC 7692 always allows (a message whose
RSV1 bit is clear "is not compressed", §6) and which leaves its compression context alone.
Notices (``subscribed``, ``gap``) are always sent uncompressed.

Ownership. :meth:`BroadcastHub.run` is the hub's long-running task: the flusher, and the
nursery of the send tasks and of the closing of too-slow subscribers. Publishing before
``run()`` starts is allowed; delivery starts with it. A connection's subscriber must be
:meth:`removed <BroadcastHub.remove>` when the connection ends: it then leaves every queue
and presence list at once and costs nothing afterwards (a send task still waiting on the
closed connection ends with it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from ._connection import ConnectionClosed, WebSocketConnection, dumps
from ._queue_model import (
    OVERFLOW,
    POLICIES,
    Gap,
    History,
    Lane,
    Message,
    Policy,
    QueueError,
    RateLimiter,
    SubscriberBuffer,
    check_queue_name,
)
from .protocol._connection import ConnectionState
from .protocol._deflate import MessageCompressor
from .protocol._errors import CloseCode
from .protocol._frames import Opcode, encode_frame

__all__ = [
    "BroadcastHub",
    "BroadcastQueue",
    "BroadcastStatistics",
    "QueueError",
    "Subscriber",
]

log = logging.getLogger("trio_ws.broadcast")

_OPEN = ConnectionState.OPEN
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY

# Subscriber states (plain ints: they are compared once per subscriber and message).
_IDLE = 0  # nothing waiting: the flusher writes to it directly
_READY = 1  # something waiting in its buffer, connection writable: the flusher pumps it
_DRAINING = 2  # its send task owns it until the connection has written everything
_CLOSED = 3  # removed: gets nothing

# publish() flushes by itself when a queue has this many messages waiting for the flusher,
# so a publisher that never reaches a checkpoint cannot grow the unflushed list unbounded.
_MAX_UNFLUSHED = 1024


def _notice(message: dict[str, Any]) -> bytes:
    return encode_frame(_TEXT, dumps(message).encode())


@attrs.frozen
class BroadcastStatistics:
    """A snapshot of a hub's counters (``BroadcastHub.statistics()``)."""

    queues: int
    """Queues that exist now."""
    subscribers: int
    """Subscribers registered now."""
    published: int
    """Messages published since start, all queues."""
    dropped: int
    """Messages skipped for subscribers too slow to take them (policy ``drop``)."""
    kicked: int
    """Subscribers closed with 1013 for being too slow (policy ``disconnect``)."""
    buffered: int
    """Messages waiting in subscriber buffers now."""


class Subscriber:
    """One connection's side of the broadcast: its name, buffer and state.

    Create it with :meth:`BroadcastHub.subscriber`, one per connection.

    Attributes:
        connection: the connection the messages are written to.
        name: the name shown in presence lists (``members``); ``""`` shows nothing.
    """

    __slots__ = ("_buffer", "_state", "_variant", "connection", "name")

    def __init__(self, connection: WebSocketConnection, name: str, capacity: int) -> None:
        self.connection = connection
        self.name = name
        self._buffer = SubscriberBuffer(capacity)
        self._state = _IDLE
        deflate = connection.protocol.deflate
        # 0: uncompressed frames; else the window size of the shareable compressed frames.
        self._variant = (
            deflate.server_max_window_bits
            if deflate is not None and deflate.server_no_context_takeover
            else 0
        )

    def __repr__(self) -> str:
        return f"<Subscriber {self.name!r} #{self.connection.id}>"

    @property
    def subscriptions(self) -> list[str]:
        """Names of the queues subscribed to, in subscription order."""
        return [q.name for q in self._buffer.lanes if isinstance(q, BroadcastQueue)]

    @property
    def buffered(self) -> int:
        """Messages waiting in this subscriber's buffer."""
        return self._buffer.size

    @property
    def removed(self) -> bool:
        """Whether the subscriber was removed (disconnect, takeover, or too slow)."""
        return self._state == _CLOSED


class BroadcastQueue:
    """A named queue: numbers, keeps and delivers what is published to it.

    Made by :meth:`BroadcastHub.queue` (declared) or :meth:`BroadcastHub.get_or_create`.
    """

    def __init__(
        self,
        hub: BroadcastHub,
        name: str,
        *,
        history: int = 100,
        policy: Policy = "drop",
        priority: int = 0,
        quota: int | None = None,
        ttl: float | None = None,
        max_publish_rate: tuple[int, float] | None = None,
        auto_subscribe: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if quota is not None and quota <= 0:
            raise ValueError(f"quota must be positive or None, not {quota}")
        self.hub = hub
        self.name = name
        self.policy: Policy = policy
        self.priority = priority
        self.quota = quota
        self.auto_subscribe = auto_subscribe
        self._history = History(history, ttl=ttl)
        self._rate = RateLimiter(*max_publish_rate) if max_publish_rate is not None else None
        self._subs: dict[Subscriber, Lane] = {}
        self._unflushed: list[Message] = []
        self.published = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<BroadcastQueue {self.name!r} seq={self.seq} subscribers={len(self._subs)}>"

    @property
    def seq(self) -> int:
        """The last sequence number published (0 before the first message)."""
        return self._history.seq

    @property
    def ttl(self) -> float | None:
        return self._history.ttl

    def __len__(self) -> int:
        """The number of subscribers."""
        return len(self._subs)

    def members(self) -> list[str]:
        """The names subscribed to this queue, sorted (presence)."""
        return sorted({sub.name for sub in self._subs if sub.name})

    def publish(self, message: dict[str, Any] | str | bytes, *, key: str | None = None) -> int:
        """Publish ``message`` to every subscriber; return its sequence number.

        Never blocks. A ``dict`` is sent as JSON text with ``"seq"`` added; ``str`` as a
        text frame and ``bytes`` as a binary frame, unchanged. ``key`` names the message for
        :meth:`retract`.

        Raises:
            QueueError: ``rate_limited`` when the queue's ``max_publish_rate`` is exceeded.
        """
        rate = self._rate
        history = self._history
        now = 0.0
        if rate is not None or history.ttl is not None:
            now = trio.current_time()
            if rate is not None and not rate.allow(now):
                raise QueueError(
                    "rate_limited",
                    f"group {self.name} takes at most {rate.count} messages per {rate.period:g} s",
                )
        seq = history.seq + 1
        if type(message) is str:
            payload = message.encode()
            opcode = _TEXT
        elif isinstance(message, dict):
            payload = dumps({**message, "seq": seq}).encode()
            opcode = _TEXT
        elif isinstance(message, bytes | bytearray | memoryview):
            payload = bytes(message)
            opcode = _BINARY
        elif isinstance(message, str):
            payload = message.encode()
            opcode = _TEXT
        else:
            raise TypeError(f"cannot publish {type(message).__name__}; use dict, str or bytes")
        msg = Message(
            seq, encode_frame(opcode, payload), payload=payload, opcode=opcode, key=key, time=now
        )
        history.append(msg)
        self.published += 1
        if self._subs:
            unflushed = self._unflushed
            unflushed.append(msg)
            if len(unflushed) == 1:
                self.hub._schedule(self)
            elif len(unflushed) >= _MAX_UNFLUSHED:
                self.hub._flush_queue(self)
        return seq

    def retract(self, key: str) -> int:
        """Kill the kept messages published with ``key`` (Push Framework's killKey).

        Subscribers that have not been handed them yet (slow ones, late ones asking for a
        replay) never get them, and no gap is reported for them: they were withdrawn, not
        missed. Returns how many messages were withdrawn.
        """
        return self._history.retract(key)


class BroadcastHub:
    """Queues, subscribers, and the task that delivers (see the module docstring).

    Args:
        max_subscriber_buffer: messages of one queue a subscriber may have waiting before
            the queue's policy applies (``ServerConfig.max_subscriber_buffer``).
        max_queues: how many queues :meth:`get_or_create` may create on first use.
        dynamic_queues: whether unknown queue names create queues (else ``unknown_group``).
        queue_defaults: keyword arguments of :meth:`queue` for queues created on first use.
        close_timeout: seconds a too-slow subscriber (policy ``disconnect``) gets to take its
            Close frame before the connection is dropped.
        compression_level: zlib level of the shared compressed frames.
    """

    def __init__(
        self,
        *,
        max_subscriber_buffer: int = 1000,
        max_queues: int = 1000,
        dynamic_queues: bool = True,
        queue_defaults: Mapping[str, Any] | None = None,
        close_timeout: float = 5.0,
        compression_level: int = 6,
    ) -> None:
        if max_subscriber_buffer <= 0:
            raise ValueError("max_subscriber_buffer must be positive")
        self.max_subscriber_buffer = max_subscriber_buffer
        self.max_queues = max_queues
        self.dynamic_queues = dynamic_queues
        self.queue_defaults = dict(queue_defaults or {})
        self.close_timeout = close_timeout
        self.compression_level = compression_level
        self.queues: dict[str, BroadcastQueue] = {}
        self._dynamic = 0
        self._subscribers: dict[Subscriber, None] = {}
        self._dirty: list[BroadcastQueue] = []
        self._ready: dict[Subscriber, None] = {}
        self._stalled: list[Subscriber] = []  # busy before run() started
        self._wakeup: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._compressors: dict[int, MessageCompressor] = {}
        self.kicked = 0

    # ------------------------------------------------------------------ queues

    def queue(
        self,
        name: str,
        *,
        history: int = 100,
        policy: Policy = "drop",
        priority: int = 0,
        quota: int | None = None,
        ttl: float | None = None,
        max_publish_rate: tuple[int, float] | None = None,
        auto_subscribe: bool = False,
    ) -> BroadcastQueue:
        """Declare a queue.

        Args:
            name: 1-64 characters of ``A-Z a-z 0-9 _ . -``.
            history: messages kept for replay (``since``).
            policy: ``"drop"`` or ``"disconnect"``, for a subscriber whose buffer is full.
            priority: queues of higher priority are served first to a busy subscriber.
            quota: at most this many messages of this queue per round (``None``: all).
            ttl: seconds after which a kept message is no longer replayed.
            max_publish_rate: ``(count, period)``: at most ``count`` publishes per
                ``period`` seconds; more raise ``QueueError("rate_limited")``.
            auto_subscribe: every subscriber the hub makes is subscribed at once
                (Push Framework's ``requireRegistration=false``).

        Raises:
            QueueError: ``bad_group`` for a name breaking the rules.
            ValueError: the queue exists already, or an option is out of range.
        """
        check_queue_name(name)
        if name in self.queues:
            raise ValueError(f"queue {name!r} exists already")
        queue = BroadcastQueue(
            self,
            name,
            history=history,
            policy=policy,
            priority=priority,
            quota=quota,
            ttl=ttl,
            max_publish_rate=max_publish_rate,
            auto_subscribe=auto_subscribe,
        )
        self.queues[name] = queue
        if auto_subscribe:
            for sub in self._subscribers:
                self.subscribe(queue, sub)
        return queue

    def get(self, name: str) -> BroadcastQueue | None:
        """The queue called ``name``, or ``None``."""
        return self.queues.get(name)

    def get_or_create(self, name: str) -> BroadcastQueue:
        """The queue called ``name``, created with ``queue_defaults`` on first use.

        Raises:
            QueueError: ``bad_group``, ``unknown_group`` (dynamic queues are off) or
                ``too_many_groups`` (``max_queues`` were created on first use already).
        """
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        check_queue_name(name)
        if not self.dynamic_queues:
            raise QueueError("unknown_group", f"no group {name}")
        if self._dynamic >= self.max_queues:
            raise QueueError("too_many_groups", f"at most {self.max_queues} groups may exist")
        queue = self.queue(name, **self.queue_defaults)
        self._dynamic += 1
        return queue

    def publish(
        self, queue: str | BroadcastQueue, message: dict[str, Any] | str | bytes, **kw: Any
    ) -> int:
        """``get_or_create(queue).publish(message, ...)``."""
        return self._resolve(queue).publish(message, **kw)

    def members(self, queue: str | BroadcastQueue) -> list[str]:
        """The sorted names subscribed to ``queue`` (``[]`` for an unknown queue)."""
        q = self.queues.get(queue) if isinstance(queue, str) else queue
        return q.members() if q is not None else []

    def _resolve(self, queue: str | BroadcastQueue) -> BroadcastQueue:
        return queue if isinstance(queue, BroadcastQueue) else self.get_or_create(queue)

    # ------------------------------------------------------------------ subscribers

    def subscriber(self, connection: WebSocketConnection, name: str = "") -> Subscriber:
        """Make the subscriber of ``connection`` (one per connection) and register it.

        It is subscribed at once to every ``auto_subscribe`` queue.
        """
        sub = Subscriber(connection, name, self.max_subscriber_buffer)
        self._subscribers[sub] = None
        for queue in self.queues.values():
            if queue.auto_subscribe:
                self.subscribe(queue, sub)
        return sub

    def subscribe(
        self,
        queue: str | BroadcastQueue,
        subscriber: Subscriber,
        *,
        since: int | None = None,
        reply: bool = False,
    ) -> int:
        """Subscribe; return the seq after which the live stream starts for this subscriber.

        With ``since``, the subscriber first gets what it missed: a ``gap`` notice
        ``{"type": "gap", "group": ..., "from": a, "to": b}`` for the part of ``since+1 ..
        seq`` no longer kept (or expired), then the kept messages after ``since``, then the
        live stream, with no duplicate and no hole. All of it is decided here, synchronously,
        so no publish can slip in between. With ``reply``, the PROTOCOL.md reply
        ``{"type": "subscribed", "group": ..., "seq": n}`` is queued ahead of all that.

        Subscribing twice is harmless: nothing is replayed again, and the returned seq is
        the last one already handed to the subscriber's connection.

        Raises:
            QueueError: as :meth:`get_or_create`, for a queue name.
        """
        q = self._resolve(queue)
        if subscriber._state == _CLOSED:
            return q.seq
        self._flush_queue(q)  # what was published before now goes to the others only
        lane = q._subs.get(subscriber)
        if lane is not None:
            seq = lane.position(q.seq)
            if reply:
                lane.notices.append(self._subscribed_frame(q, seq))
                self._deliver_now(subscriber)
            return seq
        seq = q.seq
        gap: Gap | None = None
        messages: list[Message] = []
        if since is not None:
            now = trio.current_time() if q.ttl is not None else 0.0
            gap, messages = q._history.replay(since, now)
        lane = subscriber._buffer.add_lane(
            q,
            priority=q.priority,
            quota=q.quota,
            notices=[self._subscribed_frame(q, seq)] if reply else (),
            gap=gap,
            messages=messages,
        )
        q._subs[subscriber] = lane
        if lane:
            self._deliver_now(subscriber)
        return seq

    def unsubscribe(self, queue: str | BroadcastQueue, subscriber: Subscriber) -> bool:
        """Unsubscribe; return whether it was subscribed. Harmless when it was not.

        No message of the queue is written to the connection after this returns (what is
        still waiting in the subscriber's buffer is forgotten).
        """
        q = self.queues.get(queue) if isinstance(queue, str) else queue
        if q is None or q._subs.pop(subscriber, None) is None:
            return False
        subscriber._buffer.remove_lane(q)
        return True

    def remove(self, subscriber: Subscriber) -> None:
        """Forget a subscriber: every queue and presence list at once. Idempotent.

        Call it when the connection ends. Nothing is written to it afterwards.
        """
        if subscriber._state == _CLOSED:
            return
        subscriber._state = _CLOSED
        for q in subscriber._buffer.lanes:
            assert isinstance(q, BroadcastQueue)
            q._subs.pop(subscriber, None)
        subscriber._buffer.clear()
        self._subscribers.pop(subscriber, None)
        self._ready.pop(subscriber, None)

    def take_over(self, old: Subscriber, new: Subscriber) -> None:
        """Move ``old``'s subscriptions to ``new`` (a name taken over by a new connection).

        ``new`` continues each queue right after the last message handed to ``old``'s
        connection: what was still waiting in ``old``'s buffer is replayed from the history
        (a ``gap`` where it is no longer kept). Then ``old`` is removed.
        """
        if old is new:
            return
        for q in list(old._buffer.lanes):
            assert isinstance(q, BroadcastQueue)
            self._flush_queue(q)
            lane = q._subs.get(old)
            if lane is not None and not new.removed:
                self.subscribe(q, new, since=lane.position(q.seq))
        self.remove(old)

    def statistics(self) -> BroadcastStatistics:
        return BroadcastStatistics(
            queues=len(self.queues),
            subscribers=len(self._subscribers),
            published=sum(q.published for q in self.queues.values()),
            dropped=sum(q.dropped for q in self.queues.values()),
            kicked=self.kicked,
            buffered=sum(s._buffer.size for s in self._subscribers),
        )

    # ------------------------------------------------------------------ delivery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled: the flusher, and the nursery of the send tasks.

        Run it once per hub, in the nursery that outlives the connections' handlers (for
        example ``Server.serve(..., background=[hub.run])``). Cancelling it cancels the
        send tasks; a connection cancelled in the middle of a frame is aborted.
        """
        if self._nursery is not None:
            raise RuntimeError("this hub is running already")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                stalled, self._stalled = self._stalled, []
                for sub in stalled:
                    if sub._state == _DRAINING:
                        nursery.start_soon(self._send_task, sub)
                task_status.started()
                while True:
                    if self._dirty or self._ready:
                        self._flush()
                    wakeup = self._wakeup = trio.Event()
                    await wakeup.wait()
            finally:
                self._nursery = None
                self._wakeup = None
                nursery.cancel_scope.cancel()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _schedule(self, queue: BroadcastQueue) -> None:
        self._dirty.append(queue)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _mark_ready(self, sub: Subscriber) -> None:
        if sub._state == _IDLE:
            sub._state = _READY
            self._ready[sub] = None
            self._wake()

    def _deliver_now(self, sub: Subscriber) -> None:
        """Write what ``subscribe`` just queued for an idle subscriber, before returning.

        The ``subscribed`` reply and the replay then leave before any reply the caller
        sends next on the same connection, instead of waiting for the flusher's turn.
        """
        if sub._state == _IDLE:
            sub._state = _READY
            self._pump_busy(sub)

    def _flush(self) -> None:
        dirty = self._dirty
        if dirty:
            self._dirty = []
            if len(dirty) > 1:
                dirty.sort(key=lambda q: -q.priority)
            for queue in dirty:
                self._flush_queue(queue)
        ready = self._ready
        if ready:
            self._ready = {}
            for sub in ready:
                if sub._state == _READY:
                    self._pump_busy(sub)

    def _flush_queue(self, queue: BroadcastQueue) -> None:
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
        for sub, lane in subs.items():
            state = sub._state
            if state == _IDLE:
                conn = sub.connection
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
                    if conn.protocol.state is not _OPEN:
                        continue  # closing: the close handshake is all that goes out now
                    if not conn.write_nowait(data):
                        sub._state = _DRAINING
                        self._start_send_task(sub)
                    conn.messages_out += count
                except ConnectionClosed:
                    if failed is None:
                        failed = []
                    failed.append(sub)
            elif state != _CLOSED:
                offer = sub._buffer.offer
                policy = queue.policy
                for message in messages:
                    result = offer(lane, message, policy)
                    if result:
                        if result == OVERFLOW:
                            if kicked is None:
                                kicked = []
                            kicked.append(sub)
                            break
                        queue.dropped += 1
        if failed:
            for sub in failed:
                self.remove(sub)
        if kicked:
            for sub in kicked:
                self._kick(sub, queue)

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
            payload = compressor.compress(message.payload)
            frame = cache[window_bits] = encode_frame(message.opcode, payload, rsv1=True)
        return frame

    def _render(self, sub: Subscriber, items: Iterable[Message | Gap | bytes]) -> bytes:
        variant = sub._variant
        frames: list[bytes] = []
        for item in items:
            if type(item) is Message:
                frames.append(self._compressed(item, variant) if variant else item.frame)
            elif type(item) is Gap:
                assert isinstance(item.queue, BroadcastQueue)
                frames.append(
                    _notice(
                        {"type": "gap", "group": item.queue.name, "from": item[0], "to": item[1]}
                    )
                )
            else:
                assert isinstance(item, bytes)
                frames.append(item)
        return b"".join(frames)

    def _pump(self, sub: Subscriber) -> bool:
        """Write rounds of ``sub``'s buffer until it is empty (True) or the socket is full."""
        conn = sub.connection
        buffer = sub._buffer
        while True:
            items = buffer.take_round()
            if not items:
                return True
            if conn.protocol.state is not _OPEN:
                buffer.clear()
                return True
            conn.messages_out += len(items)
            if not conn.write_nowait(self._render(sub, items)):
                return False

    def _pump_busy(self, sub: Subscriber) -> None:
        try:
            if self._pump(sub):
                sub._state = _IDLE
            else:
                sub._state = _DRAINING
                self._start_send_task(sub)
        except ConnectionClosed:
            self.remove(sub)

    def _start_send_task(self, sub: Subscriber) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._send_task, sub)
        else:
            self._stalled.append(sub)

    async def _send_task(self, sub: Subscriber) -> None:
        """The send task of a busy subscriber: drain, write one round, repeat; then end."""
        conn = sub.connection
        try:
            while True:
                await conn.drain()
                if sub._state != _DRAINING:
                    return
                if self._pump(sub):
                    sub._state = _IDLE
                    return
        except ConnectionClosed:
            self.remove(sub)

    def _kick(self, sub: Subscriber, queue: BroadcastQueue) -> None:
        """Policy ``disconnect``: remove ``sub`` and close its connection with 1013."""
        if sub._state == _CLOSED:
            return
        self.kicked += 1
        conn = sub.connection
        log.info("#%d too slow for queue %s: closing (1013)", conn.id, queue.name)
        self.remove(sub)
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
            if conn.closed is None and conn.protocol.state is _OPEN:
                conn.protocol.send_close(CloseCode.TRY_AGAIN_LATER, reason)
                conn.write_nowait(conn.protocol.data_to_send())
            with trio.move_on_after(self.close_timeout):
                await conn.drain()
                return  # the Close is on its way; the reader sees the peer's reply
        except ConnectionClosed:
            return
        if conn.closed is None:
            conn.abort(CloseCode.TRY_AGAIN_LATER, reason)

    def _subscribed_frame(self, queue: BroadcastQueue, seq: int) -> bytes:
        return _notice({"type": "subscribed", "group": queue.name, "seq": seq})
