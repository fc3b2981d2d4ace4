"""Broadcast queues over real loopback sockets and memory streams.

Most tests serve a :class:`trio_ws.Server` whose handler gives every connection a
subscriber and obeys a tiny JSON control protocol (``subscribe``/``unsubscribe``/``ping``),
while the test publishes through the hub directly. Priority, retraction and time-to-live
use a connection over ``trio.testing.lockstep_stream_pair``, where the test decides exactly
when the subscriber reads.
"""

from __future__ import annotations

import itertools
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
import websockets
import websockets.trio.client

from trio_ws import ConnectionClosed, Server, ServerConfig, WebSocketConnection
from trio_ws._broadcast import BroadcastHub, QueueError, Subscriber
from trio_ws._client import connect
from trio_ws._queue_model import Message
from trio_ws._transport import StreamTransport
from trio_ws.brokers import MemoryBroker
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._events import BytesMessage, TextMessage
from trio_ws.protocol._frames import Role

# ---------------------------------------------------------------------------------------
# Helpers


class _AnyEpoch(str):
    """Equal to any non-empty epoch string (a history's epoch is random)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_EPOCH = _AnyEpoch()


class Registry:
    """The server side of the test connections, by name."""

    def __init__(self) -> None:
        self.subs: dict[str, Subscriber] = {}
        self.closed: dict[str, int] = {}
        self.changed = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self.changed.wait()


def make_handler(hub: BroadcastHub, registry: Registry) -> Any:
    async def handler(conn: WebSocketConnection) -> None:
        assert conn.request is not None
        query = urllib.parse.parse_qs(conn.request.query)
        name = query.get("name", [""])[0]
        if "sndbuf" in query:  # a small kernel buffer makes a non-reading client back up fast
            sock = conn.transport.sock  # type: ignore[attr-defined]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(query["sndbuf"][0]))
        sub = await hub.subscriber(conn, name)
        registry.subs[name] = sub
        try:
            for queue in query.get("sub", []):
                await hub.subscribe(queue, sub)
            registry._changed()
            while True:
                op = json.loads(await conn.receive())
                if op["op"] == "subscribe":
                    await hub.subscribe(op["queue"], sub, since=op.get("since"), reply=True)
                    registry._changed()
                elif op["op"] == "unsubscribe":
                    hub.unsubscribe(op["queue"], sub)
                    await conn.send({"type": "unsubscribed", "group": op["queue"]})
                elif op["op"] == "ping":
                    await conn.send({"type": "pong"})
        except ConnectionClosed as exc:
            registry.closed[name] = exc.code
            raise
        finally:
            hub.remove(sub)
            registry.closed.setdefault(name, conn.closed.code if conn.closed else 1006)
            registry._changed()

    return handler


@asynccontextmanager
async def serving(hub: BroadcastHub, **config: Any) -> AsyncIterator[tuple[str, Registry]]:
    """Serve the test handler and run the hub; yield ``("ws://127.0.0.1:port", registry)``."""
    config.setdefault("close_timeout", 1.0)
    registry = Registry()
    server = Server(make_handler(hub, registry), config=ServerConfig(**config))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        addresses = await nursery.start(partial(server.serve, "127.0.0.1", 0))
        try:
            yield f"ws://{addresses[0]}", registry
        finally:
            nursery.cancel_scope.cancel()


async def receive_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = json.loads(await ws.receive())
    assert isinstance(message, dict)
    return message


def check_stream(items: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    """Assert ``items`` (messages and gaps) cover ``start+1 .. end`` exactly once, in order.

    Returns the gap notices.
    """
    expected = start + 1
    gaps = []
    for item in items:
        if item["type"] == "gap":
            assert item["from"] == expected, (item, expected)
            assert item["to"] >= item["from"]
            expected = item["to"] + 1
            gaps.append(item)
        else:
            assert item["seq"] == expected, (item, expected)
            expected += 1
    assert expected == end + 1, (expected, end)
    return gaps


# ---------------------------------------------------------------------------------------
# Order and completeness


async def test_500_subscribers_get_1000_messages_once_in_order() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g")
    n_subs, n_msgs = 500, 1000
    with trio.fail_after(60):
        # 500 handshakes at once from one address: more than a public server admits.
        async with serving(hub, max_pending_per_address=n_subs) as (url, registry):
            results: dict[int, list[int]] = {}
            connected = 0

            async def subscriber(i: int) -> None:
                nonlocal connected
                async with connect(f"{url}/?name=s{i}&sub=g", compression=False) as ws:
                    connected += 1
                    got = results[i] = []
                    while len(got) < n_msgs:
                        message = await receive_json(ws)
                        got.append(message["seq"])

            async with trio.open_nursery() as nursery:
                for i in range(n_subs):
                    nursery.start_soon(subscriber, i)
                await registry.wait_for(lambda: len(queue) == n_subs)
                for i in range(n_msgs):
                    await queue.publish(
                        {"type": "grouped", "group": "g", "from": "t", "text": str(i)}
                    )
                    if i % 50 == 49:
                        await trio.lowlevel.checkpoint()
            assert queue.seq == n_msgs
            expected = list(range(1, n_msgs + 1))
            assert len(results) == n_subs
            assert all(got == expected for got in results.values())
            assert hub.statistics().dropped == 0


async def test_published_dict_gets_seq_and_every_type_round_trips() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g")
    with trio.fail_after(10):
        async with serving(hub) as (url, registry):
            async with connect(f"{url}/?name=a&sub=g") as ws:
                await registry.wait_for(lambda: len(queue) == 1)
                assert await queue.publish({"type": "grouped", "group": "g", "text": "hi"}) == 1
                assert await queue.publish("plain text") == 2
                assert await queue.publish(b"\x00\x01binary") == 3
                assert await receive_json(ws) == {
                    "type": "grouped",
                    "group": "g",
                    "text": "hi",
                    "seq": 1,
                }
                assert await ws.receive() == "plain text"
                assert await ws.receive() == b"\x00\x01binary"


# ---------------------------------------------------------------------------------------
# Slow subscribers


BIG = "x" * 2000


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
async def test_a_subscriber_that_never_reads(policy: str) -> None:
    capacity = 50
    hub = BroadcastHub(max_subscriber_buffer=capacity, close_timeout=5.0)
    queue = hub.queue("g", policy=policy)  # type: ignore[arg-type]
    n_msgs = 3000
    with trio.fail_after(30):
        async with serving(hub) as (url, registry):
            async with (
                connect(f"{url}/?name=slow&sub=g&sndbuf=4096", compression=False) as slow,
                connect(f"{url}/?name=fast&sub=g", compression=False) as fast,
            ):
                slow.transport.stream.socket.setsockopt(  # type: ignore[attr-defined]
                    socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
                )
                await registry.wait_for(lambda: len(queue) == 2)
                slow_sub = registry.subs["slow"]
                fast_got: list[int] = []

                async def read_fast() -> None:
                    while len(fast_got) < n_msgs:
                        fast_got.append((await receive_json(fast))["seq"])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_fast)
                    for i in range(n_msgs):
                        await queue.publish({"type": "grouped", "text": BIG, "i": i})
                        assert slow_sub.buffered <= capacity
                        if i % 20 == 19:
                            await trio.lowlevel.checkpoint()
                # The fast subscriber got everything, the slow one is bounded.
                assert fast_got == list(range(1, n_msgs + 1))
                assert slow_sub.buffered <= capacity
                if policy == "drop":
                    assert queue.dropped > 0
                    assert not slow_sub.removed
                    items: list[dict[str, Any]] = []
                    while not items or items[-1].get("seq") != n_msgs:
                        items.append(await receive_json(slow))
                    gaps = check_stream(items, 0, n_msgs)
                    # How many overflow episodes there are depends on how much the kernel
                    # took before the slow reader's buffers filled (the send task may write
                    # one more round after the first one); each is reported by one gap
                    # naming its whole range, never split into several in a row.
                    assert gaps
                    kinds = [item["type"] for item in items]
                    assert not any(a == b == "gap" for a, b in itertools.pairwise(kinds))
                    missed = sum(gap["to"] - gap["from"] + 1 for gap in gaps)
                    assert missed == queue.dropped
                    assert len(gaps) < missed / capacity  # episodes, not drops
                    assert items[-capacity - 1]["type"] == "gap"  # then the newest 50
                else:
                    assert slow_sub.removed
                    assert hub.statistics().kicked == 1
                    assert queue.local_members() == ["fast"]
                    seqs = []
                    code = None
                    try:
                        while True:
                            seqs.append((await receive_json(slow))["seq"])
                    except ConnectionClosed as exc:
                        code = exc.code
                    assert code == 1013
                    assert seqs == list(range(1, len(seqs) + 1))  # no hole before the close
                    assert len(seqs) < n_msgs
                    await registry.wait_for(lambda: "slow" in registry.closed)


# ---------------------------------------------------------------------------------------
# Resume


@pytest.mark.parametrize(
    ("since", "gap"),
    [
        (120, None),  # inside the kept history (51..150)
        (50, None),  # at its edge
        (10, (11, 50)),  # beyond it
        (0, (1, 50)),
        (150, None),  # at the last seq: nothing to replay
        (400, None),  # beyond the last seq
    ],
)
async def test_resume_while_publishing_continues(since: int, gap: tuple[int, int] | None) -> None:
    hub = BroadcastHub()
    queue = hub.queue("r", history=100)
    for i in range(150):
        await queue.publish({"type": "grouped", "i": i})
    total = 600
    with trio.fail_after(20):
        async with serving(hub) as (url, registry):
            async with connect(f"{url}/?name=late", compression=False) as ws:

                async def keep_publishing() -> None:
                    # From the moment the replay is decided, while it is being written.
                    await registry.wait_for(lambda: len(queue) == 1)
                    while queue.seq < total:
                        await queue.publish({"type": "grouped"})
                        await trio.lowlevel.checkpoint()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_publishing)
                    await ws.send(json.dumps({"op": "subscribe", "queue": "r", "since": since}))
                    reply = await receive_json(ws)
                    assert reply["type"] == "subscribed"
                    assert reply["group"] == "r"
                    assert reply["seq"] == 150
                    items: list[dict[str, Any]] = []
                    while not items or items[-1].get("seq") != total:
                        items.append(await receive_json(ws))
                start = min(since, reply["seq"])
                gaps = check_stream(items, start, total)
                assert [(g["from"], g["to"]) for g in gaps] == ([gap] if gap else [])


# ---------------------------------------------------------------------------------------
# Unsubscribe, disconnect, presence


async def test_unsubscribe_and_disconnect_stop_delivery_and_presence_follows() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g")
    with trio.fail_after(10):
        async with serving(hub) as (url, registry):
            async with connect(f"{url}/?name=alice&sub=g", compression=False) as alice:
                async with connect(f"{url}/?name=bob&sub=g", compression=False):
                    await registry.wait_for(lambda: len(queue) == 2)
                    assert queue.local_members() == ["alice", "bob"]
                    assert await hub.members("g") == ["alice", "bob"]

                    async def publish_forever() -> None:
                        while True:
                            await queue.publish({"type": "grouped"})
                            await trio.lowlevel.checkpoint()

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(publish_forever)
                        await alice.send(json.dumps({"op": "unsubscribe", "queue": "g"}))
                        while (await receive_json(alice))["type"] != "unsubscribed":
                            pass
                        assert queue.local_members() == ["bob"]
                        await trio.sleep(0.05)  # keep publishing for a while
                        await alice.send(json.dumps({"op": "ping"}))
                        # Nothing of g between the unsubscribed reply and the pong.
                        assert await receive_json(alice) == {"type": "pong"}
                        nursery.cancel_scope.cancel()
                await registry.wait_for(lambda: "bob" in registry.closed)
                assert queue.local_members() == []
                assert registry.subs["bob"].removed
                # Publishing to nobody costs nothing and keeps numbering.
                before = queue.seq
                await queue.publish({"type": "grouped"})
                assert queue.seq == before + 1
    assert hub.statistics().subscribers == 0


async def test_subscribing_twice_is_harmless() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g")
    with trio.fail_after(10):
        async with serving(hub) as (url, _registry):
            async with connect(f"{url}/?name=a", compression=False) as ws:
                for _ in range(2):
                    await ws.send(json.dumps({"op": "subscribe", "queue": "g", "since": 0}))
                    assert await receive_json(ws) == {
                        "type": "subscribed",
                        "group": "g",
                        "seq": 0,
                        "epoch": ANY_EPOCH,
                    }
                await queue.publish({"type": "grouped"})
                assert (await receive_json(ws))["seq"] == 1
                await ws.send(json.dumps({"op": "ping"}))
                assert await receive_json(ws) == {"type": "pong"}
                assert queue.local_members() == ["a"]


# ---------------------------------------------------------------------------------------
# Memory-stream subscribers: the test decides when they read


class Reader:
    """The client end of a lockstep stream: reads frames only when asked."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = WebSocketProtocol(Role.CLIENT, max_message_size=None)
        self.messages: list[Any] = []

    async def read_some(self) -> None:
        self.protocol.receive_data(await self.stream.receive_some(65536))
        for event in self.protocol.events_received():
            if isinstance(event, TextMessage):
                self.messages.append(json.loads(event.data))
            elif isinstance(event, BytesMessage):
                self.messages.append(event.data)

    async def read_until(self, count: int) -> list[Any]:
        while len(self.messages) < count:
            await self.read_some()
        return self.messages


