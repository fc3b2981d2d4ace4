"""The broker seam and the renovated upper floors.

Two apps on one :class:`~trio_ws.brokers.MemoryStore` are two nodes of one cluster: names,
routing, groups, replay and presence must span them exactly as they would across processes
on a shared broker. The rest: a service that blocks does not silence its connection, the
shutdown order lets a backlogged subscriber get its 1001, in-process queue consumers,
typed queue options, the error root, the delivery states, and the health endpoints.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import trio_ws
from trio_ws import (
    App,
    BroadcastHub,
    ConnectionClosed,
    LoginAccepted,
    QueueError,
    QueueGap,
    QueueMessage,
    QueueOptions,
    ServerConfig,
    WebSocketError,
)
from trio_ws.brokers import BrokerState, BrokerUnavailable, MemoryBroker
from trio_ws.demo.app import create_app
from trio_ws.testing import MemoryListener

from .conftest import (
    expect_closed,
    logged_in,
    receive_json,
    running,
    split_address,
    stoppable,
    wait_until,
)

# ---------------------------------------------------------------------------------------
# Two nodes of one cluster


class _AnyEpoch(str):
    """Equal to any non-empty epoch string (a history's epoch is random)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_EPOCH = _AnyEpoch()


@asynccontextmanager
async def two_nodes(**config: Any) -> AsyncIterator[tuple[tuple[App, str], tuple[App, str]]]:
    """The demo app twice, on two ports, sharing one memory store: two nodes."""
    broker_a = MemoryBroker(node_id="a")
    apps = [
        create_app(config=ServerConfig(**config), broker=broker, ticks_per_second=0.001)
        for broker in (broker_a, broker_a.peer("b"))
    ]
    async with running(apps[0]) as address_a, running(apps[1]) as address_b:
        yield (apps[0], address_a), (apps[1], address_b)


async def test_routed_messages_reach_a_client_on_another_node() -> None:
    with trio.fail_after(10):
        async with two_nodes() as ((_a, address_a), (_b, address_b)):
            async with logged_in(address_a, "alice") as alice, logged_in(address_b, "bob") as bob:
                await alice.send({"type": "routed", "to": "BOB", "text": "hi"})
                assert await receive_json(bob) == {"type": "routed", "from": "alice", "text": "hi"}
                await bob.send({"type": "routed", "to": "nobody", "text": "?"})
                reply = await receive_json(bob)
                assert (reply["type"], reply["code"]) == ("error", "unknown_recipient")


async def test_a_name_held_on_one_node_is_refused_on_the_other_in_any_case() -> None:
    with trio.fail_after(10):
        async with two_nodes() as ((_a, address_a), (app_b, address_b)):
            async with logged_in(address_a, "alice"):
                async with trio_ws.connect(f"ws://{address_b}/ws") as second:
                    await second.send({"type": "login", "name": "ALICE"})
                    reply = await receive_json(second)
                    assert (reply["type"], reply["code"]) == ("error", "name_taken")
            # Released when the holder leaves: the other node may have it now.
            async with logged_in(address_b, "Alice"):
                assert app_b.clients.get("alice") is not None


async def test_takeover_across_nodes_closes_the_old_connection_with_1008() -> None:
    broker_a = MemoryBroker(node_id="a")

    def authenticated(request: trio_ws.LoginRequest) -> LoginAccepted:
        return LoginAccepted(request.message["name"], authenticated=True)

    apps = [
        App(broker=broker, login=authenticated, on_name_conflict="takeover")
        for broker in (broker_a, broker_a.peer())
    ]

    @apps[0].service("routed")
    async def routed(client: trio_ws.Client, message: dict[str, Any]) -> None:
        await apps[0].clients.send(message["to"], {"type": "routed", "text": message["text"]})

    with trio.fail_after(10):
        async with running(apps[0]) as address_a, running(apps[1]) as address_b:
            async with logged_in(address_a, "alice") as old, logged_in(address_a, "carol") as carol:
                async with logged_in(address_b, "alice") as new:
                    closed = await expect_closed(old)
                    assert (closed.code, closed.reason) == (1008, "replaced by a new login")
                    # The name now routes to the new connection, on the other node.
                    await carol.send({"type": "routed", "to": "alice", "text": "hello"})
                    assert await receive_json(new) == {"type": "routed", "text": "hello"}
                await wait_until(lambda: apps[0].clients.get("alice") is None)


async def test_a_group_spanning_nodes_gets_every_message_once_in_one_order() -> None:
    with trio.fail_after(20):
        async with two_nodes() as ((_a, address_a), (_b, address_b)):
            async with (
                logged_in(address_a, "a1") as a1,
                logged_in(address_a, "a2") as a2,
                logged_in(address_b, "b1") as b1,
            ):
                for conn in (a1, a2, b1):
                    await conn.send({"type": "grouped", "action": "subscribe", "group": "g"})
                    assert (await receive_json(conn))["type"] == "subscribed"
                n = 100
                for i in range(n):  # publishers on both nodes, interleaved
                    sender = a1 if i % 2 else b1
                    await sender.send(
                        {"type": "grouped", "action": "publish", "group": "g", "text": str(i)}
                    )
                streams = []
                for conn in (a1, a2, b1):
                    got = [await receive_json(conn) for _ in range(n)]
                    streams.append([(m["seq"], m["from"], m["text"]) for m in got])
                assert [seq for seq, _, _ in streams[0]] == list(range(1, n + 1))
                assert streams[0] == streams[1] == streams[2]
                # Each sender's messages in the order it sent them.
                texts_by_b1 = [t for _, f, t in streams[0] if f == "b1"]
                assert texts_by_b1 == [str(i) for i in range(0, n, 2)]
                await a1.send({"type": "grouped", "action": "members", "group": "g"})
                members = await receive_json(a1)
                assert members == {"type": "members", "group": "g", "names": ["a1", "a2", "b1"]}


async def test_since_is_served_by_another_node_than_the_publisher() -> None:
    with trio.fail_after(10):
        async with two_nodes() as ((_a, address_a), (_b, address_b)):
            async with logged_in(address_a, "pub") as pub:
                for i in range(5):
                    await pub.send(
                        {"type": "grouped", "action": "publish", "group": "news", "text": str(i)}
                    )
                await pub.send({"type": "ping"})
                assert await receive_json(pub) == {"type": "pong"}
            async with logged_in(address_b, "late") as late:
                await late.send(
                    {"type": "grouped", "action": "subscribe", "group": "news", "since": 2}
                )
                assert await receive_json(late) == {
                    "type": "subscribed",
                    "group": "news",
                    "seq": 5,
                    "epoch": ANY_EPOCH,
                }
                replayed = [await receive_json(late) for _ in range(3)]
                assert [(m["seq"], m["text"]) for m in replayed] == [(3, "2"), (4, "3"), (5, "4")]


# ---------------------------------------------------------------------------------------
# A service that awaits does not silence its connection


async def test_a_blocked_service_still_answers_pings_and_the_close(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = App(config=ServerConfig(ping_interval=None))
    finished = trio.Event()

    @app.service("slow")
    async def slow(client: trio_ws.Client, _message: dict[str, Any]) -> None:
        await trio.sleep(60)  # a slow database call
        finished.set()

    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        stream = await listener.connect()
        async with trio_ws.connect("ws://test/ws", stream=stream) as ws:
            await ws.send({"type": "login", "name": "patient"})
            assert await receive_json(ws) == {"type": "welcome", "name": "patient"}
            await ws.send({"type": "slow"})

            async with trio.open_nursery() as reader:
                reader.start_soon(ws.receive)  # someone must receive for pongs to be seen
                started = trio.current_time()
                for _ in range(10):  # a peer pinging every second while the service sleeps
                    await trio.sleep(1)
                    pong = await ws.ping()
                    with trio.fail_after(0.5):
                        await pong.wait()
                reader.cancel_scope.cancel()
            assert not finished.is_set()
            assert ws.closed is None  # still connected
            # A Close sent meanwhile is answered promptly, long before the service ends.
            with trio.fail_after(0.5):
                await ws.aclose()
            assert ws.protocol.close_received is not None
            assert ws.protocol.close_received.code == 1000
            assert trio.current_time() - started < 15
        nursery.cancel_scope.cancel()


async def test_messages_sent_while_a_service_blocks_are_handled_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = App(config=ServerConfig(ping_interval=None))

    @app.service("work")
    async def work(client: trio_ws.Client, message: dict[str, Any]) -> None:
        await trio.sleep(message["seconds"])
        await client.send({"type": "done", "n": message["n"]})

    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        async with trio_ws.connect("ws://test/ws", stream=await listener.connect()) as ws:
            await ws.send({"type": "login", "name": "w"})
            await receive_json(ws)
            for n, seconds in enumerate([5, 0, 3, 0, 0]):
                await ws.send({"type": "work", "n": n, "seconds": seconds})
            assert [(await receive_json(ws))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# Shutdown order


async def read_until_closed(ws: trio_ws.WebSocketConnection) -> tuple[list[int], ConnectionClosed]:
    """The seqs of every message until the connection closes, and how it closed."""
    seqs = []
    while True:
        try:
            seqs.append(json.loads(await ws.receive())["seq"])
        except ConnectionClosed as exc:
            return seqs, exc


async def test_a_backlogged_subscriber_gets_its_backlog_then_1001_at_shutdown() -> None:
    app = App(config=ServerConfig(max_subscriber_buffer=5000, max_subscriber_bytes=None))
    queue = app.queue("g", history=0)

    @app.service("sub")
    async def sub(client: trio_ws.Client, _message: dict[str, Any]) -> None:
        await app.subscribe(client, queue, reply=False)

    with trio.fail_after(20):
        async with stoppable(app) as (address, stop):
            async with logged_in(address, "slow", compression=False) as ws:
                await ws.send({"type": "sub"})
                await wait_until(lambda: len(queue) == 1)
                text = "x" * 4000
                n = 4000  # 16 MB: more than the socket buffers take, so it is backlogged
                for i in range(n):
                    await queue.publish({"i": i, "text": text})
                    if i % 50 == 0:
                        await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()  # the flusher writes what is left
                held = app.clients.get("slow")
                assert held is not None
                assert held.subscriber is not None
                assert held.subscriber.state is trio_ws.SubscriberState.DRAINING
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stop)
                    seqs, closed = await read_until_closed(ws)
                assert closed.code == 1001  # a Close, not an abort (1006)
                # What was already on its way arrives whole and in order before the Close
                # (what still waited in the subscriber's buffer is for a resume with since).
                assert seqs
                assert seqs == list(range(1, len(seqs) + 1))


# ---------------------------------------------------------------------------------------
# In-process consumers


async def drain_channel(channel: trio_ws.QueueChannel) -> None:
    while True:
        await channel.receive()


async def test_open_subscription_replays_then_streams_live() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g", history=3)
    for i in range(5):
        await queue.publish({"i": i})
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            async with hub.open_subscription("g", since=0, name="bot") as channel:
                assert await hub.members("g") == ["bot"]
                await queue.publish("live")
                items = [await channel.receive() for _ in range(5)]
            assert items == [
                QueueGap("g", 1, 2),
                QueueMessage("g", 3, '{"i":2,"seq":3}'),
                QueueMessage("g", 4, '{"i":3,"seq":4}'),
                QueueMessage("g", 5, '{"i":4,"seq":5}'),
                QueueMessage("g", 6, "live"),
            ]
            assert items[1].json() == {"i": 2, "seq": 3}  # type: ignore[union-attr]
            assert await hub.members("g") == []
            nursery.cancel_scope.cancel()


async def test_a_slow_in_process_consumer_gets_a_gap_or_is_dropped() -> None:
    hub = BroadcastHub(max_subscriber_buffer=10)
    drop = hub.queue("drop")
    kick = hub.queue("kick", policy="disconnect")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            async with (
                hub.open_subscription(drop) as dropped,
                hub.open_subscription(kick) as kicked,
            ):
                for i in range(30):
                    await drop.publish(str(i))
                    await kick.publish(str(i))
                await trio.testing.wait_all_tasks_blocked()
                got = [await dropped.receive() for _ in range(11)]
                assert got[0] == QueueGap("drop", 1, 20)
                assert [m.seq for m in got[1:]] == list(range(21, 31))  # type: ignore[union-attr]
                with pytest.raises(QueueError) as info:
                    await drain_channel(kicked)
                assert info.value.code == "too_slow"
            nursery.cancel_scope.cancel()


async def test_an_in_process_consumer_meets_the_live_stream_exactly() -> None:
    hub = BroadcastHub()
    queue = hub.queue("g", history=1000)
    total = 400
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)

            async def publish() -> None:
                while queue.seq < total:
                    await queue.publish("m")
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(publish)
            await trio.lowlevel.checkpoint()
            async with hub.open_subscription(queue, since=0) as channel:
                seqs = []
                while not seqs or seqs[-1] < total:
                    item = await channel.receive()
                    assert isinstance(item, QueueMessage)
                    seqs.append(item.seq)
            assert seqs == list(range(1, total + 1))
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# Options, errors, states, hooks


def test_queue_options_are_typed_and_validated() -> None:
    app = App()
    with pytest.raises(TypeError, match="histroy"):
        app.queue("x", histroy=100)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="histroy"):
        app.hub.queue("x", histroy=100)
    for bad in [
        {"history": -1},
        {"history": 1.5},
        {"ttl": 0},
        {"policy": "maybe"},
        {"quota": 0},
        {"max_publish_rate": (0, 1.0)},
        {"max_publish_rate": (5, 0)},
        {"auto_subscribe": "yes"},
    ]:
        with pytest.raises((ValueError, TypeError)):
            QueueOptions(**bad)
    options = QueueOptions(history=5, priority=2)
    with pytest.raises(AttributeError):
        options.history = 6  # type: ignore[misc]
    assert app.queue("y", history=5, priority=2).options == options


