"""Broker factories for the contract suite: every case runs on each implementation.

The ``cluster`` fixture gives three nodes (``a``, ``b``, ``c``) on one shared state,
already running: ``memory`` nodes on one :class:`~trio_ws.brokers.MemoryStore` (under
the autojump clock: leases and ttl cost no real time), ``redis`` nodes on one real
``redis-server``, ``redis-cluster`` nodes on one real 3-shard Redis Cluster (each test
under its own key prefix). A missing ``redis-server`` makes the redis cases fail, never
skip.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from tests.redis_fixture import RedisCluster, RedisServer, start_redis, start_redis_cluster
from trio_ws._queue_model import Message
from trio_ws.brokers import Broker, BrokerState, MemoryBroker
from trio_ws.brokers._base import Payload
from trio_ws.brokers.redis import RedisBroker

T = TypeVar("T")

KINDS = ["memory", "redis", "redis-cluster"]

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (tests keep apart by key prefix)."""
    with start_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One 3-shard Redis Cluster for the session (tests keep apart by key prefix)."""
    with start_redis_cluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill, restart, pause and resume."""
    with start_redis() as server:
        yield server


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock(kind: str) -> trio.testing.MockClock | None:
    """The autojump clock for the memory broker; real time for Redis (which a mock clock
    would outrun while waiting on its sockets)."""
    return trio.testing.MockClock(autojump_threshold=0) if kind == "memory" else None


class Recorder:
    """What a node's callbacks received."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.messages: dict[str, list[Message]] = {}
        self.retracts: list[tuple[str, str]] = []
        self.routed: list[tuple[str, Payload]] = []
        self.displaced: list[tuple[str, str]] = []
        self.refuse: set[str] = set()
        broker.on_message = self._on_message
        broker.on_retract = lambda queue, key: self.retracts.append((queue, key))
        broker.on_routed = self._on_routed
        broker.on_displaced = lambda name, owner: self.displaced.append((name, owner))

    def _on_message(self, queue: str, message: Message) -> None:
        self.messages.setdefault(queue, []).append(message)

    def _on_routed(self, name: str, payload: Payload) -> bool:
        if name in self.refuse:
            return False
        self.routed.append((name, payload))
        return True

    def seqs(self, queue: str) -> list[int]:
        return [m.seq for m in self.messages.get(queue, [])]

    def payloads(self, queue: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages.get(queue, [])]


class Node:
    """One running node of a :class:`Cluster`."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.seen = Recorder(broker)
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            with self.scope:
                await self.broker.run(task_status=task_status)
        finally:
            self.done.set()

    async def stop(self) -> None:
        """Cancel this node's run() (it leaves the cluster) and wait until it returned."""
        self.scope.cancel()
        await self.done.wait()


class Cluster:
    """Nodes on one shared state, and helpers that wait for what is delivered later."""

    def __init__(self, kind: str, nodes: list[Node]) -> None:
        self.kind = kind
        self.nodes = nodes
        self.a, self.b = nodes[0].broker, nodes[1].broker
        self._barriers = 0

    @property
    def c(self) -> Broker:
        return self.nodes[2].broker

    def seen(self, broker: Broker) -> Recorder:
        return next(n.seen for n in self.nodes if n.broker is broker)

    def node(self, broker: Broker) -> Node:
        return next(n for n in self.nodes if n.broker is broker)

    async def barrier(self, *brokers: Broker) -> None:
        """Return once everything published before the call has reached ``brokers``.

        Each node's delivery is in publish order across queues (one pub/sub connection
        per node; the memory broker delivers at once), so a message on a barrier queue
        that every node listens to arrives after everything published earlier.
        """
        from trio_ws._queue_model import QueueOptions

        targets = brokers or tuple(n.broker for n in self.nodes if not n.done.is_set())
        self._barriers += 1
        for broker in targets:
            await broker.listen("barrier")
        seq = await targets[0].publish(
            "barrier", b"", kind=1, key=None, options=QueueOptions(history=0)
        )
        await wait_until(lambda: all(seq in self.seen(b).seqs("barrier") for b in targets))


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll until ``predicate()`` holds; fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - the brokers deliver from their own tasks
            await trio.sleep(0.005)


async def eventually(
    call: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 5.0
) -> T:
    """Await ``call()`` until ``check`` holds for its result; return that result."""
    with trio.fail_after(within):
        while True:
            result = await call()
            if check(result):
                return result
            await trio.sleep(0.01)


@asynccontextmanager
async def running_cluster(
    brokers: list[Broker], kind: str, *, reports: bool = True
) -> AsyncIterator[Cluster]:
    nodes = [Node(b) for b in brokers]
    if reports:
        for i, node in enumerate(nodes):
            node.broker.report = lambda i=i: (10 + i, i)  # type: ignore[misc]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            for node in nodes:
                await nursery.start(node.run)
            for broker in brokers:
                if isinstance(broker, RedisBroker):
                    await broker.wait_up()
                assert broker.state is BrokerState.UP
        try:
            yield Cluster(kind, nodes)
        finally:
            nursery.cancel_scope.cancel()


def redis_nodes(url: str, count: int = 3, **kwargs: Any) -> list[Broker]:
    prefix = f"test{next(_prefixes)}"
    return [
        RedisBroker(url, node_id=f"node-{name}", prefix=prefix, **kwargs) for name in "abc"[:count]
    ]


@pytest.fixture
async def cluster(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Three running nodes ``a``, ``b``, ``c`` of the ``kind`` broker on one shared state."""
    brokers: list[Broker]
    if kind == "memory":
        first = MemoryBroker(node_id="node-a")
        brokers = [first, first.peer("node-b"), first.peer("node-c")]
    elif kind == "redis":
        brokers = redis_nodes(request.getfixturevalue("redis_server").url)
    else:
        brokers = redis_nodes(request.getfixturevalue("redis_cluster").url)
    async with running_cluster(brokers, kind) as result:
        yield result