async def memory_subscriber(hub: BroadcastHub, name: str) -> tuple[Subscriber, Reader]:
    server_stream, client_stream = trio.testing.lockstep_stream_pair()
    conn = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    return await hub.subscriber(conn, name), Reader(client_stream)


async def test_priority_and_quota_proportion_under_load() -> None:
    hub = BroadcastHub(max_subscriber_buffer=30)
    high = hub.queue("high", priority=10, quota=3)
    low = hub.queue("low", priority=0, quota=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "c")
        await hub.subscribe(low, sub)  # subscribed first, yet served second
        await hub.subscribe(high, sub)

        async def publish_forever() -> None:
            while True:
                for _ in range(4):
                    await high.publish({"q": "high"})
                    await low.publish({"q": "low"})
                await trio.lowlevel.checkpoint()

        nursery.start_soon(publish_forever)
        with trio.fail_after(10):
            await reader.read_until(2400)
        nursery.cancel_scope.cancel()
    delivered = [m["q"] for m in reader.messages[400:2400] if "q" in m]  # past the warm-up
    share = delivered.count("high") / delivered.count("low")
    assert 2.7 <= share <= 3.3, share
    # Both queues skipped ahead and said so.
    gaps = {m["group"] for m in reader.messages if m.get("type") == "gap"}
    assert gaps == {"high", "low"}


