"""The worst-case memory one client can make the demo server hold, under the defaults,
printed next to the limit that should bound it (SECURITY.md).

Each abuse runs against a fresh ``trio-ws-demo`` app in a subprocess (default limits, no
rate limit: the CLI's ``--rate-limit 100/1`` only slows these down). The server answers
``/rss`` with its VmRSS after ``gc.collect()`` and after ``malloc_trim(0)`` (the C heap's
free pages given back: what is still allocated). Growth is that trimmed RSS after the
abuse minus before, divided by the number of clients doing it at once:

* ``history``: one client publishes big non-ASCII messages (JSON-escaped, so each stored
  frame is larger than the text sent) to many new groups; bound: the broker's 64 MiB for
  all kept history (``MemoryStore.max_history_bytes``) plus the queue records.
* ``names``: one client publishes one-letter messages to many new groups; bound: the same
  64 MiB of frames, but small messages cost more than their frame and every name leaves a
  record behind (see SECURITY.md, "Known gaps").
* ``fragments``: clients each leave a message of just under 1 MiB unfinished (64 KiB
  fragments, no FIN); bound: ``max_message_size`` (1 MiB) per connection.
* ``stalled``: a subscriber that never reads (a 4 KiB receive buffer) while another client
  publishes 256 KiB messages to its group; bound: ``max_subscriber_bytes`` (8 MiB) plus
  ``write_buffer_size`` (1 MiB) plus the socket's send buffer.
* ``deflate``: clients that negotiated permessage-deflate and exchanged one compressed
  message each; bound: none of its own (zlib state per connection, counted by connections).

Run: ``python benchmarks/worst_case_memory.py [--scale N] [ABUSE ...]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import trio_ws

MiB = 1 << 20

SERVER = textwrap.dedent(
    """
    import ctypes, gc, json
    import trio
    import trio_ws
    from trio_ws.demo.app import create_app

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    app = create_app()

    def report(_request):
        gc.collect()
        raw = rss()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        store = app.broker.store
        body = {"rss": raw, "trimmed": rss(), "histories": len(store.histories),
                "history_bytes": store.history_bytes, "clients": len(app.clients),
                "connections": len(app.server.connections),
                "buffered": app.hub.statistics().buffered,
                "write_pending": sum(c.pending_size for c in app.server.connections)}
        return trio_ws.HttpResponse(200, json.dumps(body), "application/json")

    app.router.add("/rss", report)

    async def main():
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                lambda task_status: app.serve("127.0.0.1", 0, task_status=task_status)
            )
            print(addresses[0], flush=True)

    trio.run(main)
    """
)


class Server:
    """The demo app in a subprocess."""

    def __init__(self) -> None:
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdout=self.out, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            self.out.seek(0)
            line = self.out.readline()
            if line.endswith("\n"):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the demo server did not start")
            time.sleep(0.05)
        self.address = line.strip()
        self.host, _, port = self.address.rpartition(":")
        self.port = int(port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.out.close()

    async def report(self) -> dict[str, Any]:
        stream = await trio.open_tcp_stream(self.host, self.port)
        async with stream:
            await stream.send_all(f"GET /rss HTTP/1.1\r\nHost: {self.address}\r\n\r\n".encode())
            data = b""
            while b"}" not in data:
                data += await stream.receive_some(65536)
        result: dict[str, Any] = json.loads(data.partition(b"\r\n\r\n")[2])
        return result


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked with an all-zero key: the payload goes as it is)."""
    head = bytes([opcode | (0x80 if fin else 0)])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def text(message: dict[str, Any]) -> bytes:
    return frame(0x1, json.dumps(message, ensure_ascii=False).encode())


OPEN: list[Raw] = []
"""Every raw client of the abuse being measured: they live until it is measured."""


