"""``trio_ws.open_session`` against a ``trio-ws-demo`` process killed (SIGKILL, by PID)
mid-stream and started again on the same port.

With the memory broker the restart loses every queue's history: the session reports
:class:`~trio_ws.HistoryLost` and takes the new history, where what was published while it
was away arrives. With a real ``redis-server`` the history outlives the server: the
session resumes every queue where it stopped and misses nothing, not even what was
published (straight to Redis) while no server was running. (There the killed server's
claim on the name lasts until its lease ends, 10 s: the session keeps trying until then.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

import trio_ws
from tests.e2e.test_workers import free_port, node_of, until
from tests.redis_fixture import start_redis
from trio_ws import Backoff, HistoryLost, QueueGap, Received
from trio_ws.publisher import RedisPublisher

DEMO = [str(Path(sys.executable).with_name("trio-ws-demo"))]
QUICK = Backoff(initial=0.05, maximum=0.5)


class DemoProcess:
    """``trio-ws-demo`` on a fixed port, killed and started again by the test."""

    def __init__(self, port: int, broker: str) -> None:
        self.port = port
        self.broker = broker
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
            [*DEMO, "--port", str(self.port), "--broker", self.broker, "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await trio.to_thread.run_sync(
            until, lambda: node_of(self.port) is not None, 20, "the demo did not start"
        )

    def kill(self) -> None:
        process, self.process = self.process, None
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@contextmanager
def demo(broker: str) -> Iterator[DemoProcess]:
    server = DemoProcess(free_port(), broker)
    try:
        yield server
    finally:
        server.stop()


class Gate:
    """``open_stream`` for a session: TCP to the demo, refused while ``closed``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = False

    async def __call__(self) -> trio.abc.Stream:
        if self.closed:
            raise ConnectionRefusedError("held back by the test")
        return await trio.open_tcp_stream("127.0.0.1", self.port)


def session(port: int, name: str, gate: Gate | None = None) -> Any:
    return trio_ws.open_session(
        f"ws://127.0.0.1:{port}/ws", name=name, reconnect=QUICK, open_stream=gate
    )


async def take(sub: trio_ws.Subscription, count: int) -> list[Any]:
    return [await sub.receive() for _ in range(count)]


def texts(items: list[Any]) -> list[tuple[int, str]]:
    assert all(isinstance(item, Received) for item in items), items
    return [(item.seq, item.message["text"]) for item in items]


async def test_killed_memory_server_the_history_is_lost_and_the_new_one_taken() -> None:
    with trio.fail_after(60), demo("memory") as server:
        await server.start()
        gate = Gate(server.port)
        async with session(server.port, "alice", gate) as alice, session(server.port, "bob") as bob:
            lobby = await alice.subscribe("lobby")
            for text in "abc":
                await bob.publish("lobby", text)
            assert texts(await take(lobby, 3)) == [(1, "a"), (2, "b"), (3, "c")]
            epoch = lobby.epoch

            gate.closed = True  # alice stays away until the test lets her in
            server.kill()
            await server.start()
            await bob.wait_connected()  # bob comes back on his own
            for text in ("while", "away"):
                await bob.publish("lobby", text)
            gate.closed = False

            lost = await lobby.receive()
            assert isinstance(lost, HistoryLost)
            assert (lost.last_seq, lost.previous_epoch) == (3, epoch)
            assert lost.epoch != epoch
            # Published while alice was away: they arrive, in the new numbering.
            assert texts(await take(lobby, 2)) == [(1, "while"), (2, "away")]
            await bob.publish("lobby", "live")
            assert texts(await take(lobby, 1)) == [(3, "live")]
            assert alice.statistics().connections == 2


async def test_killed_server_on_redis_the_session_misses_nothing() -> None:
    with trio.fail_after(60), start_redis() as redis, demo(redis.url) as server:
        await server.start()
        gate = Gate(server.port)
        async with (
            RedisPublisher(redis.url) as publisher,
            session(server.port, "alice", gate) as alice,
        ):
            lobby = await alice.subscribe("lobby")
            ticker = await alice.subscribe_stream()

            async def publish(*texts: str) -> None:
                for text in texts:
                    message = {"type": "grouped", "group": "lobby", "from": "cron", "text": text}
                    await publisher.publish("lobby", message)

            await publish("a", "b", "c")
            assert texts(await take(lobby, 3)) == [(1, "a"), (2, "b"), (3, "c")]
            ticks = await take(ticker, 2)

            gate.closed = True
            server.kill()  # mid-stream: the ticker was running
            await publish("d", "e")  # while no server runs at all
            await server.start()
            await publish("f")  # while alice is still away
            gate.closed = False

            # Everything, once, in order: no gap, no lost history.
            assert texts(await take(lobby, 3)) == [(4, "d"), (5, "e"), (6, "f")]
            await publish("g")
            assert texts(await take(lobby, 1)) == [(7, "g")]
            ticks += await take(ticker, 8)  # across the restart (4 ticks a second)
            assert not [t for t in ticks if isinstance(t, QueueGap | HistoryLost)]
            seqs = [t.seq for t in ticks]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            stats = alice.statistics()
            assert stats.connections == 2
            assert stats.gaps == 0
