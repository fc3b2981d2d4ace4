"""Server memory of permessage-deflate connections: trio_ws against ``websockets``.

What is measured
----------------
Each server runs in its own process (an echo server: every message comes back as it was
sent); the client is the ``websockets`` asyncio client in this process, with its default
``compression="deflate"`` offer (``permessage-deflate; client_max_window_bits``). The
server's RSS is read with psutil after it has gone quiet (no CPU for half a second).

``idle``
    50 warm connections are opened first (each sends one message), then ``--conns`` more
    (2,000) that send nothing: RSS growth per new connection, KiB.
``after 1 msg``
    Each of those connections then sends one 1 KiB text message and reads the echo, so
    every compressor and decompressor a server keeps has been used: RSS growth since the
    same starting point, per connection.
``churn``
    All are closed, then ``--churn`` connections (5,000) in turn connect, send one message,
    read the echo and close, 20 at a time. RSS before and after, with no connection open:
    what the allocator keeps of the memory those connections used.

``--cpu``
    Instead of the above: microseconds per message a server's ``WebSocketProtocol`` spends
    with the parameters it negotiates with that client, sending (compressing) and receiving
    (inflating) text of a few sizes, median of 5 runs, no sockets.

Servers: ``trio_ws`` (defaults of :class:`~trio_ws.ServerConfig`), ``websockets`` (asyncio
``serve`` with its defaults, ``compression="deflate"``: server window 12 bits, client
window 12 bits when offered, ``memLevel=5``), and ``trio_ws (no deflate)``, the same
trio_ws server to a client that offers no compression, for reference.

Usage::

    python benchmarks/deflate_memory.py [--conns 2000] [--churn 5000]
                                        [--servers trio_ws,websockets,plain] [--cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from _tools import need

psutil = need("psutil", "reading the server's RSS")
websockets = need("websockets", "the client and the reference server")
from websockets.asyncio.client import connect  # noqa: E402

KIB = 1024
WARM = 50
# A 1 KiB message of the usual kind: JSON with repeating keys, some varying values.
MESSAGE = json.dumps(
    [
        {"id": i, "user": f"user{i * 7919 % 1000}", "text": "hello there", "ok": True}
        for i in range(16)
    ]
)[:1024]

SERVERS = {"trio_ws": "trio_ws", "websockets": "websockets", "plain": "trio_ws (no deflate)"}


# --- the servers, each run as ``python deflate_memory.py --serve KIND`` ------------------


def serve_trio_ws() -> None:
    import trio

    from trio_ws import ConnectionClosed, Server, ServerConfig, WebSocketConnection

    config = ServerConfig(
        max_connections=100_000,
        max_connections_per_address=100_000,
        max_pending=100_000,
        max_pending_per_address=100_000,
        ping_interval=None,
    )

    async def handler(conn: WebSocketConnection) -> None:
        try:
            while True:
                await conn.send(await conn.receive())
        except ConnectionClosed:
            pass

    async def main() -> None:
        server = Server(handler, config=config)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.serve, "127.0.0.1", 0)
            print(addresses[0][1], flush=True)

    trio.run(main)


def serve_websockets() -> None:
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, ping_interval=None, max_size=None) as server:
            print(next(iter(server.sockets)).getsockname()[1], flush=True)
            await server.serve_forever()

    asyncio.run(main())


# --- the client ---------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        target = "websockets" if kind == "websockets" else "trio_ws"
        self.popen = subprocess.Popen(
            [sys.executable, __file__, "--serve", target], stdout=subprocess.PIPE, text=True
        )
        assert self.popen.stdout is not None
        self.port = int(self.popen.stdout.readline())
        self.proc = psutil.Process(self.popen.pid)
        self.url = f"ws://127.0.0.1:{self.port}/"

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    async def quiet(self, window: float = 0.5) -> int:
        """Wait until the server used (almost) no CPU for ``window`` seconds; its RSS."""
        await asyncio.sleep(0.2)
        for _ in range(40):
            before = self.proc.cpu_times()
            await asyncio.sleep(window)
            after = self.proc.cpu_times()
            if (after.user + after.system) - (before.user + before.system) < 0.02:
                break
        return self.rss()

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait()


async def open_many(url: str, n: int, compression: str | None) -> list[Any]:
    conns: list[Any] = []
    for start in range(0, n, 100):
        batch = [
            connect(url, compression=compression, ping_interval=None, max_size=None)
            for _ in range(min(100, n - start))
        ]
        conns += await asyncio.gather(*batch)
    return conns


async def echo_all(conns: list[Any]) -> None:
    async def one(ws: Any) -> None:
        await ws.send(MESSAGE)
        assert await ws.recv() == MESSAGE

    for start in range(0, len(conns), 200):
        await asyncio.gather(*(one(ws) for ws in conns[start : start + 200]))


async def close_all(conns: list[Any]) -> None:
    for start in range(0, len(conns), 200):
        await asyncio.gather(*(ws.close() for ws in conns[start : start + 200]))


async def churn(url: str, n: int, compression: str | None, parallel: int = 20) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            async with connect(url, compression=compression, ping_interval=None) as ws:
                await ws.send(MESSAGE)
                assert await ws.recv() == MESSAGE

    await asyncio.gather(*(worker(n // parallel) for _ in range(parallel)))


async def measure(kind: str, conns: int, churns: int) -> dict[str, float]:
    server = ServerProcess(kind)
    compression = None if kind == "plain" else "deflate"
    try:
        warm = await open_many(server.url, WARM, compression)
        await echo_all(warm)
        if compression:
            ext = warm[0].response.headers.get("Sec-WebSocket-Extensions", "")
            print(f"  {SERVERS[kind]}: {ext or 'no extension'}", file=sys.stderr)
        rss0 = await server.quiet()
        many = await open_many(server.url, conns, compression)
        rss1 = await server.quiet()
        await echo_all(many)
        rss2 = await server.quiet()
        await close_all(many)
        await close_all(warm)
        rss3 = await server.quiet()
        started = time.perf_counter()
        await churn(server.url, churns, compression)
        elapsed = time.perf_counter() - started
        rss4 = await server.quiet()
    finally:
        server.stop()
    return {
        "idle": (rss1 - rss0) / conns / KIB,
        "after": (rss2 - rss0) / conns / KIB,
        "closed": rss3 / KIB / KIB,
        "churned": rss4 / KIB / KIB,
        "churn_s": elapsed,
    }


def _time_one(params: Any, peer: Any, text: str) -> tuple[float, float]:
    """Microseconds per message: a server sending ``text``, and receiving it from a client."""
    import statistics
    import timeit

    from trio_ws.protocol._connection import WebSocketProtocol
    from trio_ws.protocol._frames import Role

    number = max(200, 200_000 // len(text))
    client = WebSocketProtocol(Role.CLIENT, deflate=peer, max_message_size=None)
    for _ in range(number):
        client.send_text(text)
    stream = client.data_to_send()
    server = WebSocketProtocol(Role.SERVER, deflate=params, max_message_size=None)

    def send() -> None:
        server.send_text(text)
        server.data_to_send()

    receives = []
    for _ in range(5):
        # A new server each time: the stream refers to the client's earlier messages.
        fresh = WebSocketProtocol(Role.SERVER, deflate=params, max_message_size=None)
        started = time.perf_counter()
        fresh.receive_data(stream)
        events = fresh.events_received()
        receives.append(time.perf_counter() - started)
        assert len(events) == number
        assert events[-1].data == text
    sends = timeit.repeat(send, number=number, repeat=5)
    return (
        statistics.median(sends) / number * 1e6,
        statistics.median(receives) / number * 1e6,
    )


def cpu() -> None:
    """Time a server protocol's compressed sends and receives (see the docstring)."""
    from trio_ws import ServerConfig
    from trio_ws.protocol._deflate import client_offer, negotiate_client, negotiate_server
    from trio_ws.protocol._headers import parse_extensions

    config = ServerConfig()
    kwargs = {"server_no_context_takeover": config.server_no_context_takeover}
    if hasattr(config, "client_max_window_bits"):  # to time the build before it too
        kwargs["client_max_window_bits"] = config.client_max_window_bits
    params = negotiate_server(parse_extensions(client_offer()), **kwargs)
    assert params is not None
    peer = negotiate_client(parse_extensions(params.response_value())[0])
    print(f"negotiated: {params.response_value()}")
    print(f"{'size':>8} {'send us/msg':>12} {'receive us/msg':>15}")
    for size in (32, 1024, 64 * 1024):
        text = (MESSAGE * (size // len(MESSAGE) + 1))[:size]
        us_send, us_receive = _time_one(params, peer, text)
        print(f"{size:>8} {us_send:>12.2f} {us_receive:>15.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--churn", type=int, default=5000)
    parser.add_argument("--servers", default="trio_ws,websockets,plain")
    parser.add_argument("--serve", choices=["trio_ws", "websockets"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", action="store_true", help="time (de)compression instead")
    args = parser.parse_args()
    if args.cpu:
        return cpu()
    if args.serve == "trio_ws":
        return serve_trio_ws()
    if args.serve == "websockets":
        return serve_websockets()

    import trio_ws

    kinds = args.servers.split(",")
    print(
        f"Python {sys.version.split()[0]}, websockets {websockets.__version__}, trio_ws "
        f"{getattr(trio_ws, '__version__', '?')}, pid {os.getpid()}; "
        f"{args.conns} connections, churn {args.churn}",
        file=sys.stderr,
    )
    results = {kind: asyncio.run(measure(kind, args.conns, args.churn)) for kind in kinds}

    print(
        f"\n{'server':<22} {'idle KiB/conn':>14} {'after 1 msg':>12} "
        f"{'RSS closed MiB':>15} {'after churn':>12} {'churn s':>8}"
    )
    for kind, r in results.items():
        print(
            f"{SERVERS[kind]:<22} {r['idle']:>14.1f} {r['after']:>12.1f} "
            f"{r['closed']:>15.1f} {r['churned']:>12.1f} {r['churn_s']:>8.1f}"
        )
    if "trio_ws" in results and "websockets" in results:
        t, w = results["trio_ws"], results["websockets"]
        print(
            "\ntrio_ws / websockets: "
            f"idle {t['idle'] / w['idle']:.2f}, after 1 msg {t['after'] / w['after']:.2f}, "
            f"churn growth {t['churned'] - t['closed']:+.1f} MiB vs "
            f"{w['churned'] - w['closed']:+.1f} MiB"
        )


if __name__ == "__main__":
    main()
