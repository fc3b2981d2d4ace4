"""The hub's bookkeeping, where an application or the broker can see it.

Presence counts per name, the broker's subscriptions following local subscribers, queues
made on first use forgotten with their last subscriber, a broker's reset and gap reaching
every kind of subscriber. (Found missing by a mutation run of ``_broadcast.py``.)
"""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from tests.test_broadcast import _SteppingBroker, memory_subscriber
from trio_ws import WebSocketConnection
from trio_ws._broadcast import BroadcastHub, QueueError, QueueGap, QueueMessage
from trio_ws._delivery import DeliveryEngine
from trio_ws._queue_model import Message, QueueOptions
from trio_ws._transport import StreamTransport
from trio_ws.brokers import BrokerUnavailable, MemoryBroker, MemoryStore, Replay
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._frames import Opcode, Role, encode_frame


class ListeningBroker(MemoryBroker):
    """A memory broker that records the node's listen and unlisten calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    async def listen(self, queue: str) -> None:
        self.calls.append(("listen", queue))
        await super().listen(queue)

    def unlisten(self, queue: str) -> None:
        self.calls.append(("unlisten", queue))
        super().unlisten(queue)


async def test_the_broker_listens_while_a_queue_has_local_subscribers() -> None:
    broker = ListeningBroker()
    hub = BroadcastHub(broker=broker)
    queue = hub.queue("q")
    one, _r1 = await memory_subscriber(hub, "one")
    two, _r2 = await memory_subscriber(hub, "two")
    await hub.subscribe(queue, one)
    await hub.subscribe(queue, two)  # already listening: no second call
    assert broker.calls == [("listen", "q")]
    hub.unsubscribe(queue, one)
    assert broker.calls == [("listen", "q")]  # two is still here
    hub.remove(two)
    assert broker.calls == [("listen", "q"), ("unlisten", "q")]
    await hub.subscribe(queue, (await memory_subscriber(hub, "three"))[0])
    assert broker.calls == [("listen", "q"), ("unlisten", "q"), ("listen", "q")]


class FailingReplayBroker(MemoryBroker):
    """A memory broker whose replays fail, as a shared broker's do when it goes away."""

    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        raise BrokerUnavailable


async def test_a_subscribe_whose_replay_fails_leaves_nothing_behind() -> None:
    hub = BroadcastHub(broker=FailingReplayBroker())
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "ann")
    with pytest.raises(BrokerUnavailable):
        await hub.subscribe(queue, sub, since=0)
    assert len(queue) == 0
    assert queue not in sub._buffer.lanes
    assert await queue.members() == []  # presence taken back


class GatedBroker(MemoryBroker):
    """A memory broker whose next ``listen`` or ``replay`` waits for the test to open its
    gate, as a shared broker's round trip takes time; a replay can fail after its wait."""

    def __init__(self) -> None:
        super().__init__()
        self.listen_gate: trio.Event | None = None
        self.replay_gate: trio.Event | None = None
        self.replay_fails = False

    async def listen(self, queue: str) -> None:
        gate, self.listen_gate = self.listen_gate, None
        if gate is not None:
            await gate.wait()
        await super().listen(queue)

    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        gate, self.replay_gate = self.replay_gate, None
        if gate is not None:
            await gate.wait()
        if self.replay_fails:
            raise BrokerUnavailable
        return await super().replay(queue, since, epoch=epoch, options=options)


async def test_live_messages_wait_behind_a_replay_that_takes_a_round_trip(
    autojump_clock: trio.abc.Clock,
) -> None:
    broker = GatedBroker()
    hub = BroadcastHub(broker=broker)
    queue = hub.queue("q", history=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "late")
        await queue.publish({"n": 1})
        await queue.publish({"n": 2})
        broker.replay_gate = gate = trio.Event()
        nursery.start_soon(lambda: hub.subscribe(queue, sub, since=0))
        await trio.testing.wait_all_tasks_blocked()
        await queue.publish({"n": 3})  # live while the replay is read: it waits in the lane
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await queue.publish({"n": 4})
        with trio.fail_after(5):
            got = await reader.read_until(4)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["n"] for m in got] == [1, 2, 3, 4]  # in order, none twice
        nursery.cancel_scope.cancel()