def test_every_error_of_the_application_layer_has_the_one_root() -> None:
    for kind in (
        QueueError,
        trio_ws.ServiceError,
        trio_ws.UnknownClient,
        trio_ws.RecipientBusy,
        BrokerUnavailable,
        ConnectionClosed,
        trio_ws.ConnectionClosedOK,
        trio_ws.ConnectionClosedError,
        trio_ws.LocalProtocolError,
        trio_ws.RemoteProtocolError,
    ):
        assert issubclass(kind, WebSocketError), kind


def test_subscriber_delivery_states_refuse_illegal_steps() -> None:
    sub = trio_ws.Subscriber(None, "x", 10)
    assert sub.state is trio_ws.SubscriberState.IDLE
    with pytest.raises(trio_ws.LocalProtocolError, match="from idle to idle"):
        sub._move(trio_ws.SubscriberState.IDLE)
    sub._move(trio_ws.SubscriberState.CLOSED)
    with pytest.raises(trio_ws.LocalProtocolError, match="from closed to draining"):
        sub._move(trio_ws.SubscriberState.DRAINING)


def test_only_the_connection_drives_its_protocol_object() -> None:
    """Keepalive, broadcast and the app use the connection's verbs, never its machine."""
    package = Path(trio_ws.__file__).parent
    drivers = {"send_text", "send_bytes", "send_ping", "send_pong", "send_close"}
    drivers |= {"data_to_send", "receive_data", "receive_eof", "events_received"}
    offenders = []
    for path in package.glob("*.py"):
        if path.name in ("_connection.py", "_client.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in drivers
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "protocol"
            ):
                offenders.append(f"{path.name}:{node.lineno} .protocol.{node.attr}")
    assert offenders == []


