"""Broadcast queues: the node's side of publish/subscribe, fed by the broker.

Theory of operation
-------------------
A :class:`BroadcastHub` holds this node's named :class:`BroadcastQueue` objects and its
:class:`~trio_ws._subscriber.Subscriber` objects (one per connection that subscribed to
something, plus in-process :meth:`channels <BroadcastHub.open_subscription>`). What must be
shared lives in the :class:`~trio_ws.brokers.Broker`: sequence numbers, kept history,
presence. The pure bookkeeping (history, replay, per-subscriber lanes, gaps, priority
rounds) is :mod:`trio_ws._queue_model`; writing to sockets is the
:class:`~trio_ws._delivery.DeliveryEngine`.

Publishing. :meth:`BroadcastQueue.publish` encodes the body once and hands it to the
broker, which assigns the seq, keeps the message and delivers it to every node listening to
the queue; this node listens while it has local subscribers. Delivery (``on_message``)
appends the message to the queue's unflushed list and wakes the engine. With the memory
broker all of it happens before ``publish`` returns, without a checkpoint.

Subscribing with ``since`` meets the live stream exactly, also when the replay needs a
broker round trip: the node first listens to the queue, then adds the subscriber's lane
*held* (live messages collect in it but are not handed out), then reads the replay (the
current seq ``S`` and what came after ``since``). Releasing the lane puts the replay ahead
of the held live messages and drops those numbered ``S`` or below, which the replay
already holds. Listening first means nothing published after the read can be missed;
dropping by seq means nothing is delivered twice.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._connection import WebSocketConnection, dumps
from ._delivery import DeliveryEngine, LostMessages, notice_frame
from ._limits import RateLimiter
from ._queue_model import (
    Gap,
    Lane,
    Message,
    Policy,
    QueueError,
    QueueOptions,
    check_queue_name,
    encode_batch,
    encode_body,
)
from ._subscriber import CLOSED, ChannelSubscriber, Subscriber, SubscriberState
from .brokers._base import Broker, BrokerUnavailable
from .brokers.memory import MemoryBroker

log = logging.getLogger("trio_ws.broadcast")

__all__ = [
    "BroadcastHub",
    "BroadcastQueue",
    "BroadcastStatistics",
    "QueueChannel",
    "QueueError",
    "QueueGap",
    "QueueMessage",
    "QueueOptions",
    "Subscriber",
    "SubscriberState",
]

DYNAMIC_QUEUE_DEFAULTS = QueueOptions(max_history_bytes=256 << 10)
"""Queues anyone may create by naming them keep less than declared ones: 256 KiB."""

# on_message flushes by itself when a queue has this many messages waiting for the
# flusher, so a publisher that never reaches a checkpoint cannot grow the list unbounded.
_MAX_UNFLUSHED = 1024


@attrs.frozen
class BroadcastStatistics:
    """A snapshot of a hub's counters (``BroadcastHub.statistics()``)."""

    queues: int
    """Queues that exist now."""
    subscribers: int
    """Subscribers registered now."""
    published: int
    """Messages published through this node since start, all queues."""
    dropped: int
    """Messages skipped for subscribers too slow to take them (policy ``drop``)."""
    kicked: int
    """Subscribers closed with 1013 for being too slow (policy ``disconnect``)."""
    buffered: int
    """Messages waiting in subscriber buffers now."""


