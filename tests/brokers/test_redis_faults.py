"""The Redis broker when Redis fails: killed and restarted, stopped, a node that dies.

Each case has a redis-server of its own (``fresh_redis``) to kill (SIGKILL: with no
persistence it loses everything, so it comes back with a new epoch), pause (SIGSTOP: it
keeps its sockets open and answers nothing) and resume.
"""

from __future__ import annotations

import itertools
import socket

import pytest
import trio

from tests.redis_fixture import RedisServer
from trio_ws._queue_model import PayloadKind, QueueOptions
from trio_ws.brokers import BrokerState, BrokerUnavailable, Claim
from trio_ws.brokers.redis import RedisBroker

from .conftest import Cluster, eventually, redis_nodes, running_cluster, wait_until

KEEP = QueueOptions(history=100)
FAST = {"operation_timeout": 0.5, "max_reconnect_seconds": 0.3}
# The lease of the tests of a node that dies: long enough that the name is still held
# when the survivor asks right after the death (the holder renewed it up to a third of a
# lease before), on a machine loaded enough to take a second over the stop (seen at 1 s).
LEASE = 2.5


async def publish(broker: RedisBroker, text: str, queue: str = "q") -> int:
    return await broker.publish(queue, text.encode(), kind=PayloadKind.TEXT, key=None, options=KEEP)


def states(cluster: Cluster) -> list[BrokerState]:
    return [n.broker.state for n in cluster.nodes]


async def test_killed_redis_is_down_at_once_then_the_nodes_come_back_whole(
    fresh_redis: RedisServer,
) -> None:
    with trio.fail_after(30):
        brokers = redis_nodes(fresh_redis.url, 2, **FAST)
        async with running_cluster(brokers, "redis") as cluster:
            a, b = cluster.a, cluster.b
            assert isinstance(a, RedisBroker)
            assert isinstance(b, RedisBroker)
            await a.listen("q")
            assert (await a.claim("Frank", a.owner(1))).granted
            a.note_presence("q", "Frank", 1)
            for i in range(3):
                await publish(b, f"before{i}")
            old_epoch = (await b.replay("q", None, epoch=None, options=KEEP)).epoch
            await cluster.barrier()
            assert cluster.seen(a).seqs("q") == [1, 2, 3]

            fresh_redis.kill()
            await wait_until(lambda: states(cluster) == [BrokerState.DOWN] * 2, within=3)
            for call in (
                lambda: publish(b, "lost"),
                lambda: b.claim("Gus", b.owner(1)),
                lambda: b.route("Frank", "x"),
                lambda: b.members("q"),
                lambda: b.replay("q", 0, epoch=None, options=KEEP),
                lambda: b.listen("other"),
            ):
                start = trio.current_time()
                with pytest.raises(BrokerUnavailable):
                    await call()
                assert trio.current_time() - start < 0.25  # at once, not after the 0.5 s timeout
            a.note_presence("q", "Zoe", 1)  # recorded while down, sent once back

            fresh_redis.start()  # the same port, no data: a new epoch
            await wait_until(lambda: states(cluster) == [BrokerState.UP] * 2, within=5)
            assert await b.claim("frank", b.owner(1)) == Claim(False, a.owner(1), "Frank")  # again
            assert await eventually(lambda: b.members("q"), lambda r: r == ["Frank", "Zoe"])
            assert await publish(b, "after") == 1  # numbering starts again...
            new = await b.replay("q", 3, epoch=old_epoch, options=KEEP)
            assert new.epoch != old_epoch  # ...in a new epoch: an old since counts as 0
            assert (new.seq, new.gap, [m.seq for m in new.messages]) == (1, None, [1])
            await wait_until(lambda: cluster.seen(a).payloads("q")[-1:] == [b"after"])
            assert cluster.seen(a).seqs("q") == [1, 2, 3, 1]  # listening resumed
            for broker in (a, b):
                stats = broker.statistics()
                assert (stats.state, stats.outages) == (BrokerState.UP, 1)
            assert b.statistics().errors >= 6
            assert a.epoch == b.epoch == new.epoch


