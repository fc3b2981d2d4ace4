"""Echo benchmark: trio_ws against websockets (asyncio), trio-websocket and a raw Trio TCP echo.

Starts four echo servers as subprocesses, each in a session of its own and pinned to core 0:

* ``trio_ws``: this repository's ``demos/echo_server.py``;
* ``websockets``: ``websockets.asyncio.server.serve`` (max_size 16 MiB, no compression);
* ``trio-websocket``: ``serve_websocket`` with an echo handler;
* ``trio TCP (raw)``: ``trio.serve_tcp`` echoing bytes, no WebSocket at all: the ceiling for
  any server built on Trio.

A compact asyncio client (plain ``asyncio.Protocol`` objects, pinned to core 1) measures:

* **idle**: open 50 warm connections, wait until the server is idle, read its RSS (psutil);
  open ``--idle-conns`` more (2,000), wait until idle again: RSS growth per connection, KiB.
* **echo C=1/50/500**: C connections, each sends a 32-byte text message (masked, a different
  random mask per frame, cycled from a pool of 64 prebuilt frames), waits for the echo and
  sends again; 1 s warm-up, then 2.5 s measured: round trips/s. The raw TCP server gets
  32 raw bytes instead.

Every repetition starts the servers fresh; each scenario then measures one server after the
other, in an order that rotates from one repetition to the next. The tables show the median
over ``--reps`` and the ratios of these medians, to websockets and to the raw Trio TCP echo.
The client's CPU share during the measured window is printed with each echo result, so a
client-bound measurement shows.

Usage: ``python benchmarks/echo.py [--reps 3] [--conns 1,50,500] [--idle-conns 2000]
[--quick] [--no-pin]``. Only 127.0.0.1 is used. The machine's noise is large: compare the
ratios of one run, not absolute numbers across runs. Needs the ``bench`` extra (psutil).

A server of your own, already running: ``python benchmarks/echo.py --url ws://host:port/path
[--conns 1,50,500] [--duration 30] [--message TEXT] [--any-reply] [--hello TEXT]
[--server-pid PID]`` runs the echo scenarios against it alone (wss:// too; ``--insecure``
skips certificate checks). ``--message`` is what each round trip sends (a text message;
the reply must echo it unless ``--any-reply``); ``--hello`` is sent once on each
connection, its reply awaited, before measuring (``{i}`` becomes the connection number),
e.g. a login: ``--hello '{"type": "login", "name": "bench{i}"}' --message '{"type":
"echo", "text": "hi"}' --any-reply`` for the demo app. With ``--server-pid`` (psutil) the
server's CPU share and its memory per idle connection are measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _tools import Progress, Target, need, note, ws_url

psutil: Any = None  # imported in main(): --help and --url work without the bench extra

ROOT = Path(__file__).resolve().parent.parent

WEBSOCKETS_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
async def handler(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass
async def main(port):
    async with serve(handler, "127.0.0.1", port, max_size=2**24, compression=None,
                     backlog=1024) as server:
        await server.serve_forever()
asyncio.run(main(int(sys.argv[1])))
"""

TRIO_WEBSOCKET_SERVER = """
import sys
from functools import partial
import trio
from trio_websocket import ConnectionClosed, serve_websocket
async def handler(request):
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass
trio.run(partial(serve_websocket, handler, "127.0.0.1", int(sys.argv[1]), ssl_context=None,
                 max_message_size=2**24))
"""

TRIO_TCP_SERVER = """
import sys
from functools import partial
import trio
async def handler(stream):
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
trio.run(partial(trio.serve_tcp, handler, int(sys.argv[1]), host="127.0.0.1", backlog=1024))
"""

# name -> (label, command after the interpreter, speaks WebSocket)
SERVERS: dict[str, tuple[str, list[str], bool]] = {
    "trio_ws": ("trio_ws", [str(ROOT / "demos" / "echo_server.py"), "--port"], True),
    "websockets": ("websockets (asyncio)", ["-c", WEBSOCKETS_SERVER], True),
    "trio-websocket": ("trio-websocket", ["-c", TRIO_WEBSOCKET_SERVER], True),
    "trio-tcp": ("trio TCP echo (raw, no WS)", ["-c", TRIO_TCP_SERVER], False),
}

