"""The Redis broker's hot path: a publish on its own connection, pub/sub messages taken
where coredis parses them. What it must keep: one seq order under concurrent publishers,
a node that survives a message it cannot read, a Redis that forgot the publish script,
and nothing piling up for ``get_message()``, which nobody calls any more.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from tests.redis_fixture import RedisServer, cli
from trio_ws._queue_model import PayloadKind, QueueOptions
from trio_ws.brokers.redis import RedisBroker

from . import conftest
from .conftest import redis_nodes, running_cluster, wait_until

KEEP = QueueOptions(history=100)


async def publish(broker: RedisBroker, text: str, queue: str = "q") -> int:
    return await broker.publish(queue, text.encode(), kind=PayloadKind.TEXT, key=None, options=KEEP)


async def test_concurrent_publishes_share_one_order_on_every_node(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a, b = cluster.a, cluster.b
            assert isinstance(a, RedisBroker)
            assert isinstance(b, RedisBroker)
            assert a._publisher is not None  # the connection of its own is in use
            for node in (a, b):
                await node.listen("q")
            seqs: list[int] = []

            async def publisher(who: str) -> None:
                for i in range(20):
                    seqs.append(await publish(a if who < "m" else b, f"{who}{i}"))

            async with trio.open_nursery() as nursery:
                for who in ("a1", "a2", "a3", "x1", "x2"):
                    nursery.start_soon(publisher, who)
            assert sorted(seqs) == list(range(1, 101))
            await cluster.barrier()
            for node in (a, b):
                assert cluster.seen(node).seqs("q") == list(range(1, 101))
            assert cluster.seen(a).payloads("q") == cluster.seen(b).payloads("q")


async def test_a_publish_after_redis_forgot_the_script_loads_it_again(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a = cluster.a
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            first = await publish(a, "one")
            cli(redis_server.port, "SCRIPT", "FLUSH")
            assert await publish(a, "two") == first + 1
            await wait_until(lambda: cluster.seen(a).payloads("q") == [b"one", b"two"])
            assert a.statistics().outages == 0


async def test_a_message_the_node_cannot_read_is_logged_and_the_stream_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a = cluster.a
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            with caplog.at_level(logging.ERROR, logger="trio_ws.broker"):
                # Not an entry of ours: a header without its five fields.
                cli(redis_server.port, "PUBLISH", a._queue_channel("q"), "mgarbage")
                await publish(a, "after")
                await wait_until(lambda: cluster.seen(a).payloads("q") == [b"after"])
            assert "could not be handled" in caplog.text
            assert a.statistics().outages == 0  # the session was not thrown away for it


async def test_nothing_piles_up_for_get_message(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_ws.brokers.redis as redis_module

    monkeypatch.setattr(redis_module, "_DRAIN_SECONDS", 0.05)
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a = cluster.a
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            for i in range(200):
                await publish(a, f"m{i}")
            await wait_until(lambda: len(cluster.seen(a).seqs("q")) == 200)
            stream = a._pubsub._receive_stream
            await conftest.wait_until(lambda: stream.statistics().current_buffer_used == 0)


async def test_subscribers_arriving_together_share_one_read_of_the_head(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a = cluster.a
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            await publish(a, "one")
            await cluster.barrier(a)
            before = a.statistics().round_trips
            seqs: list[int] = []

            async def subscriber() -> None:
                seqs.append((await a.replay("q", None, epoch=None, options=KEEP)).seq)

            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(subscriber)
            assert seqs == [1] * 200
            # One read in the air, one that the other 199 joined (and a heartbeat, maybe).
            assert a.statistics().round_trips - before <= 3
            assert (await a.replay("q", None, epoch=None, options=KEEP)).seq == 1
            await publish(a, "two")
            assert (await a.replay("q", None, epoch=None, options=KEEP)).seq == 2


async def test_a_cancelled_head_read_leaves_the_callers_that_joined_it_a_new_one(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_server.url, 2)
        async with running_cluster(brokers, "redis") as cluster:
            a = cluster.a
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            await publish(a, "one")
            results: list[int] = []
            leader = trio.CancelScope()

            async def read(scope: trio.CancelScope | None = None) -> None:
                with scope or trio.CancelScope():
                    results.append((await a.replay("q", None, epoch=None, options=KEEP)).seq)

            lock = a._head_locks.setdefault("q", trio.Lock())
            async with trio.open_nursery() as nursery:
                await lock.acquire()  # as if a read were in the air: the next one waits
                nursery.start_soon(read, leader)  # makes the next read, waits for the lock
                await trio.testing.wait_all_tasks_blocked()
                for _ in range(3):
                    nursery.start_soon(read)  # join it
                await trio.testing.wait_all_tasks_blocked()
                leader.cancel()  # its callers are left without a read
                await trio.testing.wait_all_tasks_blocked()
                lock.release()  # one of them makes a new read, the others join it
            assert results == [1, 1, 1]
            assert not a._heads
