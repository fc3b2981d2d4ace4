"""The pure model of broadcast queues: sequence numbers, history, replay, buffers, gaps.

Nothing here does I/O or imports trio; time is passed in. :mod:`trio_ws._broadcast` wraps
these pieces with encoding, sockets and tasks, and the property tests drive them alone.

Theory of operation
-------------------
A :class:`History` numbers the messages of one queue 1, 2, 3, ... and keeps the last
``history`` of them (fewer once they outlive ``ttl``). ``replay(since)`` answers a
subscriber that asks for everything after ``since``: an optional :class:`Gap` for the part
no longer kept, then the kept messages, in order.

A :class:`SubscriberBuffer` holds what one subscriber has not been handed yet, one
:class:`Lane` per queue it is subscribed to, at most ``capacity`` messages per lane (per
lane, so that a busy low-priority queue cannot crowd a high-priority one out). Each
lane is, in order: notices (opaque bytes, e.g. the ``subscribed`` reply), at most one
pending :class:`Gap`, then messages with consecutive sequence numbers (retracted ones
included; they are skipped when taken). Because the pending gap always ends right before
the lane's first message, dropping the oldest message simply extends the gap: every range a
subscriber misses is reported once, exactly.

:meth:`SubscriberBuffer.offer` applies the queue's overflow policy when the buffer is full:

* ``drop``: the subscriber skips ahead. The oldest waiting message *of the same queue* is
  discarded to make room (or, when none of that queue is waiting, the new one); the
  discarded range joins the lane's pending gap, sent before the next message of the queue.
* ``disconnect``: nothing is changed; the caller closes the subscriber (1013).

:meth:`SubscriberBuffer.take_round` is the priority and quota rule of the Push Framework.
One *round* visits the lanes from the highest ``priority`` to the lowest (equal priorities
in the order they were subscribed) and takes from each its notices, its gap and then at
most ``quota`` messages (``None``: all of them). A writer takes one round per write, so
under load each round delivers ``quota`` messages of every busy queue, highest priority
first: the proportion of two saturated queues is the proportion of their quotas.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

import attrs

from ._limits import RateLimiter
from ._names import MAX_QUEUE_NAME_LENGTH, valid_name
from .protocol._errors import WebSocketError
from .protocol._frames import encode_frame

__all__ = [
    "MAX_PUBLISH_MANY",
    "MAX_QUEUE_NAME_LENGTH",
    "Gap",
    "History",
    "Lane",
    "Message",
    "Policy",
    "PayloadKind",
    "QueueError",
    "QueueOptions",
    "RateLimiter",
    "SubscriberBuffer",
    "check_queue_name",
    "encode_batch",
    "make_message",
]

Policy = Literal["drop", "disconnect"]
POLICIES: tuple[Policy, ...] = ("drop", "disconnect")


def _check_policy(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {value!r}")


def _check_history(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"history must be an integer >= 0, not {value!r}")


def _check_positive_or_none(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{attr.name} must be positive or None, not {value!r}")


def _check_rate(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or type(value[0]) is not int
        or value[0] < 1
        or not value[1] > 0
    ):
        raise ValueError(f"max_publish_rate must be (count >= 1, seconds > 0), not {value!r}")


@attrs.frozen(kw_only=True)
class QueueOptions:
    """How a broadcast queue keeps and delivers its messages, validated once.

    The broker uses ``history`` and ``ttl`` (what is kept, cluster-wide); each node uses the
    rest for its local fan-out.
    """

    history: int = attrs.field(default=100, validator=_check_history)
    """Messages kept for replay (``since``); 0 keeps none."""
    max_history_bytes: int | None = attrs.field(default=1 << 20, validator=_check_positive_or_none)
    """Bytes (of encoded frames) the kept history may hold; the oldest go first. ``None``:
    only ``history`` bounds it (and the broker's budget for all queues)."""
    ttl: float | None = attrs.field(default=None, validator=_check_positive_or_none)
    """Seconds after which a kept message is no longer replayed (``None``: never)."""
    policy: Policy = attrs.field(default="drop", validator=_check_policy)
    """For a subscriber whose buffer is full: ``"drop"`` (skip ahead, then a ``gap``) or
    ``"disconnect"`` (close 1013)."""
    priority: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    """Queues of higher priority are served first to a busy subscriber."""
    quota: int | None = attrs.field(default=None, validator=_check_positive_or_none)
    """At most this many messages of this queue per round to a busy subscriber."""
    max_publish_rate: tuple[int, float] | None = attrs.field(default=None, validator=_check_rate)
    """``(count, seconds)``: publishes beyond it (on one node) raise ``rate_limited``."""
    auto_subscribe: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Every subscriber is subscribed at once (Push Framework's ``requireRegistration=false``)."""


class QueueError(WebSocketError):
    """A refused queue operation; ``code`` is the protocol's ``error`` code.

    Codes: ``bad_group`` (a name breaking the rules), ``unknown_group`` (no such queue and
    dynamic queues are off), ``too_many_groups`` (the queue limit is reached) and
    ``rate_limited`` (the queue's publish rate is exceeded).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_queue_name(name: object) -> str:
    """Return ``name`` if it is 1-64 characters of ``A-Z a-z 0-9 _ . -``, else raise."""
    if not valid_name(name, max_length=MAX_QUEUE_NAME_LENGTH):
        raise QueueError(
            "bad_group",
            f"group names are 1-{MAX_QUEUE_NAME_LENGTH} characters of A-Z a-z 0-9 _ . -",
        )
    return name


class Message:
    """One published message, shared by the history and every buffer that holds it.

    ``frame`` is the encoded, uncompressed WebSocket frame, the one stored copy;
    ``payload`` is a view of its payload (for compression). ``compressed`` caches the
    permessage-deflate frames by window size (filled by the I/O layer).
    """

    __slots__ = ("compressed", "frame", "key", "opcode", "payload", "retracted", "seq", "time")

    def __init__(
        self,
        seq: int,
        frame: bytes,
        *,
        payload: bytes | memoryview = b"",
        opcode: int = 1,
        key: str | None = None,
        time: float = 0.0,
    ) -> None:
        self.seq = seq
        self.frame = frame
        self.payload = payload
        self.opcode = opcode
        self.key = key
        self.time = time
        self.retracted = False
        self.compressed: dict[int, bytes] | None = None

    def __repr__(self) -> str:
        return f"<Message {self.seq}{' retracted' if self.retracted else ''}>"


class PayloadKind:
    """How a published body becomes a message payload (plain ints: they cross brokers).

    ``JSON`` bodies are a JSON object without its ``seq``: the seq is spliced in as the
    last member once it is known, so a broker can number a message without decoding it.
    """

    TEXT = 1
    BINARY = 2
    JSON = 3


def encode_body(
    message: dict[str, Any] | str | bytes | bytearray | memoryview, dumps: Any
) -> tuple[bytes, int]:
    """The body and :class:`PayloadKind` of a message to publish (``dumps`` encodes JSON)."""
    if isinstance(message, str):
        return message.encode(), PayloadKind.TEXT
    if isinstance(message, dict):
        if "seq" in message:
            message = {k: v for k, v in message.items() if k != "seq"}
        return dumps(message).encode(), PayloadKind.JSON
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), PayloadKind.BINARY
    raise TypeError(f"cannot publish {type(message).__name__}; use dict, str or bytes")


MAX_PUBLISH_MANY = 1000
"""The most messages one ``publish_many()`` takes: one Redis script call, which holds
Redis (every other client waits) while it runs."""


def encode_batch(
    messages: Sequence[dict[str, Any] | str | bytes],
    keys: Sequence[str | None] | None,
    dumps: Any,
) -> list[tuple[bytes, int, str | None]]:
    """The ``(body, kind, key)`` of each message of a ``publish_many()`` call.

    Raises:
        ValueError: no messages, more than :data:`MAX_PUBLISH_MANY`, or ``keys`` (one per
            message) of another length.
        TypeError: a message is not a dict, str or bytes.
    """
    count = len(messages)
    if not 0 < count <= MAX_PUBLISH_MANY:
        raise ValueError(f"publish_many() takes 1 to {MAX_PUBLISH_MANY} messages, not {count}")
    if keys is not None and len(keys) != count:
        raise ValueError(f"{len(keys)} keys for {count} messages")
    return [
        (*encode_body(message, dumps), None if keys is None else keys[i])
        for i, message in enumerate(messages)
    ]


def make_message(
    seq: int, body: bytes, kind: int, *, key: str | None = None, time: float = 0.0
) -> Message:
    """The :class:`Message` numbered ``seq`` for a published body (see :class:`PayloadKind`)."""
    if kind == PayloadKind.JSON:
        tail = b'"seq":%d}' % seq
        payload = body[:-1] + (tail if body == b"{}" else b"," + tail)
        opcode = 1
    else:
        payload = body
        opcode = 2 if kind == PayloadKind.BINARY else 1
    frame = encode_frame(opcode, payload)
    view = memoryview(frame)[len(frame) - len(payload) :]
    return Message(seq, frame, payload=view, opcode=opcode, key=key, time=time)


class Gap(NamedTuple):
    """Messages ``first`` to ``last`` (inclusive) of ``queue`` that a subscriber missed."""

    first: int
    last: int
    queue: Hashable = None


class History:
    """Sequence numbers and the last ``size`` messages of one queue.

    Args:
        size: how many messages are kept for replay (0 keeps none).
        ttl: seconds after which a kept message is no longer replayed (``None``: never).
    """

    def __init__(
        self, size: int = 100, *, ttl: float | None = None, max_bytes: int | None = None
    ) -> None:
        if size < 0:
            raise ValueError(f"history must be >= 0, not {size}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive or None, not {ttl}")
        self.size = size
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.seq = 0
        self.bytes = 0
        """Bytes of the kept messages' frames."""
        self.kept: deque[Message] = deque()
        self._keyed: dict[str, deque[Message]] = {}

    def next_seq(self) -> int:
        """The number the next message will get."""
        return self.seq + 1

    def append(self, message: Message) -> None:
        """Record the message numbered :meth:`next_seq` and evict what falls out."""
        assert message.seq == self.seq + 1, (message.seq, self.seq)
        self.seq = message.seq
        if self.size == 0:
            return
        kept = self.kept
        kept.append(message)
        self.bytes += len(message.frame)
        if message.key is not None:
            self._keyed.setdefault(message.key, deque()).append(message)
        if len(kept) > self.size:
            self.evict_oldest()
        max_bytes = self.max_bytes
        if max_bytes is not None:
            while self.bytes > max_bytes and kept:
                self.evict_oldest()

    def evict_oldest(self) -> int:
        """Forget the oldest kept message (a later ``since`` gets a gap); return its bytes."""
        if not self.kept:
            return 0
        old = self.kept.popleft()
        size = len(old.frame)
        self.bytes -= size
        if old.key is not None:
            same = self._keyed.get(old.key)
            if same and same[0] is old:
                same.popleft()
                if not same:
                    del self._keyed[old.key]
        return size

    def retract(self, key: str) -> int:
        """Kill the kept messages published with ``key``; return how many were live.

        Retracted messages are neither replayed nor handed out of any buffer that still
        holds them. A message older than the history window can no longer be retracted.
        """
        same = self._keyed.pop(key, None)
        if not same:
            return 0
        count = 0
        for message in same:
            if not message.retracted:
                message.retracted = True
                count += 1
        return count

    def replay(self, since: int, now: float = 0.0) -> tuple[Gap | None, list[Message]]:
        """What a subscriber asking for everything after ``since`` gets before the live stream.

        Returns the gap (the part of ``since+1 .. seq`` no longer kept, or expired), then the
        kept messages after ``since`` in order, retracted ones included (they are skipped
        when handed out). ``since`` at or beyond the last seq replays nothing.
        """
        since = max(since, 0)
        kept = self.kept
        start = len(kept)  # index of the first kept message after since
        for index in range(len(kept) - 1, -1, -1):
            if kept[index].seq <= since:
                break
            start = index
        if self.ttl is not None:
            deadline = now - self.ttl
            while start < len(kept) and kept[start].time < deadline:
                start += 1
        messages = [kept[i] for i in range(start, len(kept))]
        first = messages[0].seq if messages else self.seq + 1
        gap = Gap(since + 1, first - 1) if first > since + 1 else None
        return gap, messages


class Lane:
    """What one subscriber has not been handed yet from one queue (see the module doc).

    A *held* lane collects live messages but hands nothing out: a subscription waiting for
    its replay. :meth:`SubscriberBuffer.release_lane` puts the replay in front.
    """

    __slots__ = ("gap", "held", "messages", "notices", "priority", "queue", "quota")

    def __init__(self, queue: Hashable, *, priority: int, quota: int | None) -> None:
        self.queue = queue
        self.priority = priority
        self.quota = quota
        self.notices: list[bytes] = []
        self.gap: Gap | None = None
        self.messages: deque[Message] = deque()
        self.held = False

    def __bool__(self) -> bool:
        return bool(self.notices or self.gap is not None or self.messages)

    def position(self, last_seq: int) -> int:
        """The last seq handed out of this lane (everything after it is still owed)."""
        if self.gap is not None:
            return self.gap.first - 1
        if self.messages:
            return self.messages[0].seq - 1
        return last_seq

    def miss(self, seq: int) -> None:
        """Add ``seq`` (the next one after the pending gap) to the pending gap."""
        gap = self.gap
        self.gap = Gap(seq, seq, self.queue) if gap is None else Gap(gap.first, seq, self.queue)


Item = Message | Gap | bytes
"""What a buffer hands out: a message, a gap notice, or an opaque notice frame."""

OFFERED, DROPPED, OVERFLOW = 0, 1, 2
"""Results of :meth:`SubscriberBuffer.offer`."""


class SubscriberBuffer:
    """One subscriber's waiting messages, one :class:`Lane` per queue, each bounded.

    Args:
        capacity: messages that may wait in one lane (notices and the gap aside). A replay
            may exceed it once; live messages then find the lane full.
        max_bytes: bytes (of frames) that may wait in all lanes together; over it a live
            message is handled as for a full lane (``None``: no byte bound).
    """

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive or None, not {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.size = 0
        self.bytes = 0
        """Bytes of the frames of the messages waiting."""
        self.lanes: dict[Hashable, Lane] = {}
        self._order: list[Lane] = []
        """The lanes by priority, then in subscription order (appended, stable sort)."""

    def __bool__(self) -> bool:
        """Whether anything at all is waiting."""
        return any(self._order)

    def add_lane(
        self,
        queue: Hashable,
        *,
        priority: int = 0,
        quota: int | None = None,
        notices: Iterable[bytes] = (),
        gap: Gap | None = None,
        messages: Iterable[Message] = (),
        held: bool = False,
    ) -> Lane:
        """Subscribe: a new lane holding the replay (which may exceed the capacity once).

        A ``held`` lane waits for its replay (:meth:`release_lane`) and hands nothing out.
        """
        assert queue not in self.lanes
        lane = Lane(queue, priority=priority, quota=quota)
        lane.held = held
        lane.notices.extend(notices)
        lane.gap = None if gap is None else Gap(gap.first, gap.last, queue)
        lane.messages.extend(messages)
        self.size += len(lane.messages)
        self.bytes += sum(len(m.frame) for m in lane.messages)
        self.lanes[queue] = lane
        self._order.append(lane)
        self._order.sort(key=lambda ln: -ln.priority)
        return lane

    def release_lane(
        self,
        queue: Hashable,
        *,
        seq: int,
        notices: Iterable[bytes] = (),
        gap: Gap | None = None,
        messages: Iterable[Message] = (),
    ) -> Lane:
        """End the hold of a lane: the replay up to ``seq`` goes ahead of the live messages.

        ``gap`` and ``messages`` are the replay of everything up to ``seq``. Live messages
        that arrived while the lane was held and are numbered ``seq`` or below are in the
        replay already and are dropped, so the two meet exactly: no duplicate, no hole. If
        live messages beyond ``seq`` were dropped meanwhile (the lane was full), the pending
        gap is widened back over the replay, which is then not handed out: a lane holds one
        gap, and every missed seq is still reported once.
        """
        lane = self.lanes[queue]
        lane.held = False
        live = lane.messages
        while live and live[0].seq <= seq:
            self.bytes -= len(live.popleft().frame)
            self.size -= 1
        replay = [m for m in messages if m.seq <= seq]
        held_gap = lane.gap
        if held_gap is not None and held_gap.last > seq:
            first = gap.first if gap is not None else replay[0].seq if replay else seq + 1
            # From where the replay starts (at or before seq + 1, so also covering what was
            # dropped while held) to the last live message dropped.
            lane.gap = Gap(first, held_gap.last, queue)
        else:
            lane.gap = None if gap is None else Gap(gap.first, gap.last, queue)
            live.extendleft(reversed(replay))
            self.size += len(replay)
            self.bytes += sum(len(m.frame) for m in replay)
        lane.notices[:0] = list(notices)
        return lane

    def remove_lane(self, queue: Hashable) -> Lane | None:
        """Unsubscribe: forget everything waiting from ``queue``."""
        lane = self.lanes.pop(queue, None)
        if lane is not None:
            self._order.remove(lane)
            self.size -= len(lane.messages)
            self.bytes -= sum(len(m.frame) for m in lane.messages)
        return lane

    def clear(self) -> None:
        """Forget every lane."""
        self.lanes.clear()
        self._order.clear()
        self.size = 0
        self.bytes = 0

    def offer(self, lane: Lane, message: Message, policy: Policy) -> int:
        """Queue a live message; return OFFERED, DROPPED (policy drop) or OVERFLOW.

        The lane is full when it holds ``capacity`` messages, or when the message would
        take the buffer over ``max_bytes``. OVERFLOW (policy ``disconnect``, full)
        changes nothing: the caller is expected to close the subscriber. DROPPED: the
        oldest messages of the lane made room, or, when the lane has none left and the
        budget is still short (other lanes hold it), the new one is missed; either way
        the lane's pending gap says exactly what.
        """
        size = len(message.frame)
        max_bytes = self.max_bytes
        messages = lane.messages
        if len(messages) < self.capacity and (max_bytes is None or self.bytes + size <= max_bytes):
            messages.append(message)
            self.size += 1
            self.bytes += size
            return OFFERED
        if policy == "disconnect":
            return OVERFLOW
        if len(messages) >= self.capacity:  # one for one (a replay may stay over capacity)
            self._drop_oldest(lane)
        while messages and max_bytes is not None and self.bytes + size > max_bytes:
            self._drop_oldest(lane)
        if max_bytes is None or self.bytes + size <= max_bytes:
            messages.append(message)
            self.size += 1
            self.bytes += size
        else:
            lane.miss(message.seq)
        return DROPPED

    def _drop_oldest(self, lane: Lane) -> None:
        oldest = lane.messages.popleft()
        self.size -= 1
        self.bytes -= len(oldest.frame)
        lane.miss(oldest.seq)

    def take_round(self, max_bytes: int | None = None) -> list[Item]:
        """Hand out one round: every lane by priority, at most ``quota`` messages each.

        With ``max_bytes`` the round stops once its messages' frames reach that many bytes
        (it holds at least one message): what a writer joins for one write stays bounded,
        and the rest keeps waiting, shared, in the buffer.
        """
        out: list[Item] = []
        budget = max_bytes
        for lane in self._order:
            if lane.held:
                continue
            if lane.notices:
                out.extend(lane.notices)
                lane.notices.clear()
            if lane.gap is not None:
                out.append(lane.gap)
                lane.gap = None
            messages = lane.messages
            if not messages:
                continue
            quota = lane.quota
            if budget is None and quota is None:  # all of it, at once
                taken = len(messages)
                self.bytes -= sum(len(m.frame) for m in messages)
                out.extend(m for m in messages if not m.retracted)
                messages.clear()
            else:
                taken = given = 0
                limit = quota if quota is not None else len(messages)
                while messages and given < limit:
                    message = messages.popleft()
                    taken += 1
                    self.bytes -= len(message.frame)
                    if not message.retracted:
                        out.append(message)
                        given += 1
                        if budget is not None:
                            budget -= len(message.frame)
                            if budget <= 0:
                                break
            self.size -= taken
            if budget is not None and budget <= 0:
                break
        return out