async def test_a_busy_subscriber_gets_the_queue_of_higher_priority_first() -> None:
    hub = BroadcastHub()
    low, high = hub.queue("low"), hub.queue("high", priority=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "busy")
        await hub.subscribe(low, sub, reply=True)  # busy: the reply is being written
        await hub.subscribe(high, sub)
        await low.publish({"q": "low"})
        await high.publish({"q": "high"})
        with trio.fail_after(5):
            got = await reader.read_until(3)
        assert [m.get("q") or m["type"] for m in got] == ["subscribed", "high", "low"]
        nursery.cancel_scope.cancel()


async def test_a_subscriber_removed_while_the_broker_is_asked_to_listen_is_left_out() -> None:
    broker = GatedBroker()
    hub = BroadcastHub(broker=broker)
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "gone")
    broker.listen_gate = gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.subscribe(queue, sub))
        await trio.testing.wait_all_tasks_blocked()
        hub.remove(sub)  # its connection ended meanwhile
        gate.set()
    assert len(queue) == 0
    assert sub.subscriptions == []
    assert await queue.members() == []


async def test_a_replay_failing_after_its_subscriber_left_raises_the_brokers_error() -> None:
    broker = GatedBroker()
    hub = BroadcastHub(broker=broker)
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "gone")
    broker.replay_gate = gate = trio.Event()
    broker.replay_fails = True

    async def subscribe() -> None:
        with pytest.raises(BrokerUnavailable):
            await hub.subscribe(queue, sub, since=0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscribe)
        await trio.testing.wait_all_tasks_blocked()
        hub.remove(sub)
        gate.set()
    assert len(queue) == 0
    assert await queue.members() == []


async def test_presence_counts_each_connection_of_a_name() -> None:
    hub = BroadcastHub()
    queue = hub.queue("room")
    first, _r1 = await memory_subscriber(hub, "ann")
    second, _r2 = await memory_subscriber(hub, "ann")
    await hub.subscribe(queue, first)
    await hub.subscribe(queue, second)
    assert await queue.members() == ["ann"]
    hub.unsubscribe(queue, first)
    assert await queue.members() == ["ann"]  # her other connection is still in the room
    hub.unsubscribe(queue, second)
    assert await queue.members() == []


async def test_a_queue_made_on_first_use_is_forgotten_with_its_last_subscriber() -> None:
    hub = BroadcastHub(dynamic_queues=True, max_queues=3)
    sub, _reader = await memory_subscriber(hub, "s")
    other, _r = await memory_subscriber(hub, "o")
    made = hub.get_or_create("room-1")
    hub.get_or_create("room-2")
    hub.get_or_create("room-3")
    with pytest.raises(QueueError, match="at most 3 groups"):
        hub.get_or_create("room-4")
    await hub.subscribe(made, sub)
    await hub.subscribe(made, other)
    hub.unsubscribe(made, sub)
    assert hub.get("room-1") is made  # one subscriber is left
    hub.unsubscribe(made, other)
    assert hub.get("room-1") is None  # forgotten: room for one more
    assert hub.get_or_create("room-4").dynamic
    with pytest.raises(QueueError, match="at most 3 groups"):
        hub.get_or_create("room-5")
    # Subscribing through the forgotten object makes the queue anew (if there is room).
    hub.remove(other)
    with pytest.raises(QueueError, match="at most 3 groups"):
        await hub.subscribe(made, sub)
    declared = hub.queue("fixed")
    await hub.subscribe(declared, sub)
    hub.unsubscribe(declared, sub)
    assert hub.get("fixed") is declared  # a declared queue stays


async def test_subscribing_through_a_forgotten_queue_makes_it_anew() -> None:
    hub = BroadcastHub(dynamic_queues=True)
    sub, _reader = await memory_subscriber(hub, "s")
    made = hub.get_or_create("room")
    await hub.subscribe(made, sub)
    hub.unsubscribe(made, sub)
    assert hub.get("room") is None
    await hub.subscribe(made, sub)
    anew = hub.get("room")
    assert anew is not None
    assert anew is not made
    assert anew.local_members() == ["s"]