async def test_stopped_redis_fails_calls_within_the_timeout_and_blocks_nobody(
    fresh_redis: RedisServer,
) -> None:
    with trio.fail_after(30):
        brokers = redis_nodes(fresh_redis.url, 2, lease_seconds=1.5, **FAST)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(0.02)

        async with running_cluster(brokers, "redis") as cluster, trio.open_nursery() as nursery:
            a, b = cluster.a, cluster.b
            assert isinstance(a, RedisBroker)
            assert isinstance(b, RedisBroker)
            nursery.start_soon(ticker)
            await a.listen("q")
            assert (await a.claim("Gina", a.owner(1))).granted
            await publish(b, "before")

            fresh_redis.pause()
            paused = trio.current_time()
            with pytest.raises(BrokerUnavailable):
                await publish(b, "stuck")
            # Bounded by the operation timeout (0.5 s), not by the 3 s pause; the margin is for a
            # loaded machine, the wrong behaviour waits out the pause.
            assert trio.current_time() - paused < 1.5
            assert b.state is BrokerState.DOWN
            start = trio.current_time()
            with pytest.raises(BrokerUnavailable):
                await b.claim("Hugo", b.owner(1))
            assert trio.current_time() - start < 0.25  # down: refused, no 0.5 s wait for Redis
            await wait_until(lambda: a.state is BrokerState.DOWN, within=2)  # its heartbeat
            await trio.sleep(3 - (trio.current_time() - paused))
            fresh_redis.resume()
            gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
            assert len(ticks) > 100
            # The event loop never stalled: a blocking call would stop the ticker for the whole
            # pause (3 s); a loaded machine delays a 20 ms tick by far less than 1 s.
            assert max(gaps) < 1.0

            await wait_until(lambda: states(cluster) == [BrokerState.UP] * 2, within=5)
            # Gina's lease ran out during the pause (Redis's clock went on); re-claimed.
            assert await b.claim("gina", b.owner(1)) == Claim(False, a.owner(1), "Gina")
            seq = await publish(b, "after")
            await wait_until(lambda: seq in cluster.seen(a).seqs("q"))
            assert cluster.seen(a).payloads("q") == [b"before", b"after"]  # "stuck" never was
            assert seq == 2
            nursery.cancel_scope.cancel()


