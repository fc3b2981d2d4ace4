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
in one file, with a client that counts bytes instead of parsing timestamps. Needs the
``bench`` extra (psutil).

A server of your own, already running: ``python benchmarks/fanout.py --url ws://host:port
[--sub-path /sub] [--pub-path /pub] [--server-pid PID]`` measures it alone. It must speak
the wsbench protocol: every message received on the publisher's path goes, unchanged and
uncompressed, to every connection on the subscribers' path (``wsbench_server.py`` does).
Without ``--server-pid`` (psutil) the paced run reports fan-out times but no server CPU.
The client's subscribers count bytes and answer no ping: a server that pings connections
that never send (trio_ws does after 20 s by default; ``wsbench_server.py`` does not) spoils
runs longer than that.
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
from typing import Any

from _tools import Progress, Target, need, note, ws_url

psutil: Any = None  # imported in main(): --help and --url work without the bench extra

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


def handshake(path: str, target: Target) -> bytes:
    return target.handshake(base64.b64encode(os.urandom(16)).decode(), path)


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
    def __init__(self, target: Target, subs: int, tls: Any = None) -> None:
        self.target = target
        self.tls = tls
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
        host = self.target.host
        transport, _ = await loop.create_connection(
            lambda: proto,
            host,
            self.target.port,
            ssl=self.tls,
            server_hostname=host if self.tls else None,
        )
        transport.write(handshake(path, self.target))
        return transport

    async def connect(self, sub_path: str = "/sub", pub_path: str = "/pub") -> None:
        sem = asyncio.Semaphore(100)

        async def one() -> None:
            async with sem:
                sub = Sub(self)
                await self.open(sub_path, sub)
                await sub.open
                self.subs.append(sub)

        await asyncio.gather(*(one() for _ in range(self.nsubs)))
        self.pub = Sub(self)
        self.pub_transport = await self.open(pub_path, self.pub)
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


async def measure(target: Target, pid: int | None, args: argparse.Namespace) -> dict[str, float]:
    bench = Bench(target, args.subs, args.tls)
    note(f"  {target.host}:{target.port}: connecting {args.subs} subscribers")
    await bench.connect(args.sub_path, args.pub_path)
    proc = psutil.Process(pid) if pid is not None else None
    n = len(bench.subs)
    # burst
    elapsed = await bench.expect(args.msgs, [client_frame(payload(i)) for i in range(args.msgs)])
    burst = n * args.msgs / elapsed
    await asyncio.sleep(0.3)
    # paced
    for i in range(args.paced_warmup):
        await bench.expect(1, [client_frame(payload(i))])
        await asyncio.sleep(args.gap)
    cpu0 = sum(proc.cpu_times()[:2]) if proc is not None else 0.0
    times = []
    for i in range(args.paced):
        times.append(await bench.expect(1, [client_frame(payload(i))]))
        await asyncio.sleep(args.gap)
        if args.paced >= 500 and (i + 1) % 250 == 0:
            note(f"    paced {i + 1}/{args.paced}")
    cpu = sum(proc.cpu_times()[:2]) - cpu0 if proc is not None else float("nan")
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
    mine = parser.add_argument_group("a running server of your own")
    mine.add_argument("--url", type=ws_url, help="measure this server (ws://host:port) alone")
    mine.add_argument("--sub-path", default="/sub", help="where subscribers connect")
    mine.add_argument("--pub-path", default="/pub", help="where the publisher connects")
    mine.add_argument("--server-pid", type=int, help="its process, for CPU per delivery (psutil)")
    mine.add_argument("--insecure", action="store_true", help="wss:// without certificate checks")
    args = parser.parse_args()
    if args.url is None and (args.server_pid is not None or args.insecure):
        parser.error("--server-pid and --insecure need --url")
    global psutil
    if args.url is None or args.server_pid is not None:
        psutil = need("psutil", "measuring server CPU")
    args.tls = args.url.ssl_context(verify=not args.insecure) if args.url else None
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and args.url is None
    if pin:
        os.sched_setaffinity(0, {1})
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.url is not None:
        try:
            run_url(args)
        except (OSError, ConnectionError, TimeoutError) as exc:
            sys.exit(f"fanout.py: {args.url.url}: {exc!r}")
        return
    servers = ["websockets", "trio_ws"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    progress = Progress(args.reps * len(servers))
    for rep in range(args.reps):
        for name in servers if rep % 2 == 0 else servers[::-1]:
            port = free_port()
            proc = start(name, port, pin)
            target = ws_url(f"ws://127.0.0.1:{port}/")
            try:
                result = asyncio.run(measure(target, proc.pid, args))
            finally:
                os.killpg(proc.pid, 15)
                proc.wait()
            results[name].append(result)
            progress.step(
                f"rep {rep + 1} {name:>10}: burst {result['burst']:>9,.0f} deliv/s, "
                f"paced {result['paced_us']:.1f} µs/deliv"
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


def run_url(args: argparse.Namespace) -> None:
    """Burst and paced fan-out through one running server."""
    target: Target = args.url
    runs = []
    progress = Progress(args.reps)
    for rep in range(args.reps):
        result = asyncio.run(measure(target, args.server_pid, args))
        runs.append(result)
        progress.step(
            f"rep {rep + 1}: burst {result['burst']:>9,.0f} deliv/s, paced fan-out p50 "
            f"{result['paced_p50_ms']:.1f} ms"
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    cpu = f"{med['paced_us']:.1f}" if args.server_pid is not None else "n/a"
    print(
        f"\n{target.url}: {args.subs} subscribers, 64-byte messages, median of {args.reps} runs\n"
    )
    print("| burst deliveries/s | paced server CPU µs/delivery | paced fan-out p50 / p99 ms |")
    print("|---|---|---|")
    print(
        f"| {med['burst']:,.0f} | {cpu} | {med['paced_p50_ms']:.1f} / {med['paced_p99_ms']:.1f} |"
    )


if __name__ == "__main__":
    main()