async def test_a_reset_tells_every_subscriber_the_new_epoch_and_numbering() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q", history=10, priority=3, quota=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        subs = [await memory_subscriber(hub, name) for name in ("a", "b")]
        for sub, _reader in subs:
            await hub.subscribe(queue, sub)
        await queue.publish({"n": 1})
        with trio.fail_after(5):
            for _sub, reader in subs:
                await reader.read_until(1)
        hub.broker.on_reset("q", "epoch-2")
        assert (queue.epoch, queue.seq) == ("epoch-2", 0)
        with trio.fail_after(5):
            for sub, reader in subs:
                got = await reader.read_until(2)
                assert got[1] == {"type": "subscribed", "group": "q", "seq": 0, "epoch": "epoch-2"}
                assert (queue._subs[sub].priority, queue._subs[sub].quota) == (3, 2)
                assert sub.subscriptions == ["q"]
        nursery.cancel_scope.cancel()


async def test_a_reset_while_a_replay_is_read_still_tells_the_other_subscribers(
    autojump_clock: trio.abc.Clock,
) -> None:
    broker = GatedBroker()
    hub = BroadcastHub(broker=broker)
    queue = hub.queue("q", history=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        waiting, _r = await memory_subscriber(hub, "waiting")
        ready, reader = await memory_subscriber(hub, "ready")
        broker.replay_gate = gate = trio.Event()
        nursery.start_soon(lambda: hub.subscribe(queue, waiting, since=0))
        await trio.testing.wait_all_tasks_blocked()  # its lane is held, first in the queue
        await hub.subscribe(queue, ready)
        hub.broker.on_reset("q", "epoch-2")
        with trio.fail_after(5):
            got = await reader.read_until(1)
        assert got == [{"type": "subscribed", "group": "q", "seq": 0, "epoch": "epoch-2"}]
        gate.set()
        nursery.cancel_scope.cancel()


async def test_a_consumer_in_process_gets_gaps_and_binary_messages_as_such() -> None:
    hub = BroadcastHub()
    queue = hub.queue("feed")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        async with hub.open_subscription(queue) as channel:
            await queue.publish(b"\x00\x01raw")
            hub.broker.on_gap("feed", 2, 5)  # what a broker that was away could not bring
            await queue.publish("text")
            with trio.fail_after(5):
                items = [await channel.receive() for _ in range(3)]
        assert items[0] == QueueMessage("feed", 1, b"\x00\x01raw")
        assert items[1] == QueueGap("feed", 2, 5)
        assert items[2] == QueueMessage("feed", 2, "text")
        nursery.cancel_scope.cancel()


async def test_the_statistics_count_queues_messages_and_what_waits() -> None:
    hub = BroadcastHub()
    first, second = hub.queue("a"), hub.queue("b")
    sub, _reader = await memory_subscriber(hub, "slow")
    await hub.subscribe(first, sub, reply=True)  # busy: a memory stream takes nothing at once
    await first.publish({"n": 1})
    await first.publish({"n": 2})
    await second.publish({"n": 3})
    hub.engine.flush_queue(first)
    stats = hub.statistics()
    assert (stats.queues, stats.subscribers, stats.published) == (2, 1, 3)
    assert stats.buffered == 2  # the two of queue a wait in the busy subscriber's buffer


async def test_a_retraction_from_another_node_reaches_a_busy_subscriber_here() -> None:
    here = BroadcastHub()
    there = BroadcastHub(broker=here.broker.peer("there"))  # type: ignore[attr-defined]
    queue = here.queue("prices")
    remote = there.queue("prices")
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        await nursery.start(there.run)
        sub, reader = await memory_subscriber(here, "slow")
        await here.subscribe(queue, sub)
        await remote.publish({"p": 1})
        await trio.testing.wait_all_tasks_blocked()  # 1 is being written: the reader is slow
        await remote.publish({"p": 2}, key="eur")
        await remote.publish({"p": 3})
        await trio.testing.wait_all_tasks_blocked()
        assert await remote.retract("eur") == 1  # on the other node
        with trio.fail_after(5):
            got = await reader.read_until(2)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["p"] for m in got] == [1, 3]
        here._on_retract("no-such-queue", "eur")  # a queue this node does not have: ignored
        nursery.cancel_scope.cancel()