async def test_a_node_that_dies_without_leaving_frees_its_names_within_a_lease(
    fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(fresh_redis.url, 2, lease_seconds=LEASE)
        async with running_cluster(brokers, "redis") as cluster:
            a, b = cluster.a, cluster.b
            assert (await a.claim("Hal", a.owner(1))).granted
            a.note_presence("q", "Hal", 1)
            await eventually(lambda: b.members("q"), lambda r: r == ["Hal"])

            async def crash() -> None:
                pass  # a crashed process says goodbye to nobody

            monkeypatch.setattr(a, "_leave", crash)
            await cluster.node(a).stop()
            died = trio.current_time()
            assert await b.claim("hal", b.owner(1)) == Claim(False, a.owner(1), "Hal")  # leased
            claim = await eventually(lambda: b.claim("hal", b.owner(1)), lambda r: r.granted)
            assert claim == Claim(True, None)  # free, not taken over: its node is gone
            assert trio.current_time() - died < LEASE + 2.0  # the lease, room for load
            assert await b.members("q") == []
            assert [n.node_id for n in await b.nodes()] == ["node-b"]


def _kill_clients(port: int, name: str) -> int:
    """CLIENT KILL every connection called ``name`` (raw RESP, independent of coredis)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"CLIENT LIST\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            data += sock.recv(65536)
        ids = [
            line.split(b"id=")[1].split(b" ")[0]
            for line in data.split(b"\n")
            if f" name={name} ".encode() in line
        ]
        for client_id in ids:
            sock.sendall(b"CLIENT KILL ID " + client_id + b"\r\n")
            assert sock.recv(64).startswith(b":1")
        return len(ids)


async def test_a_node_cut_off_catches_up_with_what_it_missed_in_order(
    fresh_redis: RedisServer,
) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(fresh_redis.url, 2, **FAST)
        async with running_cluster(brokers, "redis") as cluster:
            a, b = cluster.a, cluster.b
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            for i in range(10):
                await publish(b, f"m{i}")
            assert _kill_clients(fresh_redis.port, f"{a.prefix}:{a.node_id}") >= 2
            await wait_until(lambda: a.state is BrokerState.DOWN)
            for i in range(10, 40):  # while a reconnects
                await publish(b, f"m{i}")
                await trio.sleep(0.005)
            await wait_until(lambda: a.state is BrokerState.UP)
            for i in range(40, 50):
                await publish(b, f"m{i}")
            await cluster.barrier()
            assert cluster.seen(a).seqs("q") == list(range(1, 51))  # none lost, none twice
            assert cluster.seen(a).payloads("q") == [f"m{i}".encode() for i in range(50)]
            assert a.statistics().outages == 1


async def test_connecting_until_redis_answers_then_up(fresh_redis: RedisServer) -> None:
    with trio.fail_after(15):
        fresh_redis.kill()  # nothing listens on its port yet
        broker = RedisBroker(fresh_redis.url, node_id="late", **FAST)
        assert broker.state is BrokerState.CONNECTING
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)  # returns after the first attempt
            assert broker.state is BrokerState.CONNECTING
            start = trio.current_time()
            with pytest.raises(BrokerUnavailable):
                await publish(broker, "early")
            assert trio.current_time() - start < 0.25  # not after the 0.5 s timeout
            assert broker.statistics().state is BrokerState.CONNECTING
            assert broker.describe()["state"] == "connecting"
            fresh_redis.start()
            await wait_until(lambda: broker.state is BrokerState.UP, within=5)
            assert await publish(broker, "now") == 1
            assert broker.statistics().outages == 0  # never up before: not an outage
            nursery.cancel_scope.cancel()


async def test_leaving_while_redis_is_stopped_takes_at_most_the_timeout(
    fresh_redis: RedisServer,
) -> None:
    with trio.fail_after(15):
        broker = RedisBroker(fresh_redis.url, node_id="leaver", **FAST)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            await broker.wait_up()
            assert (await broker.claim("Ivy", broker.owner(1))).granted
            fresh_redis.pause()
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        # The leave gave up after the 0.5 s timeout (without one it would wait for the resume,
        # which comes after it); the margin is for a loaded machine.
        assert trio.current_time() - start < 2.0
        fresh_redis.resume()


async def test_what_a_cut_off_node_can_no_longer_get_reaches_its_subscribers_as_a_gap(
    fresh_redis: RedisServer,
) -> None:
    from trio_ws import BroadcastHub, QueueGap, QueueMessage

    with trio.fail_after(30):
        a, b = redis_nodes(fresh_redis.url, 2, **FAST)
        assert isinstance(a, RedisBroker)
        assert isinstance(b, RedisBroker)
        hub_a, hub_b = BroadcastHub(broker=a), BroadcastHub(broker=b)
        hub_a.queue("short", history=5)
        publisher = hub_b.queue("short", history=5)
        async with trio.open_nursery() as nursery:
            for service in (a.run, b.run, hub_a.run, hub_b.run):
                await nursery.start(service)
            await a.wait_up()
            await b.wait_up()
            async with hub_a.open_subscription("short") as channel:
                for i in range(3):
                    await publisher.publish(f"m{i}")
                got = [await channel.receive() for _ in range(3)]
                assert [item.seq for item in got] == [1, 2, 3]  # type: ignore[union-attr]
                assert _kill_clients(fresh_redis.port, f"{a.prefix}:{a.node_id}") >= 2
                await wait_until(lambda: a.state is BrokerState.DOWN)
                for i in range(3, 23):  # 20 more while a is away; only the last 5 are kept
                    await publisher.publish(f"m{i}")
                await wait_until(lambda: a.state is BrokerState.UP, within=10)
                items = [await channel.receive() for _ in range(6)]
            nursery.cancel_scope.cancel()
    assert items[0] == QueueGap("short", 4, 18)  # said, not silently lost
    assert [item.seq for item in items[1:]] == [19, 20, 21, 22, 23]  # type: ignore[union-attr]
    assert all(isinstance(item, QueueMessage) for item in items[1:])