async def test_retracted_messages_never_reach_a_slow_or_late_subscriber() -> None:
    hub = BroadcastHub()
    queue = hub.queue("prices")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "slow")
        await hub.subscribe(queue, sub)
        await queue.publish({"p": 1})
        await trio.testing.wait_all_tasks_blocked()  # 1 is being written: the reader is slow
        await queue.publish({"p": 2}, key="eur")
        await queue.publish({"p": 3}, key="usd")
        await queue.publish({"p": 4}, key="eur")
        await queue.publish({"p": 5})
        await trio.testing.wait_all_tasks_blocked()
        assert await queue.retract("eur") == 2
        assert await queue.retract("nothing") == 0
        with trio.fail_after(5):
            messages = await reader.read_until(3)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["seq"] for m in messages] == [1, 3, 5]

        late, late_reader = await memory_subscriber(hub, "late")
        assert await hub.subscribe(queue, late, since=0) == 5
        with trio.fail_after(5):
            assert [m["seq"] for m in await late_reader.read_until(3)] == [1, 3, 5]
        nursery.cancel_scope.cancel()


async def test_ttl_expired_messages_are_not_replayed(autojump_clock: trio.abc.Clock) -> None:
    hub = BroadcastHub()
    queue = hub.queue("news", ttl=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for _ in range(3):
            await queue.publish({"type": "news"})
        await trio.sleep(6)
        await queue.publish({"type": "news"})
        await trio.sleep(6)  # 1..3 are 12 s old now, 4 is 6 s old
        await queue.publish({"type": "news"})
        sub, reader = await memory_subscriber(hub, "late")
        assert await hub.subscribe(queue, sub, since=0, reply=True) == 5
        messages = await reader.read_until(4)
        assert messages == [
            {"type": "subscribed", "group": "news", "seq": 5, "epoch": ANY_EPOCH},
            {"type": "gap", "group": "news", "from": 1, "to": 3},
            {"type": "news", "seq": 4},
            {"type": "news", "seq": 5},
        ]
        nursery.cancel_scope.cancel()


async def test_publish_rate_limit(autojump_clock: trio.abc.Clock) -> None:
    hub = BroadcastHub()
    queue = hub.queue("chat", max_publish_rate=(3, 1.0))
    assert [await queue.publish("x"), await queue.publish("x"), await queue.publish("x")] == [
        1,
        2,
        3,
    ]
    with pytest.raises(QueueError) as info:
        await queue.publish("x")
    assert info.value.code == "rate_limited"
    assert queue.seq == 3  # a refused message gets no seq
    await trio.sleep(1.0)
    assert await queue.publish("x") == 4


async def test_publish_many_reaches_subscribers_in_order_with_consecutive_seqs() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g", history=10)
    with trio.fail_after(10):
        async with serving(hub) as (url, registry):
            async with connect(f"{url}/?name=a&sub=g") as ws:
                await registry.wait_for(lambda: len(queue) == 1)
                assert await queue.publish("before") == 1
                batch = [{"type": "grouped", "text": "hi"}, "plain", b"\x00bin"]
                assert await queue.publish_many(batch, keys=["k", None, "k"]) == [2, 3, 4]
                assert await hub.publish_many("g", ["by name"]) == [5]
                assert (queue.seq, queue.published) == (5, 5)
                assert await ws.receive() == "before"
                assert await receive_json(ws) == {"type": "grouped", "text": "hi", "seq": 2}
                assert [await ws.receive() for _ in range(3)] == ["plain", b"\x00bin", "by name"]
                assert await queue.retract("k") == 2  # keys as given, per message
                with pytest.raises(ValueError, match="1 to 1000 messages, not 0"):
                    await queue.publish_many([])
                with pytest.raises(ValueError, match="1 to 1000 messages, not 1001"):
                    await queue.publish_many(["x"] * 1001)
                with pytest.raises(ValueError, match="1 keys for 2 messages"):
                    await queue.publish_many(["x", "y"], keys=["k"])
                with pytest.raises(TypeError, match="cannot publish int"):
                    await queue.publish_many(["x", 3])  # type: ignore[list-item]
                assert queue.seq == 5  # nothing of a refused batch was published
                dynamic = BroadcastHub(dynamic_queues=False)
                with pytest.raises(QueueError) as info:
                    await dynamic.publish_many("nowhere", ["x"])
                assert info.value.code == "unknown_group"


async def test_publish_many_counts_every_message_against_the_rate(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = BroadcastHub()
    queue = hub.queue("chat", max_publish_rate=(5, 1.0))
    assert await queue.publish_many(["x"] * 3) == [1, 2, 3]
    with pytest.raises(QueueError) as info:
        await queue.publish_many(["x"] * 3)  # 2 tokens left: all or none
    assert info.value.code == "rate_limited"
    assert queue.seq == 3
    assert await queue.publish_many(["x"] * 2) == [4, 5]
    await trio.sleep(1.0)
    assert await queue.publish_many(["x"] * 5) == [6, 7, 8, 9, 10]


class _SteppingBroker(MemoryBroker):
    """A memory broker that hands its messages to the node one per scheduler step, from a
    task of its own, as a shared broker's client reading them off a socket does."""

    delivers_in_steps = True

    def __init__(self) -> None:
        super().__init__()
        self.inbound: list[tuple[str, Message]] = []
        self.arrived = trio.Event()

    def take_node_callback(self) -> None:
        self.to_node, self.on_message = self.on_message, self._later

    def _later(self, queue: str, message: Message) -> None:
        self.inbound.append((queue, message))
        self.arrived.set()

    async def hand_over(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived = trio.Event()
            while self.inbound:
                self.to_node(*self.inbound.pop(0))
                await trio.lowlevel.checkpoint()  # one message per step


@pytest.mark.parametrize("gather", [True, False])
async def test_messages_that_arrive_one_per_step_are_written_together(
    gather: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_ws._delivery import GATHER_STEPS
    from trio_ws._transport import SocketTransport

    monkeypatch.setattr("trio_ws._delivery.GATHER_SECONDS", 60.0)  # count passes only

    class CountingTransport(SocketTransport):
        writes = 0

        def send_nowait(self, data: bytes) -> int:
            CountingTransport.writes += 1
            return super().send_nowait(data)

    broker = _SteppingBroker()
    hub = BroadcastHub(broker=broker)
    broker.take_node_callback()
    hub.engine.gather = gather
    queue = hub.queue("g")
    ours, theirs = socket.socketpair()
    with ours, theirs, trio.fail_after(10):
        theirs.setblocking(False)
        conn = WebSocketConnection(CountingTransport(ours), WebSocketProtocol(Role.SERVER))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.hand_over)
            await nursery.start(hub.run)
            await hub.subscribe(queue, await hub.subscriber(conn))
            await queue.publish_many([f"m{i}" for i in range(200)])
            client = WebSocketProtocol(Role.CLIENT)
            got: list[object] = []
            while len(got) < 200:
                await trio.lowlevel.wait_readable(theirs)
                client.receive_data(theirs.recv(1 << 20))
                got += [e.data for e in client.events_received()]  # type: ignore[attr-defined]
            assert got == [f"m{i}" for i in range(200)]
            burst = CountingTransport.writes
            if gather:
                assert burst <= 2 * 200 // GATHER_STEPS
            else:
                assert burst >= 100  # about one write per message
            # A lone message is not held back: it goes out after two more passes.
            await queue.publish("lone")
            await trio.lowlevel.wait_readable(theirs)
            client.receive_data(theirs.recv(1 << 20))
            assert [e.data for e in client.events_received()] == ["lone"]  # type: ignore[attr-defined]
            assert CountingTransport.writes == burst + 1
            if gather:
                # Gathering is bounded in time too: with no time for it, a message waits
                # one pass at most, and the burst goes out a few messages per write (as
                # many as the broker's task delivered before the flusher's turn).
                monkeypatch.setattr("trio_ws._delivery.GATHER_SECONDS", 0.0)
                before = CountingTransport.writes
                await queue.publish_many([f"n{i}" for i in range(50)])
                got = []
                while len(got) < 50:
                    await trio.lowlevel.wait_readable(theirs)
                    client.receive_data(theirs.recv(1 << 20))
                    got += [e.data for e in client.events_received()]  # type: ignore[attr-defined]
                assert got == [f"n{i}" for i in range(50)]
                assert CountingTransport.writes - before >= 10  # gathering 32 passes: 2
            nursery.cancel_scope.cancel()


async def test_auto_subscribe_queues_reach_every_subscriber() -> None:
    hub = BroadcastHub()
    early = hub.queue("announcements", auto_subscribe=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "alice")
        late = hub.queue("motd", auto_subscribe=True)  # declared after the subscriber exists
        await trio.testing.wait_all_tasks_blocked()  # the hub subscribes everyone to it
        assert sorted(sub.subscriptions) == ["announcements", "motd"]
        assert early.local_members() == late.local_members() == ["alice"]
        assert await early.members() == await late.members() == ["alice"]
        await early.publish({"type": "a"})
        await late.publish({"type": "m"})
        with trio.fail_after(5):
            assert await reader.read_until(2) == [{"type": "a", "seq": 1}, {"type": "m", "seq": 1}]
        assert hub.unsubscribe(late, sub)  # an auto queue may still be left
        assert await late.members() == []
        nursery.cancel_scope.cancel()


async def test_take_over_moves_subscriptions_to_the_new_connection() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        old, _old_reader = await memory_subscriber(hub, "alice")
        await hub.subscribe(queue, old)
        await queue.publish({"n": 1})
        await trio.testing.wait_all_tasks_blocked()  # 1 is on old's connection
        await queue.publish({"n": 2})  # still in old's buffer
        await trio.testing.wait_all_tasks_blocked()
        new, new_reader = await memory_subscriber(hub, "alice")
        await hub.take_over(old, new)
        assert old.removed
        assert new.subscriptions == ["g"]
        assert queue.local_members() == ["alice"]
        await queue.publish({"n": 3})
        with trio.fail_after(5):
            assert [m["seq"] for m in await new_reader.read_until(2)] == [2, 3]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# Names and limits


async def test_queue_names_and_limits() -> None:
    hub = BroadcastHub(max_queues=2, queue_defaults={"history": 5})
    hub.queue("declared")
    with pytest.raises(ValueError, match="exists"):
        hub.queue("declared")
    for bad in ["", "a b", "x" * 65, "ü"]:
        with pytest.raises(QueueError) as info:
            hub.get_or_create(bad)
        assert info.value.code == "bad_group"
    assert hub.get_or_create("d1") is hub.get_or_create("d1")
    assert hub.get_or_create("d1").options.history == 5
    hub.get_or_create("d2")
    with pytest.raises(QueueError) as info:
        hub.get_or_create("d3")
    assert info.value.code == "too_many_groups"
    assert await hub.members("nowhere") == []
    closed = BroadcastHub(dynamic_queues=False)
    with pytest.raises(QueueError) as info:
        closed.get_or_create("g")
    assert info.value.code == "unknown_group"
    with pytest.raises(ValueError, match="policy"):
        hub.queue("p", policy="maybe")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Compression: one compressed frame shared by every permessage-deflate subscriber


def count_compressions(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the messages compressed from now on (any compressor); returns the counter."""
    import trio_ws.protocol._deflate as deflate_module

    calls = 0
    original = deflate_module.MessageCompressor.compress

    def counting(self: Any, data: bytes, *, final: bool = True) -> bytes:
        nonlocal calls
        calls += 1
        return original(self, data, final=final)

    monkeypatch.setattr(deflate_module.MessageCompressor, "compress", counting)
    return lambda: calls


@pytest.mark.parametrize("server_no_context_takeover", [True, False])
async def test_compressed_frames_are_shared_and_decode_in_a_real_client(
    server_no_context_takeover: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_compressions(monkeypatch)
    hub = BroadcastHub()
    queue = hub.queue("g")
    texts = [("compress me " * 40) + str(i) for i in range(20)]
    with trio.fail_after(15):
        async with serving(hub, server_no_context_takeover=server_no_context_takeover) as (
            url,
            registry,
        ):
            clients = [websockets.trio.client.connect(f"{url}/?name=w{i}&sub=g") for i in range(3)]
            async with clients[0] as w0, clients[1] as w1, clients[2] as w2:
                async with connect(f"{url}/?name=plain&sub=g", compression=False) as plain:
                    await registry.wait_for(lambda: len(queue) == 4)
                    shared = registry.subs["w0"]._variant
                    assert shared == (15 if server_no_context_takeover else 0)
                    assert w0.response is not None
                    assert w0.response.headers["Sec-WebSocket-Extensions"].startswith(
                        "permessage-deflate"
                    )
                    for i, text in enumerate(texts):
                        await queue.publish({"type": "grouped", "text": text})
                        if i % 3 == 0:
                            await trio.lowlevel.checkpoint()
                    for ws in (w0, w1, w2):
                        got = [json.loads(await ws.recv()) for _ in texts]
                        assert [m["text"] for m in got] == texts
                        assert [m["seq"] for m in got] == list(range(1, 21))
                    got_plain = [await receive_json(plain) for _ in texts]
                    assert [m["text"] for m in got_plain] == texts
    # Compressed once per message for all three deflate clients (or not at all when
    # their compressors keep context and they get the uncompressed frame).
    assert calls() == (len(texts) if server_no_context_takeover else 0)
    kept = hub.broker.store.histories["g"].kept  # type: ignore[attr-defined]
    assert all(m.compressed is None or len(m.compressed) == 1 for m in kept)