SIZE = 32
PAYLOAD = b"0123456789abcdefghijklmnopqrstuv"
assert len(PAYLOAD) == SIZE
LINGER0 = struct.pack("ii", 1, 0)
POOL = 64


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def frame_head(opcode: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes([0x80 | opcode, mask_bit | n])
    if n < 0x10000:
        return bytes([0x80 | opcode, mask_bit | 126]) + struct.pack("!H", n)
    return bytes([0x80 | opcode, mask_bit | 127]) + struct.pack("!Q", n)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final masked frame with a fresh random mask."""
    key = os.urandom(4)
    return frame_head(opcode, len(payload), 0x80) + key + mask(payload, key)


def configure(payload: bytes) -> None:
    """What each round trip sends (``--message``), and the echo expected back."""
    global ECHO, FRAMES
    ECHO = frame_head(0x1, len(payload), 0) + payload  # the server's unmasked text frame
    FRAMES = [client_frame(0x1, payload) for _ in range(POOL)]


ECHO = b""
FRAMES: list[bytes] = []
configure(PAYLOAD)
LOCAL = ws_url("ws://127.0.0.1:0/echo")  # the local servers; each gets its own port


def handshake(target: Target) -> bytes:
    return target.handshake(base64.b64encode(os.urandom(16)).decode())


class State:
    def __init__(
        self, *, payload: bytes = PAYLOAD, check: bool = True, hello: str | None = None
    ) -> None:
        self.payload = payload
        self.check = check  # a reply must echo the message (else any message counts)
        self.hello = hello  # sent once after the handshake; "{i}": the connection number
        self.opened = 0
        self.count = 0  # completed round trips, all connections
        self.running = False
        self.inflight = 0
        self.bad = 0
        self.i = 0  # index into FRAMES
        self.drained = asyncio.Event()  # set when nothing is in flight after a stop

    def landed(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.drained.set()


class Conn(asyncio.Protocol):
    """One connection: optional WebSocket handshake, then one echo in flight at a time."""

    def __init__(self, st: State, target: Target, ws: bool) -> None:
        self.st = st
        self.target = target
        self.ws = ws
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.upgraded = not ws
        self.hello_pending = ws and st.hello is not None
        # The fast path below compares whole reads with the expected echo.
        self.expect = (ECHO if st.check else None) if ws else PAYLOAD
        self.frames = FRAMES if ws else [PAYLOAD] * POOL

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.write = transport.write
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)  # close with RST
        if self.ws:
            transport.write(handshake(self.target))
        else:
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))

    def fire(self) -> None:
        self.st.inflight += 1
        self.fire_again()

    def done(self) -> None:
        st = self.st
        st.count += 1
        if st.running:
            self.fire_again()
        else:
            st.landed()

    def fire_again(self) -> None:
        st = self.st
        st.i = i = (st.i + 1) & (POOL - 1)
        self.write(self.frames[i])

    def data_received(self, data: bytes) -> None:
        # Fast path: exactly one whole echo, nothing buffered (nearly every call).
        if data == self.expect and self.upgraded and not self.buf:
            st = self.st
            st.count += 1
            if st.running:
                st.i = i = (st.i + 1) & (POOL - 1)
                self.write(self.frames[i])
            else:
                st.landed()
            return
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(self.buf[:end].decode("latin-1")))
                return
            self.buf = self.buf[end + 4 :]
            self.upgraded = True
            if self.hello_pending:
                assert self.st.hello is not None
                self.st.opened += 1
                hello = self.st.hello.replace("{i}", str(self.st.opened))
                self.write(client_frame(0x1, hello.encode()))
            else:
                self.opened.set_result(None)
        if self.ws:
            self.parse_frames()
        else:
            while len(self.buf) >= SIZE:
                if self.buf[:SIZE] != PAYLOAD:
                    self.st.bad += 1
                self.buf = self.buf[SIZE:]
                self.done()

    def parse_frames(self) -> None:
        """The slow path: split, coalesced or control frames (ping, close)."""
        buf = self.buf
        while len(buf) >= 2:
            opcode, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                break
            payload, buf = buf[pos : pos + n], buf[pos + n :]
            if opcode == 0x9 and self.transport is not None:  # ping -> pong
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 0x8:
                self.st.bad += 1
            elif opcode in (0x1, 0x2):
                if self.hello_pending:  # the reply to --hello: now the connection is ready
                    self.hello_pending = False
                    self.opened.set_result(None)
                    continue
                if self.st.check and payload != self.st.payload:
                    self.st.bad += 1
                self.done()
        self.buf = buf

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Server:
    """Resource usage of a server process (and descendants, if any)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs())

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.procs())

    async def wait_idle(self, window: float = 0.25, threshold: float = 0.03) -> None:
        """Wait (at most 15 s) until the server uses < ``threshold`` of a core for ``window`` s."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            c0 = self.cpu()
            await asyncio.sleep(window)
            if (self.cpu() - c0) / window < threshold:
                return


class Unobserved:
    """A server whose process we cannot see (``--url`` without ``--server-pid``)."""

    def cpu(self) -> float:
        return 0.0

    async def wait_idle(self, window: float = 0.25, threshold: float = 0.03) -> None:
        await asyncio.sleep(window)


async def connect(target: Target, ws: bool, st: State, n: int, tls: Any = None) -> list[Conn]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(100)
    conns: list[Conn] = []

    async def one() -> None:
        async with sem:
            conn = Conn(st, target, ws)
            conns.append(conn)
            await loop.create_connection(
                lambda: conn,
                target.host,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls else None,
            )
            await asyncio.wait_for(conn.opened, 30)

    try:
        await asyncio.gather(*(one() for _ in range(n)))
    except BaseException:
        for conn in conns:
            conn.abort()
        raise
    return conns


async def idle(target: Target, ws: bool, server: Server, conns: int, opts: Options) -> float:
    st = opts.state()
    await server.wait_idle()
    warm = await connect(target, ws, st, 50, opts.tls)
    try:
        await server.wait_idle(window=0.5)
        rss0 = server.rss()
        more = await connect(target, ws, st, conns, opts.tls)
        try:
            await server.wait_idle(window=0.5)
            await asyncio.sleep(0.5)
            rss1 = server.rss()
        finally:
            for conn in more:
                conn.abort()
    finally:
        for conn in warm:
            conn.abort()
    return (rss1 - rss0) / conns / 1024


class Options:
    """How the client behaves: the message, the reply check, the hello, TLS."""

    def __init__(
        self,
        *,
        payload: bytes = PAYLOAD,
        check: bool = True,
        hello: str | None = None,
        tls: Any = None,
    ) -> None:
        self.payload = payload
        self.check = check
        self.hello = hello
        self.tls = tls

    def state(self) -> State:
        return State(payload=self.payload, check=self.check, hello=self.hello)


PROGRESS_EVERY = 5.0  # default seconds between progress lines inside a measured window


async def echo(
    target: Target,
    ws: bool,
    server: Server | Unobserved,
    conns: int,
    warmup: float,
    duration: float,
    opts: Options,
    progress_every: float = PROGRESS_EVERY,
) -> dict[str, float]:
    st = opts.state()
    await server.wait_idle()
    cs = await connect(target, ws, st, conns, opts.tls)
    try:
        st.running = True
        for conn in cs:
            conn.fire()
        await asyncio.sleep(warmup)
        n0, t0, c0, s0 = st.count, time.perf_counter(), time.process_time(), server.cpu()
        # A long window reports as it goes, so a run of minutes shows it is alive.
        end = t0 + duration
        last_n, last_t = n0, t0
        while (now := time.perf_counter()) < end:
            await asyncio.sleep(min(progress_every, end - now))
            if duration > progress_every * 1.5 and time.perf_counter() < end - progress_every / 10:
                t, n = time.perf_counter(), st.count
                note(
                    f"    {t - t0:5.0f} s of {duration:g}: {(n - last_n) / (t - last_t):,.0f} rt/s"
                )
                last_n, last_t = n, t
        n1, t1, c1, s1 = st.count, time.perf_counter(), time.process_time(), server.cpu()
        st.running = False
        try:
            await asyncio.wait_for(st.drained.wait(), 5)
        except TimeoutError:
            pass
    finally:
        for conn in cs:
            conn.abort()
    if st.bad or st.inflight:
        raise RuntimeError(f"{st.bad} bad echoes, {st.inflight} never answered")
    elapsed = t1 - t0
    return {
        "rt": (n1 - n0) / elapsed,
        "client_cpu": (c1 - c0) / elapsed,
        "server_cpu": (s1 - s0) / elapsed,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, port: int, pin: bool, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, *SERVERS[name][1], str(port)]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{name} server did not start:\n{log.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def fmt(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--conns", default="1,50,500", help="comma list of echo connection counts")
    parser.add_argument("--idle-conns", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=1.0, help="echo warm-up (s)")
    parser.add_argument("--duration", type=float, default=2.5, help="echo measured window (s)")
    parser.add_argument("--quick", action="store_true", help="1 rep, shorter windows")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--progress",
        type=float,
        default=PROGRESS_EVERY,
        metavar="SECONDS",
        help="a progress line this often inside a longer measured window (default 5)",
    )
    mine = parser.add_argument_group("a running server of your own")
    mine.add_argument(
        "--url", type=ws_url, help="measure this server (ws:// or wss://) instead of the four"
    )
    mine.add_argument("--message", help="text each round trip sends (default: 32 bytes)")
    mine.add_argument(
        "--any-reply", action="store_true", help="any message counts as the reply, not only an echo"
    )
    mine.add_argument("--hello", help="sent once per connection, reply awaited; {i}: its number")
    mine.add_argument("--server-pid", type=int, help="its process, for CPU and memory (psutil)")
    mine.add_argument("--insecure", action="store_true", help="wss:// without certificate checks")
    args = parser.parse_args()
    if args.url is None and any(
        (args.message, args.any_reply, args.hello, args.server_pid, args.insecure)
    ):
        parser.error("--message, --any-reply, --hello, --server-pid and --insecure need --url")
    global psutil
    if args.url is None or args.server_pid is not None:
        psutil = need("psutil", "measuring server CPU and memory")
    if args.quick:
        args.reps, args.warmup, args.duration = 1, 0.5, 1.0
    levels = [int(c) for c in args.conns.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.url is not None:
        try:
            run_url(args, levels)
        except (OSError, ConnectionError) as exc:
            sys.exit(f"echo.py: {args.url.url}: {exc}")
        return
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    names = list(SERVERS)
    scenarios = ["idle", *(f"C={c}" for c in levels)]
    results: dict[str, dict[str, list[float]]] = {n: {s: [] for s in scenarios} for n in names}
    client_cpu: dict[str, list[float]] = {n: [] for n in names}
    began = time.monotonic()
    progress = Progress(args.reps * len(scenarios) * len(names))
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as logs:
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
            try:
                for name in names:
                    port = free_port()
                    procs[name] = (start(name, port, pin, Path(logs) / f"{name}.log"), port)
                for scenario in scenarios:
                    for name in order:
                        proc, port = procs[name]
                        if proc.poll() is not None:
                            raise RuntimeError(f"{name} server exited: {proc.returncode}")
                        ws, server = SERVERS[name][2], Server(proc.pid)
                        target = LOCAL._replace(port=port, host_header=f"127.0.0.1:{port}")
                        opts = Options()
                        if scenario == "idle":
                            kib = asyncio.run(idle(target, ws, server, args.idle_conns, opts))
                            results[name][scenario].append(kib)
                            line = f"{kib:.1f} KiB/conn"
                        else:
                            c = int(scenario[2:])
                            r = asyncio.run(
                                echo(
                                    target,
                                    ws,
                                    server,
                                    c,
                                    args.warmup,
                                    args.duration,
                                    opts,
                                    args.progress,
                                )
                            )
                            results[name][scenario].append(r["rt"])
                            if c == max(levels):
                                client_cpu[name].append(r["client_cpu"])
                            line = (
                                f"{r['rt']:>9,.0f} rt/s  server CPU {r['server_cpu']:.2f}"
                                f"  client CPU {r['client_cpu']:.2f}"
                            )
                        progress.step(f"rep {rep + 1} {scenario:>6} {name:>14}: {line}")
            finally:
                for proc, _port in procs.values():
                    stop(proc)
    med = {n: {s: statistics.median(results[n][s]) for s in scenarios} for n in names}

    def table(base: str) -> None:
        head = f"| server | idle KiB/conn | {' | '.join(f'echo C={c} rt/s' for c in levels)} |"
        print(head)
        print("|---" * (len(scenarios) + 1) + "|")
        for name in names:
            cells = [f"{fmt(med[name][s])} ({med[name][s] / med[base][s]:.2f})" for s in scenarios]
            print(f"| {SERVERS[name][0]} | {' | '.join(cells)} |")

    print(
        f"\nEcho, {SIZE}-byte text messages; idle: {args.idle_conns} connections; "
        f"median of {args.reps} run(s), {args.duration:g} s measured after {args.warmup:g} s "
        f"warm-up\n"
    )
    print("Ratio to websockets:\n")
    table("websockets")
    print("\nRatio to the raw Trio TCP echo:\n")
    table("trio-tcp")
    shares = ", ".join(f"{n} {max(client_cpu[n]):.2f}" for n in names if client_cpu[n])
    print(f"\nClient CPU share at C={max(levels)} (max over runs): {shares}")
    print(f"Duration: {time.monotonic() - began:.0f} s")


def run_url(args: argparse.Namespace, levels: list[int]) -> None:
    """The echo scenarios (and idle memory, given its pid) against one running server."""
    target: Target = args.url
    payload = PAYLOAD if args.message is None else args.message.encode()
    configure(payload)
    opts = Options(
        payload=payload,
        check=not args.any_reply,
        hello=args.hello,
        tls=target.ssl_context(verify=not args.insecure),
    )
    server: Server | Unobserved = (
        Server(args.server_pid) if args.server_pid is not None else Unobserved()
    )
    scenarios = (["idle"] if args.server_pid is not None else []) + [f"C={c}" for c in levels]
    results: dict[str, list[dict[str, float]]] = {s: [] for s in scenarios}
    progress = Progress(args.reps * len(scenarios))
    note(
        f"{target.url}: {', '.join(scenarios)}; {args.reps} rep(s), {args.duration:g} s "
        f"measured after {args.warmup:g} s each"
    )
    began = time.monotonic()
    for rep in range(args.reps):
        for scenario in scenarios:
            if scenario == "idle":
                assert isinstance(server, Server)  # idle needs the RSS: only with --server-pid
                kib = asyncio.run(idle(target, True, server, args.idle_conns, opts))
                results[scenario].append({"value": kib})
                line = f"{kib:.1f} KiB/conn"
            else:
                c = int(scenario[2:])
                r = asyncio.run(
                    echo(target, True, server, c, args.warmup, args.duration, opts, args.progress)
                )
                results[scenario].append({"value": r["rt"], **r})
                line = f"{r['rt']:>9,.0f} rt/s  client CPU {r['client_cpu']:.2f}"
                if args.server_pid is not None:
                    line += f"  server CPU {r['server_cpu']:.2f}"
            progress.step(f"rep {rep + 1} {scenario:>6}: {line}")
    print(
        f"\n{target.url}: {len(payload)}-byte messages, median of {args.reps} run(s), "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up\n"
    )
    print("| scenario | result | client CPU | server CPU |")
    print("|---|--:|--:|--:|")
    for scenario in scenarios:
        runs = results[scenario]
        value = statistics.median(r["value"] for r in runs)
        if scenario == "idle":
            print(f"| idle, {args.idle_conns} connections | {value:.1f} KiB/conn | | |")
            continue
        client = max(r["client_cpu"] for r in runs)
        cpu = statistics.median(r["server_cpu"] for r in runs)
        server_cell = f"{cpu:.2f}" if args.server_pid is not None else "n/a"
        print(f"| echo C={scenario[2:]} | {value:,.0f} rt/s | {client:.2f} | {server_cell} |")
    busy = [s for s in scenarios if s != "idle" and max(r["client_cpu"] for r in results[s]) > 0.9]
    if busy:
        print(
            f"\nThe client used a whole core at {', '.join(busy)}: there the server may be "
            "faster than measured (run several clients, or on another machine)."
        )
    print(f"Duration: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
