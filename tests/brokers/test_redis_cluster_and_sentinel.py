"""The Redis broker on a real 3-shard Redis Cluster and behind a real Sentinel: what the
contract suite cannot see.

The contract cases run on the cluster too (the ``redis-cluster`` kind); these check where
the traffic goes: a queue's keys, its scripts and its shard channel live on the one shard
that serves the queue's hash tag, and nowhere else. The last one connects through a
Sentinel (``redis-server --sentinel``) to the primary it names.
"""

from __future__ import annotations

import itertools

import pytest
import trio

from tests.redis_fixture import (
    REDIS_CLI,
    RedisCluster,
    RedisServer,
    start_redis_cluster,
    start_replica,
    start_sentinel,
)
from trio_ws._queue_model import PayloadKind, QueueOptions
from trio_ws.brokers import BrokerState, BrokerUnavailable, Claim
from trio_ws.brokers.redis import RedisBroker

from .conftest import eventually, redis_nodes, running_cluster, wait_until

KEEP = QueueOptions(history=100)
# The lease of the tests of a node that dies: long enough that the name is still held
# when the survivor asks right after the death (the holder renewed it up to a third of a
# lease before), on a machine loaded enough to take a second over the stop (seen at 1 s).
LEASE = 2.5


def _stat(cluster: RedisCluster, server: RedisServer, command: str) -> int:
    """How many times ``server`` ran ``command`` since its last CONFIG RESETSTAT (calls
    from scripts included)."""
    for line in cluster.cli(server.port, "INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _queues_on_each_shard(cluster: RedisCluster, prefix: str) -> dict[int, str]:
    """A queue name per shard (port -> queue), found by the slot of its channel."""
    found: dict[int, str] = {}
    for i in itertools.count():
        queue = f"room-{i}"
        port = cluster.server_for(f"{prefix}:{{q:{queue}}}").port
        found.setdefault(port, queue)
        if len(found) == len(cluster.servers):
            return found
    raise AssertionError("unreachable")


async def test_a_queues_traffic_touches_only_the_shard_of_its_hash_tag(
    redis_cluster: RedisCluster,
) -> None:
    with trio.fail_after(20):
        # Long leases: no heartbeat (registry shard) during the measured part.
        brokers = redis_nodes(redis_cluster.url, lease_seconds=60)
        async with running_cluster(brokers, "redis-cluster") as nodes:
            a, b = nodes.a, nodes.b
            assert isinstance(a, RedisBroker)
            prefix = a.prefix
            channel = f"{prefix}:{{q:q}}"
            home = redis_cluster.server_for(channel)
            others = [s for s in redis_cluster.servers if s is not home]
            await a.listen("q")
            await b.listen("q")
            # The subscriptions are shard subscriptions, on the queue's shard only.
            for server in redis_cluster.servers:
                out = redis_cluster.cli(server.port, "PUBSUB", "SHARDNUMSUB", channel)
                assert out.split() == [channel, "2" if server is home else "0"]
                assert redis_cluster.cli(server.port, "PUBSUB", "NUMSUB", channel).split() == [
                    channel,
                    "0",
                ]  # nothing on classic pub/sub, which every shard would carry
            for server in redis_cluster.servers:
                redis_cluster.cli(server.port, "CONFIG", "RESETSTAT")
            for i in range(20):
                await a.publish(
                    "q", f"m{i}".encode(), kind=PayloadKind.TEXT, key=f"k{i}", options=KEEP
                )
            await a.replay("q", 5, epoch=None, options=KEEP)
            assert await b.retract("q", "k3") == 1
            await wait_until(lambda: len(nodes.seen(b).seqs("q")) == 20)
            await wait_until(lambda: nodes.seen(b).retracts == [("q", "k3")])
            assert _stat(redis_cluster, home, "evalsha") == 22
            assert _stat(redis_cluster, home, "spublish") == 21  # 20 messages, 1 retraction
            for server in others:
                for command in ("evalsha", "eval", "spublish", "publish"):
                    assert _stat(redis_cluster, server, command) == 0, (server.port, command)
            # Every key of the queue is on its shard.
            for suffix in ("seq", "log", "epoch"):
                key = f"{channel}:{suffix}"
                assert redis_cluster.cli(home.port, "EXISTS", key).strip() == "1"
                assert redis_cluster.server_for(key) is home


async def test_queues_on_every_shard_are_delivered_in_order(redis_cluster: RedisCluster) -> None:
    with trio.fail_after(20):
        brokers = redis_nodes(redis_cluster.url)
        async with running_cluster(brokers, "redis-cluster") as nodes:
            a, b, c = nodes.a, nodes.b, nodes.c
            assert isinstance(a, RedisBroker)
            queues = list(_queues_on_each_shard(redis_cluster, a.prefix).values())
            queues.append("odd}na{me}")  # braces in a name: the tag ends at the first '}'
            for queue in queues:
                await b.listen(queue)
                await c.listen(queue)
            for i in range(10):
                for queue in queues:
                    await a.publish(queue, f"{queue}/{i}".encode(), kind=1, key=None, options=KEEP)
            for node in (b, c):
                seen = nodes.seen(node)
                await wait_until(lambda seen=seen: all(len(seen.seqs(q)) == 10 for q in queues))
                for queue in queues:
                    assert seen.seqs(queue) == list(range(1, 11))
                    assert seen.payloads(queue) == [f"{queue}/{i}".encode() for i in range(10)]


async def test_a_shard_that_restarts_empty_renumbers_its_queues_only() -> None:
    """The epoch is per queue on a cluster: a shard that lost its data gives its queues a
    new epoch (a ``since`` from before is taken as 0), and the queues of the other shards
    keep theirs and their numbers. Listeners reconnect and get the new numbering."""
    with start_redis_cluster() as rc, trio.fail_after(40):
        brokers = redis_nodes(rc.url, 2, operation_timeout=0.5, lease_seconds=3)
        async with running_cluster(brokers, "redis-cluster") as nodes:
            a, b = nodes.a, nodes.b
            assert isinstance(a, RedisBroker)
            shards = _queues_on_each_shard(rc, a.prefix)
            ports = list(shards)
            lost, kept = shards[ports[0]], shards[ports[1]]
            for queue in (lost, kept):
                await b.listen(queue)
                for i in range(3):
                    await a.publish(queue, f"{queue}{i}".encode(), kind=1, key=None, options=KEEP)
            seen = nodes.seen(b)
            await wait_until(lambda: seen.seqs(lost) == seen.seqs(kept) == [1, 2, 3])
            before = {
                q: (await a.replay(q, None, epoch=None, options=KEEP)).epoch
                for q in shards.values()
            }

            next(s for s in rc.servers if s.port == ports[0]).restart()  # no persistence

            async def publish(queue: str, body: bytes) -> int:
                while True:
                    try:
                        return await a.publish(queue, body, kind=1, key=None, options=KEEP)
                    except BrokerUnavailable:
                        await trio.sleep(0.05)  # until the node has reconnected

            assert await publish(lost, b"after") == 1  # numbering starts again...
            assert await publish(kept, b"after") == 4  # ...on the restarted shard only
            after = {
                q: (await a.replay(q, None, epoch=None, options=KEEP)).epoch
                for q in shards.values()
            }
            assert after[lost] != before[lost]
            assert all(after[q] == before[q] for q in shards.values() if q != lost)
            stale = await a.replay(lost, 3, epoch=before[lost], options=KEEP)
            assert [m.seq for m in stale.messages] == [1]  # since 3 of the old epoch: 0
            await wait_until(lambda: b"after" in seen.payloads(lost), 15)
            await wait_until(lambda: b"after" in seen.payloads(kept), 15)
            assert seen.seqs(lost) == [1, 2, 3, 1]  # the new epoch's history, handed over
            assert seen.seqs(kept) == [1, 2, 3, 4]
            assert b.state is BrokerState.UP


async def test_a_sentinel_url_finds_the_primary_and_the_nodes_share_it(
    fresh_redis: RedisServer,
) -> None:
    with start_sentinel(fresh_redis, "svc") as sentinel, trio.fail_after(20):
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/svc"
        brokers = redis_nodes(url, 2)
        async with running_cluster(brokers, "redis") as nodes:
            a, b = nodes.a, nodes.b
            await b.listen("q")
            assert await a.publish("q", b"hi", kind=1, key=None, options=KEEP) == 1
            await wait_until(lambda: nodes.seen(b).payloads("q") == [b"hi"])
            assert (await a.claim("Ann", f"{a.node_id}/1")).granted
            assert not (await b.claim("ann", f"{b.node_id}/1")).granted
            assert {n.node_id for n in await b.nodes()} == {a.node_id, b.node_id}
        # The state is on the primary the Sentinel named.
        prefix = brokers[0].prefix  # type: ignore[attr-defined]
        out = await trio.run_process(
            [REDIS_CLI, "-p", str(fresh_redis.port), "GET", f"{prefix}:q:q:seq"],
            capture_stdout=True,
        )
        assert out.stdout.strip() == b"1"


async def test_a_node_that_dies_without_leaving_frees_its_names_within_a_lease(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's liveness is in the registry's slot, not the name's: the claim reads it
    there, and a name whose holder's registry entry expired is free (not taken over)."""
    with trio.fail_after(20):
        brokers = redis_nodes(redis_cluster.url, 2, lease_seconds=LEASE)
        async with running_cluster(brokers, "redis-cluster") as nodes:
            a, b = nodes.a, nodes.b
            assert (await a.claim("Hal", a.owner(1))).granted
            a.note_presence("q", "Hal", 1)
            await eventually(lambda: b.members("q"), lambda r: r == ["Hal"])

            async def crash() -> None:
                pass  # a crashed process says goodbye to nobody

            monkeypatch.setattr(a, "_leave", crash)
            await nodes.node(a).stop()
            died = trio.current_time()
            assert await b.claim("hal", b.owner(1)) == Claim(False, a.owner(1), "Hal")
            assert not await b.route("Hal", "x")  # nobody listens on a's node channel
            claim = await eventually(lambda: b.claim("hal", b.owner(1)), lambda r: r.granted)
            assert claim == Claim(True, None)  # free, not taken over: its node is gone
            assert trio.current_time() - died < LEASE + 2.0  # the lease, room for load
            assert await b.members("q") == []
            assert [n.node_id for n in await b.nodes()] == ["node-b"]


async def test_a_stopped_shard_fails_calls_within_the_timeout_then_the_nodes_come_back() -> None:
    """A shard that answers nothing (SIGSTOP) makes a call on it fail within
    ``operation_timeout``; the node is DOWN (one session for the whole cluster) until the
    shard answers again, then UP with nothing lost or repeated."""
    with start_redis_cluster() as rc, trio.fail_after(40):
        brokers = redis_nodes(rc.url, 2, operation_timeout=0.5, max_reconnect_seconds=0.3)
        async with running_cluster(brokers, "redis-cluster") as nodes:
            a, b = nodes.a, nodes.b
            assert isinstance(a, RedisBroker)
            await a.listen("q")
            assert (await a.claim("Gina", a.owner(1))).granted
            seq = await b.publish("q", b"before", kind=1, key=None, options=KEEP)
            home = rc.server_for(f"{a.prefix}:{{q:q}}")
            home.pause()
            try:
                paused = trio.current_time()
                with pytest.raises(BrokerUnavailable):
                    await b.publish("q", b"stuck", kind=1, key=None, options=KEEP)
                # The 0.5 s timeout, not a wait for the resume that comes after it.
                assert trio.current_time() - paused < 2.0
                assert b.state is BrokerState.DOWN
                await trio.sleep(1.0)
            finally:
                home.resume()
            await wait_until(lambda: a.state is b.state is BrokerState.UP, within=10)

            async def publish(body: bytes) -> int:
                while True:
                    try:
                        return await b.publish("q", body, kind=1, key=None, options=KEEP)
                    except BrokerUnavailable:
                        await trio.sleep(0.05)

            assert await publish(b"after") == seq + 1  # "stuck" never was
            await wait_until(lambda: nodes.seen(a).payloads("q") == [b"before", b"after"])
            # a held its name again on reconnecting (one call per name, on its slot).
            assert await b.claim("gina", b.owner(1)) == Claim(False, a.owner(1), "Gina")
            assert await b.route("gina", "hello")
            assert nodes.seen(a).routed == [("Gina", "hello")]


async def _replication_offset(port: int) -> tuple[int, bool]:
    info = await trio.run_process(
        [REDIS_CLI, "-p", str(port), "INFO", "replication"], capture_stdout=True
    )
    fields = dict(line.split(":", 1) for line in info.stdout.decode().splitlines() if ":" in line)
    return int(fields["master_repl_offset"]), fields.get("master_link_status") == "up"


async def _replicated(primary: int, replica: int) -> None:
    """Wait until the replica holds every write the primary has. (``WAIT`` from a client of
    its own counts only that client's writes, none: it returns at once.)"""
    target, _ = await _replication_offset(primary)
    await eventually(lambda: _replication_offset(replica), lambda r: r[1] and r[0] >= target)


async def test_after_a_sentinel_failover_the_nodes_reconnect_to_the_new_primary(
    fresh_redis: RedisServer,
) -> None:
    """The primary dies; the Sentinel promotes the replica; the nodes, which ask the
    Sentinel at every reconnect, carry on there with the replicated history and epoch."""
    with (
        start_replica(fresh_redis) as replica,
        start_sentinel(fresh_redis, "svc", down_after_ms=300, replicas=1) as sentinel,
        trio.fail_after(30),
    ):
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/svc"
        brokers = redis_nodes(url, 2, operation_timeout=0.5, max_reconnect_seconds=0.3)
        async with running_cluster(brokers, "redis") as nodes:
            a, b = nodes.a, nodes.b
            await b.listen("q")
            for i in range(3):
                await a.publish("q", f"m{i}".encode(), kind=1, key=None, options=KEEP)
            epoch = (await a.replay("q", None, epoch=None, options=KEEP)).epoch
            await wait_until(lambda: nodes.seen(b).seqs("q") == [1, 2, 3])
            await _replicated(fresh_redis.port, replica.port)

            fresh_redis.kill()
            await wait_until(lambda: a.state is BrokerState.DOWN, within=5)
            await wait_until(lambda: a.state is b.state is BrokerState.UP, within=20)
            role = await trio.run_process(
                [REDIS_CLI, "-p", str(replica.port), "ROLE"], capture_stdout=True
            )
            assert role.stdout.split()[0] == b"master"  # promoted

            async def publish(body: bytes) -> int:
                while True:
                    try:
                        return await a.publish("q", body, kind=1, key=None, options=KEEP)
                    except BrokerUnavailable:
                        await trio.sleep(0.05)

            assert await publish(b"after") == 4  # the history came along
            assert (await a.replay("q", None, epoch=None, options=KEEP)).epoch == epoch
            await wait_until(lambda: nodes.seen(b).seqs("q") == [1, 2, 3, 4])
