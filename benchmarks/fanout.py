"""Fan-out benchmark: trio_ws broadcast queues against ``websockets.broadcast()`` on asyncio.

Starts two servers as subprocesses (this folder's ``wsbench_server.py`` and a minimal
``websockets`` asyncio server using ``broadcast()``), connects N subscribers and one
publisher to each with a compact asyncio client, and measures, one server after the other:

* **burst**: M messages of 64 bytes published back to back; deliveries/s =
  N x M / (last delivery - first publish).
* **paced**: one message at a time, the next only when every subscriber has the current
  one (then a 10 ms pause); server CPU time per delivery (psutil) and fan-out time.

Usage: ``python benchmarks/fanout.py [--subs 1000] [--msgs 200] [--paced 300] [--reps 3]``.
The servers are pinned to core 0 and the client to core 1 when there are two cores.
The numbers of ``../shared/wsbench`` are the reference; this reproduces its headline figure
in one file, with a client that counts bytes instead of parsing timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent

WEBSOCKETS_SERVER = """
import asyncio, sys
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed
SUBS = set()
async def handler(ws):
    try:
        if ws.request.path == "/sub":
            SUBS.add(ws)
            try:
                await ws.wait_closed()
            finally:
                SUBS.discard(ws)
        else:
            async for msg in ws:
                broadcast(SUBS, msg)
    except ConnectionClosed:
        pass
async def main(port):
    async with serve(handler, "127.0.0.1", port, backlog=1024) as server:
        await server.serve_forever()
asyncio.run(main(int(sys.argv[1])))
"""

SIZE = 64
FRAME = 2 + SIZE  # an unmasked server text frame of 64 bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def handshake(path: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (payload < 126 bytes) with a zero mask: XOR leaves it as is."""
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Sub(asyncio.Protocol):
    """Counts the bytes after the 101 response; frames are all FRAME bytes long."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.head = b""
        self.open = asyncio.get_running_loop().create_future()
        self.count = 0
        self.target = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.open.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = self.head[end + 4 :]
            self.open.set_result(None)
        self.count += len(data)
        if self.target and self.count >= self.target:
            self.target = 0
            self.bench.arrived()


class Bench:
    def __init__(self, port: int, subs: int) -> None:
        self.port = port
        self.nsubs = subs
        self.subs: list[Sub] = []
        self.pending = 0
        self.done: asyncio.Future[None] | None = None
        self.last = 0.0

    def arrived(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.last = time.perf_counter()
            assert self.done is not None
            self.done.set_result(None)

    async def open(self, path: str, proto: asyncio.Protocol) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: proto, "127.0.0.1", self.port)
        transport.write(handshake(path, self.port))
        return transport

    async def connect(self) -> None:
        sem = asyncio.Semaphore(100)

        async def one() -> None:
            async with sem:
                sub = Sub(self)
                await self.open("/sub", sub)
                await sub.open
                self.subs.append(sub)

        await asyncio.gather(*(one() for _ in range(self.nsubs)))
        self.pub = Sub(self)
        self.pub_transport = await self.open("/pub", self.pub)
        await self.pub.open
        # Sync: publish W messages until every subscriber has one (registration race).
        while min(s.count for s in self.subs) == 0:
            self.pub_transport.write(client_frame(b"W".ljust(SIZE, b"x")))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

    async def expect(self, messages: int, send: list[bytes]) -> float:
        """Send ``send`` frames; return when every subscriber got ``messages`` more."""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.pending = len(self.subs)
        for sub in self.subs:
            sub.count = 0
            sub.target = messages * FRAME
        start = time.perf_counter()
        for frame in send:  # one write each, back to back, as a real publisher would
            self.pub_transport.write(frame)
        await asyncio.wait_for(self.done, 60)
        return self.last - start

    def close(self) -> None:
        for sub in [*self.subs, self.pub]:
            if sub.transport is not None:
                sub.transport.abort()


def payload(seq: int) -> bytes:
    return f"M{seq:07d} {time.time_ns():019d} ".encode().ljust(SIZE, b"x")


async def measure(port: int, pid: int, args: argparse.Namespace) -> dict[str, float]:
    bench = Bench(port, args.subs)
    await bench.connect()
    proc = psutil.Process(pid)
    n = len(bench.subs)
    # burst
    elapsed = await bench.expect(args.msgs, [client_frame(payload(i)) for i in range(args.msgs)])
    burst = n * args.msgs / elapsed
    await asyncio.sleep(0.3)
    # paced
    for i in range(args.paced_warmup):
        await bench.expect(1, [client_frame(payload(i))])
        await asyncio.sleep(args.gap)
    cpu0 = sum(proc.cpu_times()[:2])
    times = []
    for i in range(args.paced):
        times.append(await bench.expect(1, [client_frame(payload(i))]))
        await asyncio.sleep(args.gap)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    bench.close()
    times.sort()
    return {
        "burst": burst,
        "paced_us": cpu / (n * args.paced) * 1e6,
        "paced_p50_ms": times[len(times) // 2] * 1e3,
        "paced_p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
    }


def start(name: str, port: int, pin: bool) -> subprocess.Popen[bytes]:
    if name == "trio_ws":
        cmd = [sys.executable, str(HERE / "wsbench_server.py"), "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", WEBSOCKETS_SERVER, str(port)]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--msgs", type=int, default=200, help="burst messages")
    parser.add_argument("--paced", type=int, default=300, help="paced messages measured")
    parser.add_argument("--paced-warmup", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.01, help="pause after each fan-out (s)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = ["websockets", "trio_ws"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for rep in range(args.reps):
        for name in servers if rep % 2 == 0 else servers[::-1]:
            port = free_port()
            proc = start(name, port, pin)
            try:
                result = asyncio.run(measure(port, proc.pid, args))
            finally:
                os.killpg(proc.pid, 15)
                proc.wait()
            results[name].append(result)
            print(
                f"rep {rep + 1} {name:>10}: burst {result['burst']:>9,.0f} deliv/s, "
                f"paced {result['paced_us']:.1f} µs/deliv",
                file=sys.stderr,
            )
    med = {
        n: {k: statistics.median(r[k] for r in results[n]) for k in results[n][0]} for n in servers
    }
    base = med["websockets"]
    print(
        f"\n{args.subs} subscribers, 64-byte messages, median of {args.reps} runs (ratio to websockets)\n"
    )
    print(
        "| server | burst deliveries/s | paced server CPU µs/delivery | paced fan-out p50 / p99 ms |"
    )
    print("|---|---|---|---|")
    for name in servers:
        m = med[name]
        print(
            f"| {name} | {m['burst']:,.0f} ({m['burst'] / base['burst']:.2f}) "
            f"| {m['paced_us']:.1f} ({m['paced_us'] / base['paced_us']:.2f}) "
            f"| {m['paced_p50_ms']:.1f} / {m['paced_p99_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