async def test_hooks_are_decorators_and_an_invalid_accepted_name_is_refused() -> None:
    app = App(login=lambda request: LoginAccepted(request.message.get("name", "")))
    seen: list[str] = []

    @app.on_login
    async def hello(client: trio_ws.Client) -> None:
        seen.append(f"in {client.name}")
        await client.send({"type": "hello"})

    @app.on_disconnect
    def bye(client: trio_ws.Client) -> None:
        seen.append(f"out {client.name}")

    assert hello is not None
    assert bye is not None
    with trio.fail_after(5):
        async with running(app) as address:
            async with logged_in(address, "ann") as ann:
                assert await receive_json(ann) == {"type": "hello"}
            await wait_until(lambda: seen == ["in ann", "out ann"])
            async with trio_ws.connect(f"ws://{address}/ws") as bad:
                await bad.send({"type": "login", "name": ""})
                reply = await receive_json(bad)
                assert (reply["type"], reply["code"]) == ("error", "bad_name")


class _DownBroker(MemoryBroker):
    @property
    def state(self) -> BrokerState:
        return BrokerState.DOWN


async def test_healthz_and_metrics_report_the_broker() -> None:
    with trio.fail_after(5):
        for broker, status, up in ((MemoryBroker(), "ok", 1), (_DownBroker(), "degraded", 0)):
            app = App()
            async with running(app, broker=broker) as address:
                assert app.broker is broker
                stream = await trio.open_tcp_stream(*split_address(address))
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                response = b""
                while b"\r\n\r\n" not in response or not response.endswith(b"}\n"):
                    response += await stream.receive_some()
                await stream.aclose()
                body = json.loads(response.split(b"\r\n\r\n", 1)[1])
                assert body["status"] == status
                assert body["broker"]["kind"] == "memory"
                assert body["broker"]["state"] == broker.state.value
                assert body["broker"]["node"] == broker.node_id
                assert f'trio_ws_broker_up{{kind="memory"}} {up}' in app.metrics_text()