async def test_a_subscriber_gets_the_hubs_byte_bound() -> None:
    hub = BroadcastHub(max_subscriber_buffer=100, max_subscriber_bytes=3000)
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "slow")
    await hub.subscribe(queue, sub, reply=True)  # busy from the start
    for i in range(6):  # 6 x ~1 KB: over the 3000-byte bound, the oldest are skipped
        await queue.publish({"i": i, "pad": "x" * 1000})
    hub.engine.flush_queue(queue)
    assert sub.buffered < 6
    assert queue.dropped == 6 - sub.buffered


async def test_an_auto_queue_declared_before_the_hub_runs_takes_in_every_connection() -> None:
    hub = BroadcastHub()
    await memory_subscriber(hub, "early")
    news = hub.queue("news", auto_subscribe=True)  # declared after the subscriber existed
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        async with hub.open_subscription("news", name="bot"):
            await trio.testing.wait_all_tasks_blocked()
            assert news.local_members() == ["bot", "early"]
            late = hub.queue("late", auto_subscribe=True)  # and one declared while running
            await trio.testing.wait_all_tasks_blocked()
            assert late.local_members() == ["early"]  # an in-process consumer chooses its own
        nursery.cancel_scope.cancel()


class CopyingBroker(MemoryBroker):
    """A memory broker that hands the node a copy of each message, as a shared broker does
    (its messages come over the wire): a retraction reaches them only as ``on_retract``."""

    def take_node_callback(self) -> None:
        to_node = self.on_message

        def copying(queue: str, message: Message) -> None:
            if type(message) is Message:
                copy = Message(
                    message.seq,
                    message.frame,
                    payload=message.payload,
                    opcode=message.opcode,
                    key=message.key,
                    time=message.time,
                )
                message = copy
            to_node(queue, message)

        self.on_message = copying


async def test_a_retraction_reaches_copies_of_the_messages_through_on_retract() -> None:
    broker = CopyingBroker()
    hub = BroadcastHub(broker=broker)
    broker.take_node_callback()
    queue = hub.queue("prices")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "slow")
        await hub.subscribe(queue, sub)
        await queue.publish({"p": 1})
        await trio.testing.wait_all_tasks_blocked()  # 1 is being written: the reader is slow
        await queue.publish({"p": 2}, key="eur")
        await queue.publish({"p": 3})
        await trio.testing.wait_all_tasks_blocked()
        assert await queue.retract("eur") == 1
        with trio.fail_after(5):
            got = await reader.read_until(2)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["p"] for m in got] == [1, 3]
        nursery.cancel_scope.cancel()


async def test_a_publisher_that_never_yields_hands_over_every_1024_messages() -> None:
    hub = BroadcastHub(max_subscriber_buffer=2000)
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "busy")
    await hub.subscribe(queue, sub, reply=True)  # busy: a memory stream takes nothing at once
    for i in range(1023):  # the hub is not running: nothing flushes the queue
        await queue.publish({"i": i})
    assert sub.buffered == 0
    await queue.publish({"i": 1023})
    assert sub.buffered == 1024  # the 1024th flushed them all into the busy buffer


async def test_unsubscribing_what_was_not_subscribed_says_so() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "s")
    assert hub.unsubscribe("nowhere", sub) is False
    assert hub.unsubscribe(queue, sub) is False
    assert hub.unsubscribe("q", sub) is False
    await hub.subscribe(queue, sub)
    assert hub.unsubscribe("q", sub) is True
    assert hub.unsubscribe("q", sub) is False


async def test_the_hubs_shortcuts_take_a_queue_object_and_pass_the_keys_on() -> None:
    hub = BroadcastHub()
    queue = hub.queue("room")
    sub, _reader = await memory_subscriber(hub, "ann")
    await hub.subscribe(queue, sub)
    assert await hub.members(queue) == ["ann"]
    assert await hub.members("room") == ["ann"]
    await hub.publish("room", {"n": 1}, key="a")
    assert await hub.publish_many("room", [{"n": 2}, {"n": 3}], keys=["b", "a"]) == [2, 3]
    assert await queue.retract("a") == 2
    assert await queue.retract("b") == 1


