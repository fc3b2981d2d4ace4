"""The hub's bookkeeping, where an application or the broker can see it.

Presence counts per name, the broker's subscriptions following local subscribers, queues
made on first use forgotten with their last subscriber, a broker's reset and gap reaching
every kind of subscriber. (Found missing by a mutation run of ``_broadcast.py``.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.test_broadcast import memory_subscriber
from trio_ws._broadcast import BroadcastHub, QueueError, QueueGap, QueueMessage
from trio_ws._queue_model import QueueOptions
from trio_ws.brokers import BrokerUnavailable, MemoryBroker, Replay


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
    queue = hub.queue("q", history=10, priority=3)
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
                assert queue._subs[sub].priority == 3
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