# ---------------------------------------------------------------------------------------
# What a publisher can make the broker keep


async def test_kept_history_is_bounded_in_bytes_per_queue_and_in_all() -> None:
    broker = MemoryBroker(store=trio_ws.brokers.MemoryStore(max_history_bytes=3 << 20))
    hub = BroadcastHub(broker=broker)
    text = "é" * (100 << 10)  # 100 Ki characters, 200 KiB in UTF-8 (600 KiB as \\u escapes)
    for i in range(200):  # self-named groups, as anyone may create
        await hub.publish(f"g{i}", {"type": "grouped", "text": text})
    store = broker.store
    sizes = [h.bytes for h in store.histories.values()]
    assert store.history_bytes == sum(sizes) <= 3 << 20  # the budget for all queues
    assert max(sizes) <= 256 << 10  # a queue made on demand keeps at most 256 KiB
    last = store.histories["g199"].kept[-1]
    assert len(last.frame) < 210 << 10  # UTF-8, stored once (the payload is a view of it)
    assert isinstance(last.payload, memoryview)
    assert last.payload.obj is last.frame
    # The oldest go first, whatever their queue: the newest groups keep their message, and
    # a replay of an old one reports the eviction as a gap, exactly.
    assert [bool(store.histories[f"g{i}"].kept) for i in (0, 150, 190, 199)] == [
        False,
        False,
        True,
        True,
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        async with hub.open_subscription("g0", since=0) as channel:
            assert await channel.receive() == QueueGap("g0", 1, 1)
        nursery.cancel_scope.cancel()


def test_json_goes_out_as_utf8_and_a_lone_surrogate_still_encodes() -> None:
    from trio_ws._connection import dumps

    assert dumps({"t": "é"}) == '{"t":"é"}'
    assert dumps({"t": "\ud800"}) == '{"t":"\\ud800"}'


async def test_a_since_from_another_epoch_replays_what_is_kept_with_a_gap() -> None:
    with trio.fail_after(10):
        async with two_nodes() as ((_a, address), _):
            async with logged_in(address, "pub") as pub:
                for i in range(3):
                    await pub.send(
                        {"type": "grouped", "action": "publish", "group": "e", "text": str(i)}
                    )
                await pub.send({"type": "grouped", "action": "subscribe", "group": "e"})
                epoch = (await receive_json(pub))["epoch"]
                # Same epoch: since 2 means "after message 2".
                await pub.send({"type": "grouped", "action": "unsubscribe", "group": "e"})
                await receive_json(pub)
                for since_epoch, expected in ((epoch, [3]), ("lost", [1, 2, 3])):
                    await pub.send(
                        {
                            "type": "grouped",
                            "action": "subscribe",
                            "group": "e",
                            "since": 2,
                            "epoch": since_epoch,
                        }
                    )
                    reply = await receive_json(pub)
                    assert (reply["seq"], reply["epoch"]) == (3, epoch)
                    got = [(await receive_json(pub))["seq"] for _ in expected]
                    assert got == expected
                    await pub.send({"type": "grouped", "action": "unsubscribe", "group": "e"})
                    assert (await receive_json(pub))["type"] == "unsubscribed"


async def test_a_stalled_subscriber_holds_at_most_its_byte_budget() -> None:
    hub = BroadcastHub(max_subscriber_bytes=64 << 10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            async with hub.open_subscription("g") as channel:
                [stalled] = list(hub._subscribers)
                for _ in range(100):  # 1 MB for a consumer that does not read
                    await hub.publish("g", "x" * 10_000)
                    await trio.testing.wait_all_tasks_blocked()  # delivered to the buffer
                    assert stalled.buffered_bytes <= 64 << 10
                assert stalled.buffered_bytes > 50_000  # full, not empty
                kept = stalled.buffered
                first = await channel.receive()
                assert isinstance(first, QueueGap)
                assert (first.first, first.last) == (1, 100 - kept)  # the rest, exactly
            nursery.cancel_scope.cancel()


async def test_publishing_to_new_names_leaves_nothing_and_cannot_exhaust_the_groups() -> None:
    app = create_app(ticks_per_second=0.001)
    with trio.fail_after(20):
        async with running(app) as address, logged_in(address, "spammer") as spammer:
            before = len(app.hub.queues)
            for i in range(1200):  # more than max_queues used to allow for ever
                await spammer.send(
                    {"type": "grouped", "action": "publish", "group": f"n{i}", "text": "x"}
                )
            await spammer.send({"type": "ping"})
            assert await receive_json(spammer) == {"type": "pong"}
            assert len(app.hub.queues) == before  # no queue object kept for any of them
            async with logged_in(address, "late") as late:
                await late.send({"type": "grouped", "action": "subscribe", "group": "fresh"})
                assert (await receive_json(late))["type"] == "subscribed"
                assert "fresh" in app.hub.queues
                await late.send({"type": "grouped", "action": "unsubscribe", "group": "fresh"})
                assert (await receive_json(late))["type"] == "unsubscribed"
                assert "fresh" not in app.hub.queues  # forgotten with its last subscriber


async def test_a_client_may_hold_at_most_its_share_of_subscriptions() -> None:
    app = create_app(config=ServerConfig(max_subscriptions_per_client=3), ticks_per_second=0.001)
    with trio.fail_after(10):
        async with running(app) as address, logged_in(address, "greedy") as greedy:
            for i in range(3):
                await greedy.send({"type": "grouped", "action": "subscribe", "group": f"g{i}"})
                assert (await receive_json(greedy))["type"] == "subscribed"
            await greedy.send({"type": "grouped", "action": "subscribe", "group": "g0"})
            assert (await receive_json(greedy))["type"] == "subscribed"  # again: still fine
            await greedy.send({"type": "grouped", "action": "subscribe", "group": "g3"})
            reply = await receive_json(greedy)
            assert (reply["type"], reply["code"]) == ("error", "too_many_subscriptions")


async def test_metrics_and_the_stats_stream_show_the_cluster() -> None:
    from trio_ws._stats import cluster_view, snapshot

    from .conftest import body_of, http_exchange

    with trio.fail_after(10):
        async with two_nodes() as ((_app_a, address_a), (app_b, address_b)):
            async with logged_in(address_a, "a1"), logged_in(address_b, "b1"):
                async with logged_in(address_b, "b2"):
                    request = f"GET /metrics HTTP/1.1\r\nHost: {address_a}\r\n\r\n".encode()
                    text = body_of(await http_exchange(address_a, request)).decode()
                    assert "trio_ws_cluster_nodes 2" in text
                    assert 'trio_ws_cluster_clients{node="a"} 1' in text
                    assert 'trio_ws_cluster_clients{node="b"} 2' in text
                    view = await cluster_view(app_b)
                    body = snapshot(app_b, view)
                    assert body["node"] == "b"
                    assert body["cluster_clients"] == 3
                    assert [n["id"] for n in body["nodes"]] == ["a", "b"]
                    assert body["broker"]["state"] == "up"


async def test_the_cluster_view_says_when_the_broker_cannot_answer() -> None:
    from trio_ws._stats import cluster_view

    class Unreachable(MemoryBroker):
        async def nodes(self) -> list[trio_ws.brokers.NodeInfo]:
            raise BrokerUnavailable

    app = App(broker=Unreachable())
    view = await cluster_view(app)
    assert view["nodes"] is None
    assert view["cluster_clients"] is None
    assert "trio_ws_cluster_nodes" not in app.metrics_text()


async def test_subscribers_are_told_when_the_history_starts_again() -> None:
    broker = MemoryBroker()
    app = create_app(broker=broker, ticks_per_second=0.001)
    with trio.fail_after(10):
        async with running(app) as address, logged_in(address, "watcher") as ws:
            await ws.send({"type": "grouped", "action": "subscribe", "group": "g"})
            first = await receive_json(ws)
            assert await app.publish("g", {"type": "grouped", "text": "0"}) == 1
            batch = [{"type": "grouped", "text": str(i)} for i in (1, 2)]
            assert await app.publish_many("g", batch) == [2, 3]
            got = [await receive_json(ws) for _ in range(3)]
            assert [(m["seq"], m["text"]) for m in got] == [(1, "0"), (2, "1"), (3, "2")]
            # The shared store lost everything (a Redis restart): a new epoch, from 1.
            broker.store.histories.clear()
            broker.store.epoch = "restarted"
            broker.on_reset("g", "restarted")
            await app.publish("g", {"type": "grouped", "text": "new"})
            notice = await receive_json(ws)
            assert notice == {"type": "subscribed", "group": "g", "seq": 0, "epoch": "restarted"}
            assert notice["epoch"] != first["epoch"]
            again = await receive_json(ws)
            assert (again["seq"], again["text"]) == (1, "new")


async def test_a_background_reader_holds_a_bounded_number_of_bytes(
    autojump_clock: trio.abc.Clock,
) -> None:
    from trio_ws._connection import _INBOX_BYTES
    from trio_ws._transport import RECEIVE_SIZE

    app = App(config=ServerConfig(ping_interval=None))
    release = trio.Event()

    @app.service("slow")
    async def slow(client: trio_ws.Client, _message: dict[str, Any]) -> None:
        await release.wait()

    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        async with trio_ws.connect("ws://test/ws", stream=await listener.connect()) as ws:
            await ws.send({"type": "login", "name": "big"})
            await receive_json(ws)
            await ws.send({"type": "slow"})
            await trio.sleep(1)  # the service blocks: a background reader takes over
            big = "x" * (512 << 10)
            for _ in range(8):  # 4 MiB while the service still blocks
                await ws.send({"type": "echo", "text": big})
            await trio.sleep(1)
            [conn] = app.server.connections
            assert conn._reader_running
            held = sum(map(len, conn._inbox))
            # At most the budget and what one read completed; the rest waits in the stream.
            assert 0 < held <= _INBOX_BYTES + RECEIVE_SIZE + len(big)
            assert held < 8 * len(big)
            release.set()
        nursery.cancel_scope.cancel()