class Raw:
    """A hand-driven WebSocket client on a plain socket (it reads only when told)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def open(cls, server: Server, name: str, *, rcvbuf: int | None = None) -> Raw:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((server.host, server.port))
        raw = cls(trio.SocketStream(sock))
        OPEN.append(raw)
        key = base64.b64encode(os.urandom(16)).decode()
        await raw.stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {server.address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
            + text({"type": "login", "name": name})
        )
        data = b""
        while b"welcome" not in data:
            data += await raw.stream.receive_some(4096)
        return raw

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def history_abuse(server: Server, scale: int) -> tuple[int, str, int]:
    client = await Raw.open(server, "historian")
    body = "é€😀" * (200_000 // 9)  # about 200 KB of UTF-8; escaped, 6 bytes a character
    groups = 400 * scale
    for i in range(groups):
        await client.send(
            text({"type": "grouped", "action": "publish", "group": f"h{i}", "text": body})
        )
    await settle(server, client)
    return 1, f"{groups} publishes of 200 KB non-ASCII to new groups", 64 * MiB


async def names_abuse(server: Server, scale: int) -> tuple[int, str, int]:
    client = await Raw.open(server, "namer")
    groups = 50_000 * scale
    batch = b"".join(
        text({"type": "grouped", "action": "publish", "group": f"n{i}", "text": "x"})
        for i in range(groups)
    )
    await client.send(batch)
    await settle(server, client)
    return 1, f"{groups} one-letter publishes to new groups", 64 * MiB


async def fragments_abuse(server: Server, scale: int) -> tuple[int, str, int]:
    clients = [await Raw.open(server, f"frag{i}") for i in range(20 * scale)]
    piece = b"y" * (64 << 10)
    for client in clients:
        data = frame(0x1, piece, fin=False) + frame(0x0, piece, fin=False) * 14
        await client.send(data)  # 960 KiB of a message that never ends
    await trio.sleep(0.5)
    return len(clients), "an unfinished 960 KiB message per connection", 1 * MiB


async def stalled_abuse(server: Server, scale: int) -> tuple[int, str, int]:
    subscriber = await Raw.open(server, "stalled", rcvbuf=4096)
    await subscriber.send(text({"type": "grouped", "action": "subscribe", "group": "slow"}))
    publisher = await Raw.open(server, "publisher")
    body = "z" * (256 << 10)
    for _ in range(100 * scale):
        await publisher.send(
            text({"type": "grouped", "action": "publish", "group": "slow", "text": body})
        )
    await settle(server, publisher)
    return 1, f"{100 * scale} x 256 KiB published to a subscriber that never reads", 9 * MiB


async def deflate_abuse(server: Server, scale: int) -> tuple[int, str, int]:
    n = 50 * scale
    ready = trio.Event()
    done = trio.Event()
    count = 0

    async def client(i: int) -> None:
        nonlocal count
        async with trio_ws.connect(f"ws://{server.address}/ws", compression=True) as conn:
            await conn.send({"type": "login", "name": f"z{i}"})
            await conn.receive()
            await conn.send({"type": "echo", "text": os.urandom(8000).hex()})
            await conn.receive()
            count += 1
            if count == n:
                ready.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(client, i)
        await ready.wait()
        result = await measure_now(server)
        done.set()
    deflate_abuse.measured = result  # type: ignore[attr-defined]
    return n, "a connection with permessage-deflate, one message each way", 0


async def settle(server: Server, client: Raw) -> None:
    """Wait until the server has handled what ``client`` sent (a ping answered)."""
    await client.send(text({"type": "ping"}))
    data = b""
    with trio.move_on_after(30):
        while b'"pong"' not in data:
            chunk = await client.stream.receive_some(1 << 20)
            if not chunk:
                break
            data = data[-16:] + chunk


async def measure_now(server: Server) -> dict[str, Any]:
    return await server.report()


ABUSES: dict[str, Callable[[Server, int], Awaitable[tuple[int, str, int]]]] = {
    "history": history_abuse,
    "names": names_abuse,
    "fragments": fragments_abuse,
    "stalled": stalled_abuse,
    "deflate": deflate_abuse,
}


async def run_one(name: str, scale: int) -> None:
    server = Server()
    try:
        before = await server.report()
        clients, what, limit = await ABUSES[name](server, scale)
        after = getattr(ABUSES[name], "measured", None) or await server.report()
        for raw in OPEN:
            await raw.aclose()
        OPEN.clear()
        growth = (after["trimmed"] - before["trimmed"]) / clients
        raw = (after["rss"] - before["rss"]) / clients
        bound = f"{limit / MiB:7.1f} MiB" if limit else "   none"
        if not limit:
            verdict = "        "
        elif growth <= limit:
            verdict = "  within"
        else:
            verdict = f"  OVER {growth / limit - 1:+.0%}"
        print(
            f"{name:10} {growth / MiB:8.2f} MiB {raw / MiB:8.2f} MiB {bound}{verdict}"
            f"   per client, {clients} at once: {what}"
            + (
                f" (queue records {after['histories']}, kept {after['history_bytes'] / MiB:.1f}"
                " MiB of frames)"
                if name in ("history", "names")
                else ""
            ),
            flush=True,
        )
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply every run's size")
    parser.add_argument("abuses", nargs="*", help=f"some of {', '.join(ABUSES)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.abuses) - set(ABUSES)
    if unknown:
        parser.error(f"unknown abuse(s): {', '.join(sorted(unknown))}")
    print(f"{'abuse':10} {'held':>12} {'untrimmed':>12} {'limit':>11}")
    for name in args.abuses or ABUSES:
        await run_one(name, args.scale)


if __name__ == "__main__":
    trio.run(main)
