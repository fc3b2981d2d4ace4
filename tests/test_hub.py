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