async def test_refusals_say_why() -> None:
    closed = BroadcastHub(dynamic_queues=False)
    with pytest.raises(QueueError, match=r"^no group room$"):
        closed.get_or_create("room")
    with pytest.raises(QueueError, match=r"^no group room$"):
        await closed.publish("room", {"n": 1})
    with pytest.raises(TypeError, match=r"^give options or keyword arguments, not both$"):
        closed.queue("q", QueueOptions(), history=5)
    with pytest.raises(ValueError, match=r"^max_subscriber_buffer must be positive$"):
        BroadcastHub(max_subscriber_buffer=0)
    assert BroadcastHub(max_subscriber_buffer=1).max_subscriber_buffer == 1
    hub = BroadcastHub()
    limited = hub.queue("ticks", max_publish_rate=(2, 1.0))
    await limited.publish({"n": 1})
    await limited.publish({"n": 2})
    with pytest.raises(QueueError, match=r"^group ticks takes at most 2 messages per 1 s$"):
        await limited.publish({"n": 3})


async def test_a_subscriber_without_a_name_is_in_no_presence_list() -> None:
    hub = BroadcastHub()
    queue = hub.queue("room")
    server_stream, _client_stream = trio.testing.lockstep_stream_pair()
    conn = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    sub = await hub.subscriber(conn)
    await hub.subscribe(queue, sub)
    assert len(queue) == 1
    assert queue.local_members() == []
    assert await queue.members() == []


async def test_a_subscriber_whose_auto_subscription_fails_is_not_left_registered() -> None:
    hub = BroadcastHub(broker=FailingReplayBroker())
    hub.queue("news", auto_subscribe=True)
    with pytest.raises(BrokerUnavailable):
        await memory_subscriber(hub, "ann")
    assert hub.statistics().subscribers == 0
    assert await hub.members("news") == []


