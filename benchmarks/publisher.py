"""Publisher benchmark: ``RedisPublisher`` (asyncio and Trio) against a node's own publish.

Starts a redis-server of its own (a free loopback port, no persistence; stopped by PID at
the end) and measures sequential publishes of one small JSON message to one queue, one
caller: calls/s for

* a node's ``RedisBroker.publish`` (Trio; what ``await queue.publish()`` costs on Redis);
* ``RedisPublisher.publish`` under Trio;
* ``RedisPublisher.publish`` under asyncio.

Each publish is one round trip (the same script). Prints each rate and its ratio to the
node's. Usage: ``python benchmarks/publisher.py [--count 2000]``. Absolute numbers depend
on the machine; compare the lines of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.redis_fixture import start_redis
from trio_ws._queue_model import PayloadKind, QueueOptions
from trio_ws.brokers.redis import RedisBroker
from trio_ws.publisher import RedisPublisher

MESSAGE = {"type": "streamed", "data": "0123456789abcdef0123456789abcdef"}
BODY = b'{"type":"streamed","data":"0123456789abcdef0123456789abcdef"}'


async def node_rate(url: str, count: int) -> float:
    broker = RedisBroker(url, prefix="bench-node")
    options = QueueOptions(history=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        await broker.wait_up()
        start = time.perf_counter()
        for _ in range(count):
            await broker.publish("q", BODY, kind=PayloadKind.JSON, key=None, options=options)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return count / elapsed


async def publisher_rate(url: str, count: int, prefix: str) -> float:
    async with RedisPublisher(url, prefix=prefix) as publisher:
        start = time.perf_counter()
        for _ in range(count):
            await publisher.publish("q", MESSAGE)
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    count = parser.parse_args().count
    with start_redis() as redis:
        node = trio.run(node_rate, redis.url, count)
        on_trio = trio.run(publisher_rate, redis.url, count, "bench-trio")
        on_asyncio = asyncio.run(publisher_rate(redis.url, count, "bench-asyncio"))
    print(f"publish, one caller, {count} messages (calls/s; ratio to the node's)")
    print(f"  node (RedisBroker.publish, trio) {node:8.0f}  1.00")
    print(f"  RedisPublisher under trio        {on_trio:8.0f}  {on_trio / node:.2f}")
    print(f"  RedisPublisher under asyncio     {on_asyncio:8.0f}  {on_asyncio / node:.2f}")


if __name__ == "__main__":
    main()