class BroadcastQueue:
    """A named queue: publishes through the broker, delivers to this node's subscribers.

    Made by :meth:`BroadcastHub.queue` (declared) or :meth:`BroadcastHub.get_or_create`.

    Attributes:
        name: the queue's name.
        options: how it keeps and delivers messages.
        published: messages published through this node.
        dropped: messages skipped for this node's slow subscribers.
    """

    def __init__(self, hub: BroadcastHub, name: str, options: QueueOptions) -> None:
        self.hub = hub
        self.name = name
        self.options = options
        rate = options.max_publish_rate
        self._rate = RateLimiter(*rate) if rate is not None else None
        self._subs: dict[Subscriber, Lane] = {}
        self._unflushed: list[Message] = []
        self._listening = False
        self.dynamic = False
        """Made on first use: forgotten by this node when its last subscriber leaves (the
        broker keeps its history)."""
        self.epoch = ""
        """The epoch of the queue's history, as this node last heard it from the broker."""
        self.seq = 0
        """The last sequence number this node has seen (0 before the first)."""
        self.published = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<BroadcastQueue {self.name!r} seq={self.seq} subscribers={len(self._subs)}>"

    @property
    def policy(self) -> Policy:
        return self.options.policy

    @property
    def priority(self) -> int:
        return self.options.priority

    @property
    def auto_subscribe(self) -> bool:
        return self.options.auto_subscribe

    def __len__(self) -> int:
        """The number of this node's subscribers."""
        return len(self._subs)

    def local_members(self) -> list[str]:
        """The names subscribed to this queue on this node, sorted."""
        return sorted({sub.name for sub in self._subs if sub.name})

    async def members(self) -> list[str]:
        """The names subscribed to this queue on any node, sorted (presence)."""
        return await self.hub.broker.members(self.name)

    async def publish(
        self, message: dict[str, Any] | str | bytes, *, key: str | None = None
    ) -> int:
        """Publish ``message`` to every subscriber on every node; return its seq.

        Never waits for a subscriber. A ``dict`` is sent as JSON text with ``"seq"`` added;
        ``str`` as a text frame and ``bytes`` as a binary frame, unchanged. ``key`` names
        the message for :meth:`retract`. With the memory broker it completes without a
        checkpoint; with a shared broker it takes one round trip. If cancelled while
        waiting for the broker, the message may or may not have been published.

        Raises:
            QueueError: ``rate_limited`` when the queue's ``max_publish_rate`` is exceeded.
            BrokerUnavailable: the broker cannot be reached; nothing was published.
            TypeError: ``message`` is not a dict, str or bytes.
        """
        self._take_rate(1)
        body, kind = encode_body(message, dumps)
        seq = await self.hub.broker.publish(
            self.name, body, kind=kind, key=key, options=self.options
        )
        self.published += 1
        if seq > self.seq:
            self.seq = seq
        return seq

    async def publish_many(
        self,
        messages: Sequence[dict[str, Any] | str | bytes],
        *,
        keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Publish several messages in order, in one round trip to a shared broker; return
        their seqs.

        The seqs are consecutive: no other publisher's message comes between them, on any
        node. Either all of them are published or none (a refusal, an unreachable broker);
        if cancelled while waiting for the broker, all or none may have been. Each counts
        against ``max_publish_rate``. Messages and ``keys`` (one per message, or None) are
        as :meth:`publish` takes them. A publisher with a stream of messages (a feed, a
        relay) can publish what has piled up while the last call was under way: through
        Redis that is one round trip per call instead of one per message.

        Raises:
            ValueError: no messages, more than 1,000, or ``keys`` of another length.
            QueueError: ``rate_limited`` (none was published).
            BrokerUnavailable: the broker cannot be reached; none was published.
            TypeError: a message is not a dict, str or bytes.
        """
        items = encode_batch(messages, keys, dumps)
        count = len(items)
        self._take_rate(count)
        last = await self.hub.broker.publish_many(self.name, items, options=self.options)
        self.published += count
        if last > self.seq:
            self.seq = last
        return list(range(last - count + 1, last + 1))

    def _take_rate(self, count: int) -> None:
        """Count ``count`` messages against ``max_publish_rate`` (all or none)."""
        rate = self._rate
        if rate is not None and not rate.allow(trio.current_time(), count):
            raise QueueError(
                "rate_limited",
                f"group {self.name} takes at most {rate.count} messages per {rate.period:g} s",
            )

    async def retract(self, key: str) -> int:
        """Withdraw the kept messages published with ``key`` (Push Framework's killKey).

        Subscribers that have not been handed them yet (slow ones, late ones asking for a
        replay) never get them, and no gap is reported for them: they were withdrawn, not
        missed. Returns how many kept messages were withdrawn by this call (those withdrawn
        before, and those no longer kept, do not count): a message already delivered to
        every live subscriber still counts, as a replay would have handed it out.
        """
        return await self.hub.broker.retract(self.name, key)


@attrs.frozen
class QueueMessage:
    """A message of a queue, as an in-process consumer gets it."""

    queue: str
    seq: int
    data: str | bytes
    """The text (for a published dict, its JSON with ``seq``) or the bytes."""

    def json(self) -> Any:
        """``data`` decoded as JSON."""
        return json.loads(self.data)


@attrs.frozen
class QueueGap:
    """Messages ``first`` to ``last`` of ``queue`` that the consumer missed."""

    queue: str
    first: int
    last: int


QueueItem = QueueMessage | QueueGap


class QueueChannel(trio.abc.ReceiveChannel[QueueItem]):
    """The receive end of :meth:`BroadcastHub.open_subscription`.

    ``receive()`` returns :class:`QueueMessage` and :class:`QueueGap` items in seq order.
    Cancelling it loses nothing. It raises :class:`QueueError` ``too_slow`` once a
    ``disconnect`` queue removed this consumer, and :class:`trio.EndOfChannel` when the
    subscription ended (the channel was closed, or the hub removed it).
    """

    def __init__(self, hub: BroadcastHub, queue: BroadcastQueue, sub: ChannelSubscriber) -> None:
        self._hub = hub
        self._queue = queue
        self._sub = sub
        self._items: deque[QueueItem] = deque()

    async def receive(self) -> QueueItem:
        sub = self._sub
        items = self._items
        while True:
            if items:
                await trio.lowlevel.checkpoint()
                return items.popleft()
            if sub.overflowed:
                raise QueueError("too_slow", f"too slow for queue {self._queue.name}")
            if sub.removed:
                raise trio.EndOfChannel
            taken = sub._buffer.take_round()
            if taken:
                name = self._queue.name
                for item in taken:
                    if type(item) is LostMessages:
                        items.append(QueueGap(name, item.first, item.seq))
                    elif type(item) is Message:
                        payload = bytes(item.payload)
                        data: str | bytes = payload.decode() if item.opcode == 1 else payload
                        items.append(QueueMessage(name, item.seq, data))
                    elif type(item) is Gap:
                        items.append(QueueGap(name, item.first, item.last))
                continue
            await sub._wait()

    async def aclose(self) -> None:
        self._hub.remove(self._sub)
        await trio.lowlevel.checkpoint()


class BroadcastHub:
    """This node's queues and subscribers, fed by a broker (see the module docstring).

    Args:
        broker: the shared state; a :class:`~trio_ws.brokers.MemoryBroker` of its own by
            default.
        max_subscriber_buffer: messages of one queue a subscriber may have waiting before
            the queue's policy applies (``ServerConfig.max_subscriber_buffer``).
        max_subscriber_bytes: bytes a subscriber may have waiting in all its queues
            before the policy applies (``ServerConfig.max_subscriber_bytes``).
        max_queues: how many queues made on first use (and still subscribed to) this node
            may hold.
        dynamic_queues: whether unknown queue names create queues (else ``unknown_group``).
        queue_defaults: the options of queues created on first use
            (:data:`DYNAMIC_QUEUE_DEFAULTS` by default: 100 messages, 256 KiB).
        close_timeout: seconds a too-slow subscriber (policy ``disconnect``) gets to take its
            Close frame before the connection is dropped.
        compression_level: zlib level of the shared compressed frames.
    """

    def __init__(
        self,
        *,
        broker: Broker | None = None,
        max_subscriber_buffer: int = 1000,
        max_subscriber_bytes: int | None = 8 << 20,
        max_queues: int = 10_000,
        dynamic_queues: bool = True,
        queue_defaults: QueueOptions | Mapping[str, Any] | None = None,
        close_timeout: float = 5.0,
        compression_level: int = 6,
    ) -> None:
        if max_subscriber_buffer <= 0:
            raise ValueError("max_subscriber_buffer must be positive")
        self.broker = broker if broker is not None else MemoryBroker()
        self.broker.on_message = self._on_message
        self.broker.on_retract = self._on_retract
        self.broker.on_reset = self._on_reset
        self.broker.on_gap = self._on_gap
        self.max_subscriber_buffer = max_subscriber_buffer
        self.max_subscriber_bytes = max_subscriber_bytes
        self.max_queues = max_queues
        self.dynamic_queues = dynamic_queues
        if queue_defaults is None or isinstance(queue_defaults, QueueOptions):
            self.queue_defaults = queue_defaults or DYNAMIC_QUEUE_DEFAULTS
        else:
            self.queue_defaults = QueueOptions(**queue_defaults)
        self.queues: dict[str, BroadcastQueue] = {}
        self._dynamic = 0
        self._subscribers: dict[Subscriber, None] = {}
        self.engine = DeliveryEngine(
            self.remove,
            close_timeout=close_timeout,
            compression_level=compression_level,
            gather=self.broker.delivers_in_steps,
        )
        self._nursery: trio.Nursery | None = None
        self._deferred: list[BroadcastQueue] = []  # auto queues declared before run()

    @property
    def kicked(self) -> int:
        return self.engine.kicked

    # ------------------------------------------------------------------ queues

    def queue(
        self, name: str, options: QueueOptions | None = None, **kwargs: Any
    ) -> BroadcastQueue:
        """Declare a queue, with ``options`` or the same as keyword arguments.

        Args:
            name: 1-64 characters of ``A-Z a-z 0-9 _ . -``.
            options: a :class:`~trio_ws.QueueOptions`; or give its fields as keywords
                (``history``, ``ttl``, ``policy``, ``priority``, ``quota``,
                ``max_publish_rate``, ``auto_subscribe``).

        Raises:
            QueueError: ``bad_group`` for a name breaking the rules.
            ValueError: the queue exists already, or an option is out of range.
            TypeError: an unknown option (a misspelt ``histroy=``, say).
        """
        check_queue_name(name)
        if options is not None and kwargs:
            raise TypeError("give options or keyword arguments, not both")
        options = options if options is not None else QueueOptions(**kwargs)
        if name in self.queues:
            raise ValueError(f"queue {name!r} exists already")
        queue = BroadcastQueue(self, name, options)
        self.queues[name] = queue
        if options.auto_subscribe and self._subscribers:
            if self._nursery is not None:
                self._nursery.start_soon(self._subscribe_everyone, queue)
            else:
                self._deferred.append(queue)
        return queue

    def get(self, name: str) -> BroadcastQueue | None:
        """The queue called ``name``, or ``None``."""
        return self.queues.get(name)

    def get_or_create(self, name: str) -> BroadcastQueue:
        """The queue called ``name``, created with ``queue_defaults`` on first use.

        Raises:
            QueueError: ``bad_group``, ``unknown_group`` (dynamic queues are off) or
                ``too_many_groups`` (``max_queues`` made on first use exist on this node;
                one is forgotten when its last subscriber leaves).
        """
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        check_queue_name(name)
        if not self.dynamic_queues:
            raise QueueError("unknown_group", f"no group {name}")
        if self._dynamic >= self.max_queues:
            raise QueueError("too_many_groups", f"at most {self.max_queues} groups may exist")
        queue = self.queue(name, self.queue_defaults)
        queue.dynamic = True
        self._dynamic += 1
        return queue

    async def publish(
        self, queue: str | BroadcastQueue, message: dict[str, Any] | str | bytes, **kw: Any
    ) -> int:
        """Publish to a queue by name (or object); return the seq.

        A name this node holds no queue for is published through the broker with
        ``queue_defaults`` without making a queue here: publishing to a thousand new
        names costs this node nothing that lasts (the broker's history is bounded in
        bytes).
        """
        return await self._publishing(queue).publish(message, **kw)

    def _publishing(self, queue: str | BroadcastQueue) -> BroadcastQueue:
        if isinstance(queue, BroadcastQueue):
            return queue
        held = self.queues.get(queue)
        if held is None:
            check_queue_name(queue)
            if not self.dynamic_queues:
                raise QueueError("unknown_group", f"no group {queue}")
            held = BroadcastQueue(self, queue, self.queue_defaults)  # not kept
        return held

    async def publish_many(
        self,
        queue: str | BroadcastQueue,
        messages: Sequence[dict[str, Any] | str | bytes],
        **kw: Any,
    ) -> list[int]:
        """:meth:`BroadcastQueue.publish_many` on a queue by name (or object), as
        :meth:`publish` finds it; return the seqs."""
        return await self._publishing(queue).publish_many(messages, **kw)

    async def members(self, queue: str | BroadcastQueue) -> list[str]:
        """The sorted names subscribed to ``queue`` on any node (``[]`` for none)."""
        name = queue.name if isinstance(queue, BroadcastQueue) else queue
        return await self.broker.members(name)

    def _resolve(self, queue: str | BroadcastQueue) -> BroadcastQueue:
        return queue if isinstance(queue, BroadcastQueue) else self.get_or_create(queue)

    # ------------------------------------------------------------------ from the broker

    def _on_message(self, name: str, message: Message) -> None:
        queue = self.queues.get(name)
        if queue is None:
            return
        if message.seq > queue.seq:
            queue.seq = message.seq
        if queue._subs:
            unflushed = queue._unflushed
            unflushed.append(message)
            if len(unflushed) == 1:
                self.engine.schedule(queue)
            elif len(unflushed) >= _MAX_UNFLUSHED:
                self.engine.flush_queue(queue)

    def _on_retract(self, name: str, key: str) -> None:
        queue = self.queues.get(name)
        if queue is None:
            return
        for message in queue._unflushed:
            if message.key == key:
                message.retracted = True
        for lane in queue._subs.values():
            for message in lane.messages:
                if message.key == key:
                    message.retracted = True

    def _on_gap(self, name: str, first: int, last: int) -> None:
        """Messages ``first`` .. ``last`` of a queue will never reach this node: its
        subscribers get a ``gap`` for them, in the stream's order."""
        self._on_message(name, LostMessages(name, first, last))

    def _on_reset(self, name: str, epoch: str) -> None:
        """The queue's history started again: every local subscriber gets a ``subscribed``
        notice with the new epoch and seq 0 before the first message of it. What waited
        for a subscriber from the old history is dropped: nobody can resume it any more."""
        queue = self.queues.get(name)
        if queue is None:
            return
        self.engine.flush_queue(queue)  # the old history's last messages go out first
        queue.epoch = epoch
        queue.seq = 0
        options = queue.options
        for sub, lane in list(queue._subs.items()):
            if lane.held:
                continue  # its replay, still being read, comes from the new epoch
            buffer = sub._buffer
            buffer.remove_lane(queue)
            queue._subs[sub] = buffer.add_lane(
                queue,
                priority=options.priority,
                quota=options.quota,
                notices=[self._subscribed_frame(queue, 0, epoch)],
            )
            self.engine.deliver_now(sub)

    # ------------------------------------------------------------------ subscribers

    def _new_subscriber(self, connection: WebSocketConnection, name: str) -> Subscriber:
        sub = Subscriber(connection, name, self.max_subscriber_buffer, self.max_subscriber_bytes)
        self._subscribers[sub] = None
        return sub

    async def subscriber(self, connection: WebSocketConnection, name: str = "") -> Subscriber:
        """Make the subscriber of ``connection`` (one per connection) and register it.

        It is subscribed at once to every ``auto_subscribe`` queue.
        """
        sub = self._new_subscriber(connection, name)
        try:
            for queue in list(self.queues.values()):
                if queue.options.auto_subscribe:
                    await self.subscribe(queue, sub)
        except BaseException:
            self.remove(sub)  # not left registered with nobody to remove it
            raise
        return sub

    async def subscribe(
        self,
        queue: str | BroadcastQueue,
        subscriber: Subscriber,
        *,
        since: int | None = None,
        epoch: str | None = None,
        reply: bool = False,
    ) -> int:
        """Subscribe; return the seq after which the live stream starts for this subscriber.

        With ``since``, the subscriber first gets what it missed: a ``gap`` notice
        ``{"type": "gap", "group": ..., "from": a, "to": b}`` for the part of ``since+1 ..
        seq`` no longer kept (or expired), then the kept messages after ``since``, then the
        live stream, with no duplicate and no hole (see the module docstring). A ``since``
        of another ``epoch`` counts as 0. With ``reply``, the PROTOCOL.md reply
        ``{"type": "subscribed", "group": ..., "seq": n, "epoch": e}`` goes ahead of all
        that (a client resumes later with this ``since`` and ``epoch``). What
        is owed is written (or queued behind what is pending) before this returns.

        Subscribing twice is harmless: nothing is replayed again, and the returned seq is
        the last one already handed to the subscriber's connection.

        Raises:
            QueueError: as :meth:`get_or_create`, for a queue name.
            BrokerUnavailable: the broker cannot be reached; nothing changed.
        """
        q = self._resolve(queue)
        if q.dynamic and self.queues.get(q.name) is not q:
            q = self.get_or_create(q.name)  # forgotten since (its last subscriber left)
        if subscriber._state is CLOSED:
            return q.seq
        lane = q._subs.get(subscriber)
        if lane is not None:
            self.engine.flush_queue(q)
            seq = lane.position(q.seq)
            if reply:
                # One pending notice per lane: a backed-up subscriber that keeps asking
                # gets the latest answer once, not a pile of them.
                lane.notices[:] = [self._subscribed_frame(q, seq, q.epoch)]
                self.engine.deliver_now(subscriber)
            return seq
        if not q._listening:
            await self.broker.listen(q.name)
            q._listening = True
            if subscriber._state is CLOSED or subscriber in q._subs:
                return q.seq  # removed, or subscribed by someone else, meanwhile
        self.engine.flush_queue(q)  # what was delivered before now goes to the others only
        options = q.options
        lane = subscriber._buffer.add_lane(
            q, priority=options.priority, quota=options.quota, held=True
        )
        q._subs[subscriber] = lane
        self._presence(q, subscriber, 1)
        try:
            replay = await self.broker.replay(q.name, since, epoch=epoch, options=options)
        except BaseException:
            self._drop(q, subscriber)
            raise
        if q._subs.get(subscriber) is not lane:
            return replay.seq  # unsubscribed or removed while the replay was read
        if replay.seq > q.seq or replay.epoch != q.epoch:
            q.seq = replay.seq
        q.epoch = replay.epoch
        self.engine.flush_queue(q)  # live messages that arrived meanwhile join the lane
        subscriber._buffer.release_lane(
            q,
            seq=replay.seq,
            notices=[self._subscribed_frame(q, replay.seq, replay.epoch)] if reply else (),
            gap=replay.gap,
            messages=replay.messages,
        )
        if lane:
            self.engine.deliver_now(subscriber)
        return replay.seq

    def unsubscribe(self, queue: str | BroadcastQueue, subscriber: Subscriber) -> bool:
        """Unsubscribe; return whether it was subscribed. Harmless when it was not.

        No message of the queue is written to the connection after this returns (what is
        still waiting in the subscriber's buffer is forgotten).
        """
        q = self.queues.get(queue) if isinstance(queue, str) else queue
        if q is None or subscriber not in q._subs:
            return False
        self._drop(q, subscriber)
        return True

    def _drop(self, q: BroadcastQueue, subscriber: Subscriber) -> None:
        if q._subs.pop(subscriber, None) is None:
            return
        subscriber._buffer.remove_lane(q)
        self._presence(q, subscriber, -1)
        if not q._subs:
            if q._listening:
                q._listening = False
                self.broker.unlisten(q.name)
            if q.dynamic and self.queues.get(q.name) is q:
                del self.queues[q.name]  # nothing of it lasts here; the broker has the rest
                self._dynamic -= 1

    def _presence(self, q: BroadcastQueue, subscriber: Subscriber, delta: int) -> None:
        if subscriber.name:
            self.broker.note_presence(q.name, subscriber.name, delta)

    def remove(self, subscriber: Subscriber) -> None:
        """Forget a subscriber: every queue and presence list at once. Idempotent.

        Call it when the connection ends. Nothing is written to it afterwards.
        """
        if subscriber._state is CLOSED:
            return
        for q in list(subscriber._buffer.lanes):
            assert isinstance(q, BroadcastQueue)
            self._drop(q, subscriber)
        subscriber._move(CLOSED)
        subscriber._buffer.clear()
        self._subscribers.pop(subscriber, None)
        if isinstance(subscriber, ChannelSubscriber):
            subscriber._notify()

    async def take_over(self, old: Subscriber, new: Subscriber) -> None:
        """Move ``old``'s subscriptions to ``new`` (a name taken over by a new connection).

        ``new`` continues each queue right after the last message handed to ``old``'s
        connection: what was still waiting in ``old``'s buffer is replayed from the history
        (a ``gap`` where it is no longer kept). Then ``old`` is removed.
        """
        if old is new:
            return
        positions = []
        for q in list(old._buffer.lanes):
            assert isinstance(q, BroadcastQueue)
            self.engine.flush_queue(q)
            lane = q._subs.get(old)
            if lane is not None:
                positions.append((q, lane.position(q.seq)))
        # The new subscriber joins before the old one leaves, so a queue made on demand is
        # not forgotten in between.
        for q, since in positions:
            if not new.removed:
                await self.subscribe(q, new, since=since)
        self.remove(old)

    @asynccontextmanager
    async def open_subscription(
        self, queue: str | BroadcastQueue, *, since: int | None = None, name: str = ""
    ) -> AsyncIterator[QueueChannel]:
        """Consume a queue in this process (a bot, a persistence sink, a bridge).

        Yields a :class:`QueueChannel`: ``async for item in channel`` gets the replay after
        ``since`` (if given) and then the live stream, with the same bounded buffer and
        gap rules as a WebSocket subscriber (``max_subscriber_buffer`` messages, then the
        queue's policy: a :class:`QueueGap`, or ``QueueError("too_slow")``). ``name``, if
        given, shows in the queue's presence. Leaving the block unsubscribes.
        """
        q = self._resolve(queue)
        sub = ChannelSubscriber(name, self.max_subscriber_buffer, self.max_subscriber_bytes)
        self._subscribers[sub] = None
        try:
            await self.subscribe(q, sub, since=since)
            async with QueueChannel(self, q, sub) as channel:
                yield channel
        finally:
            self.remove(sub)

    def statistics(self) -> BroadcastStatistics:
        return BroadcastStatistics(
            queues=len(self.queues),
            subscribers=len(self._subscribers),
            published=sum(q.published for q in self.queues.values()),
            dropped=sum(q.dropped for q in self.queues.values()),
            kicked=self.engine.kicked,
            buffered=sum(s._buffer.size for s in self._subscribers),
        )

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled (the engine's flusher and send tasks).

        Run it once per hub, in the nursery that outlives the connections' handlers (for
        example ``Server.serve(..., services=[hub.run])``). Publishing and subscribing
        before it starts is allowed; writing what waits starts with it.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.engine.run)
            self._nursery = nursery
            try:
                deferred, self._deferred = self._deferred, []
                for queue in deferred:
                    nursery.start_soon(self._subscribe_everyone, queue)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _subscribe_everyone(self, queue: BroadcastQueue) -> None:
        """Subscribe every subscriber to an ``auto_subscribe`` queue declared late; one the
        broker cannot take now is skipped (logged), the others still are."""
        for sub in list(self._subscribers):
            if not sub.removed and not isinstance(sub, ChannelSubscriber):
                try:
                    await self.subscribe(queue, sub)
                except BrokerUnavailable:
                    log.warning(
                        "%r not subscribed to %s: the broker is unavailable", sub, queue.name
                    )

    def _subscribed_frame(self, queue: BroadcastQueue, seq: int, epoch: str) -> bytes:
        return notice_frame({"type": "subscribed", "group": queue.name, "seq": seq, "epoch": epoch})
