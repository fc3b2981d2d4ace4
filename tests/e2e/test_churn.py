"""Churn: connect, log in, subscribe, publish and leave, thousands of times, some of the
clients vanishing abruptly; afterwards nothing may be left behind (issue 10, "Hardening").

The demo app is served in a subprocess (``SERVER``, below), so that its resident memory is
the server's alone: ``/proc/<pid>/status`` VmRSS, read by the server itself. Besides the
demo's routes the subprocess answers ``/churn`` with what it holds: connections, clients,
the broker's names and presence, the hub's subscribers and each queue's, what waits in
subscriber buffers, the admission counts, the number of live trio tasks, and VmRSS after a
``gc.collect()``. The clients run here, ``CONCURRENCY`` at a time, with and without
permessage-deflate, and end in one of these ways, picked at random:

* ``clean``: a Close frame (1000), the normal end;
* ``fin``: the socket closed without a Close frame (the server reads EOF);
* ``reset``: ``SO_LINGER`` 0 then close, so the kernel sends RST;
* ``half_frame``: half of a frame written, then a reset;
* ``early``: a reset right after the handshake, before the login.

The suite runs ``TRIO_WS_CHURN_CYCLES`` cycles per compression setting (5,000 by default,
10,000 in all, about 12 s here). The issue's full run, 10,000 with and 10,000 without
deflate (about 20 s), is::

    TRIO_WS_CHURN_CYCLES=10000 .venv/bin/python -m pytest -q tests/e2e/test_churn.py -s

which prints the server's RSS after warm-up and after the cycles. RSS is compared after
``malloc_trim(0)``, which hands the C heap's free pages back: what remains is what is
still allocated. Without deflate the untrimmed RSS is back too; with deflate it is not
(glibc keeps the freed zlib state), which the xfail test below records.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws

CYCLES = int(os.environ.get("TRIO_WS_CHURN_CYCLES", "5000"))
"""Cycles per compression setting (the issue's full run: 10,000)."""
WARMUP = 300
"""Cycles run before the baseline RSS is taken (allocator arenas, caches, code paths)."""
CONCURRENCY = 24
GROUPS = 8
"""Clients subscribe to one of a fixed set of groups: the queues (and their kept history,
bounded by design) are warmed up, so what grows with cycles would be a leak."""
RSS_TOLERANCE = 10 << 20
ENDINGS = ("clean", "fin", "reset", "half_frame", "early")

SERVER = textwrap.dedent(
    """
    import ctypes, gc, json, sys
    import trio
    import trio_ws
    from trio_ws.demo.app import create_app

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    def count_tasks():
        todo, n = [trio.lowlevel.current_root_task()], 0
        while todo:
            task = todo.pop()
            n += 1
            for nursery in task.child_nurseries:
                todo.extend(nursery.child_tasks)
        return n

    app = create_app(ticks_per_second=20)

    def churn(request):
        gc.collect()
        store = app.broker.store
        hub = app.hub
        body = {
            "connections": len(app.server.connections),
            "clients": len(app.clients),
            "names": len(store.names),
            "presence": sum(
                sum(counts.values()) for per in store.presence.values()
                for counts in per.values()
            ),
            "hub_subscribers": len(hub._subscribers),
            "queue_subscribers": {n: len(q) for n, q in hub.queues.items()},
            "buffered": hub.statistics().buffered,
            "admission": len(app.server._admission()._by_address),
            "pending": app.server._admission().pending,
            "tasks": count_tasks(),
            "rss": rss(),
        }
        if "trim" in request.query:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            body["rss_trimmed"] = rss()
        return trio_ws.HttpResponse(200, json.dumps(body), "application/json")

    app.router.add("/churn", churn)

    async def main():
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                lambda task_status: app.serve("127.0.0.1", 0, task_status=task_status)
            )
            print(addresses[0], flush=True)

    trio.run(main)
    """
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The demo app in a subprocess; yields its ``host:port``."""
    out = (tmp_path / "server.out").open("w+")
    err = (tmp_path / "server.err").open("w+")
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=out, stderr=err)
    try:
        for _ in range(200):
            out.seek(0)
            line = out.readline()
            if line.endswith("\n"):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not start")
        assert proc.poll() is None, (tmp_path / "server.err").read_text()
        yield line.strip()
    finally:
        proc.kill()
        proc.wait()
        out.close()
        err.close()


async def http_get(address: str, path: str) -> tuple[int, str]:
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def held(address: str, *, trim: bool = True) -> dict[str, Any]:
    status, body = await http_get(address, "/churn?trim" if trim else "/churn")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def reset(sock: trio.socket.SocketType) -> None:
    """Close with SO_LINGER 0: the kernel answers with RST, no FIN, no Close frame."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def receive_until(conn: trio_ws.WebSocketConnection, type_: str) -> dict[str, Any]:
    while True:
        message = json.loads(await conn.receive())
        if message["type"] == type_:
            return message  # type: ignore[no-any-return]
        assert message["type"] in ("grouped", "gap"), message


async def cycle(address: str, i: int, *, compression: bool, rng: random.Random) -> str:
    """One client's life; returns how it ended."""
    ending = rng.choice(ENDINGS)
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    sock = stream.socket
    name = f"c{i}"
    group = f"g{i % GROUPS}"
    try:
        async with trio_ws.connect(
            f"ws://{address}/ws", stream=stream, compression=compression, close_timeout=2
        ) as conn:
            if ending == "early":
                reset(sock)
                return ending
            await conn.send({"type": "login", "name": name})
            assert await receive_until(conn, "welcome") == {"type": "welcome", "name": name}
            await conn.send({"type": "grouped", "action": "subscribe", "group": group})
            await receive_until(conn, "subscribed")
            text = f"{name} é€ {'x' * rng.randrange(1, 2000)}"
            await conn.send({"type": "grouped", "action": "publish", "group": group, "text": text})
            while True:  # our own message back through the queue
                message = await receive_until(conn, "grouped")
                if message["from"] == name:
                    assert message["text"] == text
                    break
            if ending == "fin":
                sock.close()
            elif ending == "reset":
                reset(sock)
            elif ending == "half_frame":
                # A masked text frame announcing 100 bytes of payload, and 50 of them.
                await stream.send_all(b"\x81\xe4abcd" + b"x" * 50)
                reset(sock)
    except (trio_ws.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        if ending == "clean":
            raise
    return ending


async def churn(address: str, cycles: int, *, start: int, compression: bool) -> dict[str, int]:
    rng = random.Random(start)
    endings: dict[str, int] = dict.fromkeys(ENDINGS, 0)
    limit = trio.CapacityLimiter(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            ending = await cycle(address, i, compression=compression, rng=rng)
            endings[ending] += 1

    async with trio.open_nursery() as nursery:
        for i in range(start, start + cycles):
            await limit.acquire_on_behalf_of(i)  # at most CONCURRENCY tasks alive
            limit.release_on_behalf_of(i)
            nursery.start_soon(one, i)
    return endings


async def settled(address: str, baseline_tasks: int, *, trim: bool = True) -> dict[str, Any]:
    """What the server holds once every connection has ended (polling up to 10 s)."""
    with trio.move_on_after(10):
        while True:
            state = await held(address, trim=trim)
            if (
                state["connections"] == 0
                and state["clients"] == 0
                and state["tasks"] <= baseline_tasks
            ):
                return state
            await trio.sleep(0.1)
    return await held(address, trim=trim)


# 5,000 cycles take 20-55 s here depending on the machine's load: more than the suite's
# default 60 s limit leaves room for; the fail_after below bounds it.
@pytest.mark.timeout(150)
@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_churn_leaves_nothing_behind(server: str, compression: bool) -> None:
    with trio.fail_after(120):
        await churn(server, WARMUP, start=0, compression=compression)
        before = await settled(server, baseline_tasks=10**9)
        started = trio.current_time()
        endings = await churn(server, CYCLES, start=WARMUP, compression=compression)
        elapsed = trio.current_time() - started
        after = await settled(server, baseline_tasks=before["tasks"])
    assert all(endings.values()), endings  # every ending happened
    print(
        f"\nchurn {'deflate' if compression else 'plain'}: {CYCLES} cycles in {elapsed:.1f} s,"
        f" endings {endings}; RSS after warm-up (trimmed) {before['rss_trimmed'] / 2**20:.1f}"
        f" MiB, after the cycles {after['rss'] / 2**20:.1f} MiB, trimmed"
        f" {after['rss_trimmed'] / 2**20:.1f} MiB"
        f" ({(after['rss_trimmed'] - before['rss_trimmed']) / CYCLES:+.0f} B/cycle);"
        f" tasks {before['tasks']} -> {after['tasks']}"
    )
    assert after["connections"] == 0
    assert after["clients"] == 0
    assert after["names"] == 0
    assert after["presence"] == 0
    assert after["hub_subscribers"] == 0
    assert set(after["queue_subscribers"].values()) == {0}, after["queue_subscribers"]
    assert after["buffered"] == 0
    assert after["admission"] == 1  # the /churn request itself
    assert after["pending"] == 1
    assert after["tasks"] <= before["tasks"]
    # What is still allocated: RSS once the C allocator has given back its free pages.
    assert after["rss_trimmed"] - before["rss_trimmed"] < RSS_TOLERANCE, (before, after)
    if not compression:
        # Without deflate the RSS as the system sees it is back too, untrimmed.
        assert after["rss"] - before["rss_trimmed"] < RSS_TOLERANCE, (before, after)


async def test_churn_with_deflate_gives_memory_back_untrimmed(server: str) -> None:
    with trio.fail_after(60):
        await churn(server, WARMUP, start=0, compression=True)
        before = await settled(server, baseline_tasks=10**9, trim=False)
        await churn(server, 1000, start=WARMUP, compression=True)
        after = await settled(server, baseline_tasks=before["tasks"], trim=False)
    assert after["rss"] - before["rss"] < RSS_TOLERANCE, (before["rss"], after["rss"])