async def test_an_auto_queue_the_broker_cannot_take_is_logged_per_subscriber(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_ws.broadcast")
    hub = BroadcastHub(broker=FailingReplayBroker())
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        subs = [(await memory_subscriber(hub, name))[0] for name in ("ann", "bob")]
        hub.queue("late", auto_subscribe=True)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    logged = [r.getMessage() for r in caplog.records if r.name == "trio_ws.broadcast"]
    assert logged == [f"{sub!r} not subscribed to late: the broker is unavailable" for sub in subs]


async def test_an_auto_queue_declared_between_two_runs_is_subscribed_by_the_next() -> None:
    hub = BroadcastHub()
    await memory_subscriber(hub, "s")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        nursery.cancel_scope.cancel()
    news = hub.queue("news", auto_subscribe=True)  # the hub is not running
    assert news.local_members() == []
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await trio.testing.wait_all_tasks_blocked()
        assert news.local_members() == ["s"]
        nursery.cancel_scope.cancel()


async def test_a_queue_catches_up_with_the_broker_when_it_listens_again() -> None:
    """While nobody here subscribes, the node hears nothing of the queue: a new subscriber
    takes the broker's seq and epoch, also when the history started again meanwhile."""
    hub = BroadcastHub(broker=MemoryBroker(store=MemoryStore(max_histories=1)))
    there = hub.broker.peer()  # type: ignore[attr-defined]
    queue = hub.queue("q")
    other = QueueOptions()
    sub, _reader = await memory_subscriber(hub, "s")
    for i in range(3):
        await queue.publish({"i": i})
    await hub.subscribe(queue, sub)
    first_epoch = queue.epoch
    hub.unsubscribe(queue, sub)
    for _ in range(2):  # published on another node while this one does not listen
        await there.publish("q", b"{}", kind=3, key=None, options=other)
    assert queue.seq == 3
    assert await hub.subscribe(queue, sub) == 5
    assert (queue.seq, queue.epoch) == (5, first_epoch)
    assert await hub.subscribe(queue, sub) == 5  # subscribed already: where it stands
    hub.unsubscribe(queue, sub)
    await there.publish("elsewhere", b"{}", kind=3, key=None, options=other)  # q forgotten
    await there.publish("q", b"{}", kind=3, key=None, options=other)  # a new history
    assert await hub.subscribe(queue, sub) == 1
    assert queue.epoch != first_epoch
    assert queue.seq == 1
    assert await hub.subscribe(queue, sub) == 1


async def test_a_new_queue_has_heard_nothing_yet() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    assert (queue.seq, queue.epoch, queue.dynamic) == (0, "", False)
    assert hub.get_or_create("made").dynamic is True
    gone, _reader = await memory_subscriber(hub, "gone")
    hub.remove(gone)
    assert await hub.subscribe(queue, gone) == 0  # a removed subscriber: the queue's seq
    assert len(queue) == 0


async def test_a_default_hub_holds_1000_messages_per_subscriber_lane() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    sub, _reader = await memory_subscriber(hub, "busy")
    await hub.subscribe(queue, sub, reply=True)  # busy from the start
    for i in range(1000):
        await queue.publish({"i": i})
    hub.engine.flush_queue(queue)
    assert (sub.buffered, queue.dropped) == (1000, 0)
    await queue.publish({"i": 1000})
    hub.engine.flush_queue(queue)
    assert (sub.buffered, queue.dropped) == (1000, 1)


def test_a_default_hub_makes_at_most_10000_queues_on_first_use() -> None:
    hub = BroadcastHub()
    for i in range(10_000):
        hub.get_or_create(f"q{i}")
    with pytest.raises(QueueError, match="at most 10000 groups"):
        hub.get_or_create("one-more")


async def test_a_default_hub_gives_a_too_slow_subscriber_5_seconds_for_its_close(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = BroadcastHub(max_subscriber_buffer=2)
    queue = hub.queue("fast", policy="disconnect")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, _reader = await memory_subscriber(hub, "stuck")  # never reads a byte
        conn = sub.connection
        assert conn is not None
        await hub.subscribe(queue, sub)
        for i in range(5):
            await queue.publish({"i": i})
            await trio.testing.wait_all_tasks_blocked()
        assert hub.kicked == 1
        await trio.sleep(4.9)
        assert conn.closed is None
        await trio.sleep(0.2)
        assert conn.closed is not None
        nursery.cancel_scope.cancel()


def test_a_default_hub_compresses_at_zlib_level_6() -> None:
    words = random.Random(0).choices(["alpha", "beta", "gamma", "delta", "eta"], k=2000)
    body = " ".join(words).encode()

    def message() -> Message:
        frame = encode_frame(Opcode.TEXT, body)
        return Message(1, frame, payload=memoryview(frame)[len(frame) - len(body) :])

    def at(level: int) -> bytes:
        engine = DeliveryEngine(lambda sub: None, close_timeout=5.0, compression_level=level)
        return engine._compressed(message(), 15)

    assert at(6) != at(7)  # a text on which the two levels differ
    assert BroadcastHub().engine._compressed(message(), 15) == at(6)


class LaggingBroker(_SteppingBroker):
    """A broker whose live messages reach the node a step at a time, and whose replay, as
    the broker interface requires, returns only once the live messages up to its seq are
    in (a shared broker's pub/sub connection lags its command connection)."""

    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        replay = await super().replay(queue, since, epoch=epoch, options=options)
        while self.inbound:
            await trio.lowlevel.checkpoint()
        return replay


async def test_a_take_over_brings_what_was_on_its_way_to_a_caught_up_subscriber(
    autojump_clock: trio.abc.Clock,
) -> None:
    broker = LaggingBroker()
    here = BroadcastHub(broker=broker)
    broker.take_node_callback()
    there = BroadcastHub(broker=broker.peer("there"))
    queue = here.queue("g", history=10)
    remote = there.queue("g", history=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.hand_over)
        await nursery.start(here.run)
        old, old_reader = await memory_subscriber(here, "alice")
        await here.subscribe(queue, old)
        await remote.publish({"n": 1})
        with trio.fail_after(5):
            await old_reader.read_until(1)
        await trio.testing.wait_all_tasks_blocked()  # old has had everything this node saw
        new, new_reader = await memory_subscriber(here, "alice")
        await remote.publish({"n": 2})  # on its way to this node
        await here.take_over(old, new)
        await remote.publish({"n": 3})
        with trio.fail_after(5):
            got = await new_reader.read_until(2)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["n"] for m in got] == [2, 3]
        nursery.cancel_scope.cancel()


async def test_a_queue_declared_without_auto_subscribe_takes_in_nobody() -> None:
    hub = BroadcastHub()
    await memory_subscriber(hub, "s")
    before = hub.queue("before")  # declared before the hub runs
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        during = hub.queue("during")  # and while it runs
        await trio.testing.wait_all_tasks_blocked()
        assert before.local_members() == []
        assert during.local_members() == []
        nursery.cancel_scope.cancel()
