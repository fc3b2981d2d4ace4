"""Broker benchmark: the memory broker against the Redis broker, two nodes on one state.

Starts a redis-server of its own (a free loopback port, no persistence; stopped by PID at
the end) and measures, for each broker:

* **publish, one caller**: sequential ``publish`` calls from node A: calls/s and the mean
  time per call (one round trip for Redis);
* **publish, 50 callers**: 50 tasks publishing at once (coredis multiplexes them on one
  connection): publishes/s;
* **delivery**: node B listens; the time from ``publish`` starting on A to B's
  ``on_message`` for it, median and 99th percentile over sequential publishes;
* **claim + release**: a login's name claim (one round trip) and its release;
* **CPU per message** (this process's CPU time, both nodes in it): a publish to a queue
  nobody listens to, and a publish that node B receives (its ``on_message``), one after
  the other; the difference is what receiving one message costs a node. Measured once with
  one caller (each publish waits for its round trip: the system calls of one call each,
  and the core idles meanwhile) and once with 50 callers at once (the client's own work,
  the calls written together).

Usage: ``python benchmarks/broker.py [--count 2000]``. Absolute numbers depend on the
machine; compare the two brokers of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.redis_fixture import start_redis
from trio_ws._queue_model import Message, PayloadKind, QueueOptions
from trio_ws.brokers import Broker, MemoryBroker
from trio_ws.brokers.redis import RedisBroker

OPTIONS = QueueOptions(history=100)
BODY = b'{"type":"streamed","data":"0123456789abcdef0123456789abcdef"}'


async def measure(name: str, a: Broker, b: Broker, count: int) -> None:
    arrived: dict[int, float] = {}
    waiter = trio.Event()

    def on_message(_queue: str, message: Message) -> None:
        arrived[message.seq] = time.perf_counter()
        waiter.set()

    b.on_message = on_message
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for node in (a, b):
            if isinstance(node, RedisBroker):
                await node.wait_up()

        start = time.perf_counter()
        for _ in range(count):
            await a.publish("seq", BODY, kind=PayloadKind.JSON, key=None, options=OPTIONS)
        one = time.perf_counter() - start

        async def publisher(queue: str, n: int) -> None:
            for _ in range(n):
                await a.publish(queue, BODY, kind=PayloadKind.JSON, key=None, options=OPTIONS)

        start = time.perf_counter()
        async with trio.open_nursery() as group:
            for _ in range(50):
                group.start_soon(publisher, "par", count // 50)
        many = time.perf_counter() - start

        await b.listen("lat")
        sent: dict[int, float] = {}
        for _ in range(count // 4):
            t = time.perf_counter()
            seq = await a.publish("lat", BODY, kind=PayloadKind.JSON, key=None, options=OPTIONS)
            sent[seq] = t
            while seq not in arrived:
                await waiter.wait()
                waiter = trio.Event()
        latencies = sorted((arrived[s] - sent[s]) * 1e6 for s in sent)

        start = time.perf_counter()
        for i in range(count // 4):
            await a.claim(f"user{i}", a.owner(i))
            a.release(f"user{i}", a.owner(i))
        claims = time.perf_counter() - start

        async def cpu_per(queue: str, n: int) -> float:
            nonlocal waiter
            start = time.process_time()
            for _ in range(n):
                seq = await a.publish(queue, BODY, kind=PayloadKind.JSON, key=None, options=OPTIONS)
                while queue == "lat" and seq not in arrived:
                    await waiter.wait()
                    waiter = trio.Event()
            return (time.process_time() - start) / n * 1e6

        async def cpu_per_50(queue: str, n: int) -> float:
            """The same with 50 callers at once: the client writes their calls together
            and the core never waits idle for a round trip."""
            nonlocal waiter
            received = len(arrived)
            start = time.process_time()
            async with trio.open_nursery() as group:
                for _ in range(50):
                    group.start_soon(publisher, queue, n // 50)
            while queue == "lat" and len(arrived) < received + n // 50 * 50:
                await waiter.wait()
                waiter = trio.Event()
            return (time.process_time() - start) / (n // 50 * 50) * 1e6

        n = count // 4
        publish_cpu, both_cpu, publish_50, both_50 = [], [], [], []
        for _ in range(5):  # alternating, so both see the same machine
            publish_cpu.append(await cpu_per("nobody", n))
            both_cpu.append(await cpu_per("lat", n))
            publish_50.append(await cpu_per_50("nobody", n))
            both_50.append(await cpu_per_50("lat", n))
        nursery.cancel_scope.cancel()

    print(
        f"{name:7} publish x1: {count / one:8.0f}/s ({one / count * 1e6:6.0f} us each)"
        f" | x50: {count // 50 * 50 / many:8.0f}/s"
        f" | delivery median {statistics.median(latencies):6.0f} us,"
        f" p99 {latencies[int(len(latencies) * 0.99)]:6.0f} us"
        f" | claim {claims / (count // 4) * 1e6:5.0f} us"
        f" | CPU per publish {statistics.median(publish_cpu):6.1f} us,"
        f" per publish + receive {statistics.median(both_cpu):6.1f} us"
        f" | with 50 callers {statistics.median(publish_50):6.1f} us,"
        f" {statistics.median(both_50):6.1f} us"
    )


async def main(count: int) -> None:
    first = MemoryBroker()
    await measure("memory", first, first.peer(), count)
    with start_redis() as server:
        a = RedisBroker(server.url, node_id="bench-a")
        b = RedisBroker(server.url, node_id="bench-b")
        await measure("redis", a, b, count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    trio.run(main, parser.parse_args().count)
