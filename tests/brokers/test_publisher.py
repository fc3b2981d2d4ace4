"""``trio_ws.publisher.RedisPublisher``: a backend publishes straight to the nodes' Redis.

What it publishes must be what a node's own publish makes: the queue's next seq, kept in
its history, in its epoch, delivered live to subscribers on every node. Under Trio
(pytest-trio, two in-process nodes on a real ``redis-server``, and on a real Redis
Cluster) and under asyncio (``asyncio.run`` in a plain test, a ``trio-ws-demo`` process on
a real ``redis-server``, a ``websockets`` client subscribed).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.sync.client import connect as ws_connect

import trio_ws
from tests.conftest import logged_in, receive_json, running
from tests.e2e.test_workers import free_port, node_of, until
from tests.redis_fixture import RedisCluster, RedisServer, _free_port
from trio_ws.brokers.redis import RedisBroker
from trio_ws.demo.app import create_app
from trio_ws.publisher import RedisPublisher

from .conftest import redis_nodes

DEMO = [str(Path(sys.executable).with_name("trio-ws-demo"))]


@asynccontextmanager
async def two_nodes(url: str) -> AsyncIterator[tuple[str, str, str]]:
    """Two demo apps on one Redis (URL ``url``); yields their addresses and the prefix."""
    first, second = redis_nodes(url, 2)
    assert isinstance(first, RedisBroker)
    assert isinstance(second, RedisBroker)
    async with running(create_app(broker=first)) as one, running(create_app(broker=second)) as two:
        await first.wait_up()
        await second.wait_up()
        yield one, two, first.prefix


async def subscribe(conn: trio_ws.WebSocketConnection, group: str, **resume: Any) -> Any:
    await conn.send({"type": "grouped", "action": "subscribe", "group": group, **resume})
    reply = await receive_json(conn)
    assert reply["type"] == "subscribed", reply
    return reply


async def publish_and_read_back(url: str) -> None:
    async with (
        two_nodes(url) as (one, two, prefix),
        logged_in(one, "alice") as alice,
        logged_in(two, "bob") as bob,
        RedisPublisher(url, prefix=prefix) as publisher,
    ):
        first = await subscribe(alice, "news")
        await subscribe(bob, "news")
        # A node's own publish, then the publisher's, then the node's again: one numbering,
        # live on both nodes.
        message = {"type": "grouped", "group": "news", "from": "backend", "text": "2"}

        async def everyone_gets(sender: str, text: str, seq: int) -> None:
            for conn in (alice, bob):
                got = await receive_json(conn)
                assert (got["from"], got["text"], got["seq"]) == (sender, text, seq)
                if sender == "backend":  # exactly what was published, and its seq
                    assert got == {**message, "seq": seq}

        await alice.send({"type": "grouped", "action": "publish", "group": "news", "text": "1"})
        await everyone_gets("alice", "1", 1)
        assert await publisher.publish("news", message) == 2
        await everyone_gets("backend", "2", 2)
        await bob.send({"type": "grouped", "action": "publish", "group": "news", "text": "3"})
        await everyone_gets("bob", "3", 3)
        # Several in one call: the next seqs, in order, live on both nodes.
        batch = [{**message, "text": text} for text in ("4", "5", "6")]
        assert await publisher.publish_many("news", batch) == [4, 5, 6]
        for text, seq in (("4", 4), ("5", 5), ("6", 6)):
            message["text"] = text
            await everyone_gets("backend", text, seq)
        # Kept in the history, in the same epoch: a resume replays it, with no gap.
        async with logged_in(two, "carol") as carol:
            again = await subscribe(carol, "news", since=1, epoch=first["epoch"])
            assert (again["seq"], again["epoch"]) == (6, first["epoch"])
            replayed = [await receive_json(carol) for _ in range(5)]
            assert [(m["type"], m["seq"], m["text"]) for m in replayed] == [
                ("grouped", 2, "2"),
                ("grouped", 3, "3"),
                ("grouped", 4, "4"),
                ("grouped", 5, "5"),
                ("grouped", 6, "6"),
            ]


async def test_publisher_under_trio_is_a_node_publish(redis_server: RedisServer) -> None:
    with trio.fail_after(20):
        await publish_and_read_back(redis_server.url)


async def test_publisher_on_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    with trio.fail_after(30):
        await publish_and_read_back(redis_cluster.url)


async def test_publisher_text_bytes_history_and_bad_input(redis_server: RedisServer) -> None:
    prefix = f"pubtest{_free_port()}"
    async with RedisPublisher(redis_server.url, prefix=prefix, history=2) as publisher:
        assert await publisher.publish("q", "text") == 1
        assert await publisher.publish("q", b"\x00bytes") == 2
        assert await publisher.publish("q", {"n": 3}) == 3
        broker = RedisBroker(redis_server.url, prefix=prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            replay = await broker.replay(
                "q", 0, epoch=None, options=trio_ws.QueueOptions(history=2)
            )
            nursery.cancel_scope.cancel()
        assert replay.seq == 3
        assert replay.gap is not None
        # history=2: the first is no longer kept
        assert (replay.gap.first, replay.gap.last) == (1, 1)
        assert [(m.seq, m.opcode, bytes(m.payload)) for m in replay.messages] == [
            (2, 2, b"\x00bytes"),
            (3, 1, b'{"n":3,"seq":3}'),
        ]
        with pytest.raises(trio_ws.QueueError):
            await publisher.publish("no spaces", "x")
        with pytest.raises(TypeError):
            await publisher.publish("q", 42)  # type: ignore[arg-type]
        # publish_many: keys per message, the history bound, and refusals before Redis.
        assert await publisher.publish_many("q", ["a", b"b", {"c": 1}], keys=["k", None, "k"]) == [
            4,
            5,
            6,
        ]
        broker = RedisBroker(redis_server.url, prefix=prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            replay = await broker.replay(
                "q", 3, epoch=None, options=trio_ws.QueueOptions(history=2)
            )
            assert await broker.retract("q", "k") == 1  # the one of "k" still kept
            nursery.cancel_scope.cancel()
        assert replay.seq == 6
        assert replay.gap is not None
        assert (replay.gap.first, replay.gap.last) == (4, 4)
        assert [(m.seq, m.key, bytes(m.payload)) for m in replay.messages] == [
            (5, None, b"b"),
            (6, "k", b'{"c":1,"seq":6}'),
        ]
        with pytest.raises(ValueError, match="1 to 1000 messages, not 0"):
            await publisher.publish_many("q", [])
        with pytest.raises(ValueError, match="1 keys for 2 messages"):
            await publisher.publish_many("q", ["x", "y"], keys=["k"])
        with pytest.raises(trio_ws.QueueError):
            await publisher.publish_many("no spaces", ["x"])
        with pytest.raises(TypeError):
            await publisher.publish_many("q", ["x", 42])  # type: ignore[list-item]
        assert await publisher.publish("q", "after") == 7  # nothing of the refused went out
    with pytest.raises(RuntimeError, match="async with"):
        await publisher.publish("q", "closed")
    with pytest.raises(RuntimeError, match="async with"):
        await publisher.publish_many("q", ["closed"])


async def test_a_publish_that_times_out_is_never_carried_out(fresh_redis: RedisServer) -> None:
    prefix = "late"
    async with RedisPublisher(fresh_redis.url, prefix=prefix, operation_timeout=0.5) as publisher:
        assert await publisher.publish("q", "first") == 1
        fresh_redis.pause()  # SIGSTOP: the script arrives but runs only after SIGCONT
        try:
            with pytest.raises(trio_ws.BrokerUnavailable):
                await publisher.publish("q", "too late")
        finally:
            fresh_redis.resume()
    # A new publisher (the old connection may hold the late reply): the late one did nothing.
    async with RedisPublisher(fresh_redis.url, prefix=prefix) as publisher:
        assert await publisher.publish("q", "second") == 2


async def test_unreachable_redis_and_bad_urls() -> None:
    with pytest.raises(trio_ws.BrokerUnavailable):
        async with RedisPublisher(f"redis://127.0.0.1:{_free_port()}", operation_timeout=1):
            pass
    with pytest.raises(ValueError, match="Sentinel"):
        RedisPublisher("redis+sentinel://127.0.0.1:26379/svc")
    with pytest.raises(ValueError, match="scheme"):
        RedisPublisher("http://127.0.0.1:6379")


def test_publisher_under_asyncio_reaches_a_demo_process(fresh_redis: RedisServer) -> None:
    """A plain (sync) test: the publisher runs in ``asyncio.run``; the server is a
    ``trio-ws-demo`` process on the same Redis; the subscriber a ``websockets`` client."""
    port = free_port()
    proc = subprocess.Popen(
        [*DEMO, "--port", str(port), "--broker", fresh_redis.url, "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        until(lambda: node_of(port) is not None, 20, "the demo did not start")
        with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            ws.send(json.dumps({"type": "login", "name": "dora"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            ws.send(json.dumps({"type": "grouped", "action": "subscribe", "group": "ops"}))
            subscribed = json.loads(ws.recv(timeout=10))
            assert (subscribed["type"], subscribed["seq"]) == ("subscribed", 0)

            async def from_asyncio() -> list[int]:
                asyncio.get_running_loop()  # (this is asyncio, not trio)
                async with RedisPublisher(fresh_redis.url) as publisher:
                    return [
                        await publisher.publish(
                            "ops",
                            {"type": "grouped", "group": "ops", "from": "cron", "text": text},
                        )
                        for text in ("backup done", "deployed")
                    ]

            assert asyncio.run(from_asyncio()) == [1, 2]
            got = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            assert got == [
                {
                    "type": "grouped",
                    "group": "ops",
                    "from": "cron",
                    "text": "backup done",
                    "seq": 1,
                },
                {"type": "grouped", "group": "ops", "from": "cron", "text": "deployed", "seq": 2},
            ]
            # And the node's own publishes go on from there.
            ws.send(
                json.dumps({"type": "grouped", "action": "publish", "group": "ops", "text": "x"})
            )
            assert json.loads(ws.recv(timeout=10))["seq"] == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
