"""Cross-node benchmark: ``trio-ws-demo --workers 2 --broker redis://`` on a Redis of its own.

Starts a ``redis-server`` on a free loopback port (no persistence) and the demo with two
workers joined by it, then measures, in one run:

* **routed round trip**: client A sends a ``routed`` message to B, B answers A with one;
  the time until A has the answer, for a pair on the same worker and a pair on different
  workers, alternating, so both see the same machine. p50 / p99 and the ratio cross / same.
* **connections and idle memory per node**: ``--conns`` clients log in and stay idle;
  each worker's share of them and its RSS growth per connection (psutil).
* **Redis operations**: from ``INFO commandstats`` and ``INFO stats`` before and after
  each phase: the commands (client calls, and the commands the scripts run) and the bytes
  to and from Redis per login, per routed message, per group subscribe and per group
  publish (two subscribers, one on each worker), less what Redis did per second over an
  idle interval before (the demo's ticker, the nodes' heartbeats).

Which worker holds a connection is read from the workers' sockets (psutil). Usage::

    python benchmarks/cross_node.py [--conns 2000] [--rounds 2000] [--reps 3]

Both processes are stopped by PID at the end (the demo with SIGTERM, which drains its
workers). Needs the ``bench`` extra (psutil, websockets) and ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _tools import need, note

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

psutil: Any = None  # imported in main(), so --help works without the bench extra
connect: Any = None


# No rate limit (the round trips are back to back), quiet logs.
DEMO_OPTIONS = ("--rate-limit", "off", "--log-level", "WARNING")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_info(port: int, section: str) -> dict[str, str]:
    from tests.redis_fixture import cli

    info: dict[str, str] = {}
    for line in cli(port, "INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key] = value
    return info


def redis_counts(port: int) -> dict[str, int]:
    """Calls per command so far, and the bytes Redis read and wrote."""
    counts = {
        key.removeprefix("cmdstat_"): int(value.split(",")[0].removeprefix("calls="))
        for key, value in redis_info(port, "commandstats").items()
    }
    stats = redis_info(port, "stats")
    counts["bytes in"] = int(stats["total_net_input_bytes"])
    counts["bytes out"] = int(stats["total_net_output_bytes"])
    cpu = redis_info(port, "cpu")
    seconds = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    counts["redis cpu us"] = round(seconds * 1e6)  # the server's own CPU time
    return counts


class Counter:
    """Redis's counts over one phase, less what the demo does by itself meanwhile (its
    ticker publishes, the nodes' heartbeats), measured over an idle interval first."""

    def __init__(self, port: int, idle_seconds: float = 3.0) -> None:
        self.port = port
        start, t0 = redis_counts(port), time.monotonic()
        time.sleep(idle_seconds)
        end, t1 = redis_counts(port), time.monotonic()
        self.background = {k: (end[k] - start.get(k, 0)) / (t1 - t0) for k in end}
        self.before: dict[str, int] = {}
        self.started = 0.0

    def start(self) -> None:
        self.before, self.started = redis_counts(self.port), time.monotonic()

    def per(self, count: int) -> dict[str, float]:
        after, elapsed = redis_counts(self.port), time.monotonic() - self.started
        result = {}
        for k in sorted(after):
            if k == "info":  # our own INFO calls
                continue
            value = after[k] - self.before.get(k, 0) - self.background.get(k, 0.0) * elapsed
            if round(value / count, 2):
                result[k] = max(0.0, value / count)
        return result


class Demo:
    """``trio-ws-demo --workers 2`` on its own Redis."""

    def __init__(self, redis_url: str, log: Path) -> None:
        self.port = free_port()
        self.log_path = log
        self.log = log.open("wb")  # its warnings, shown if a run fails
        demo = str(Path(sys.executable).with_name("trio-ws-demo"))
        self.proc = subprocess.Popen(
            [
                demo,
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--broker",
                redis_url,
                *DEMO_OPTIONS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        deadline = time.monotonic() + 30
        nodes: set[str] = set()
        while len(nodes) < 2:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the demo's two workers did not start (saw {nodes})")
            node = self.node()
            if node:
                nodes.add(node)
            time.sleep(0.05)
        self.workers = sorted(c.pid for c in psutil.Process(self.proc.pid).children())

    def node(self) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(json.loads(response.read())["broker"]["node"])
        except OSError:
            return None

    def worker_of(self, local_ports: list[int]) -> list[int]:
        """The index (0 or 1) of the worker holding each of our connections."""
        held: dict[int, int] = {}
        for index, pid in enumerate(self.workers):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and conn.laddr.port == self.port:
                    held[conn.raddr.port] = index
        return [held[p] for p in local_ports]

    def rss(self) -> list[int]:
        return [psutil.Process(pid).memory_info().rss for pid in self.workers]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: itself and workers
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Client:
    def __init__(self, ws: Any, name: str) -> None:
        self.ws = ws
        self.name = name

    @property
    def port(self) -> int:
        return int(self.ws.local_address[1])

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self) -> dict[str, Any]:
        try:
            return dict(json.loads(await asyncio.wait_for(self.ws.recv(), 10)))
        except TimeoutError:
            raise TimeoutError(f"{self.name} got nothing within 10 s") from None


async def log_in(url: str, names: list[str], parallel: int = 50) -> list[Client]:
    sem = asyncio.Semaphore(parallel)

    async def one(name: str) -> Client:
        async with sem:
            ws = await connect(url, compression=None, max_queue=None, ping_interval=None)
            client = Client(ws, name)
            await client.send({"type": "login", "name": name})
            answer = await client.recv()
            if answer.get("type") != "welcome":
                raise RuntimeError(f"login of {name} refused: {answer}")
            return client

    return list(await asyncio.gather(*(one(n) for n in names)))


async def round_trip(a: Client, b: Client) -> float:
    start = time.perf_counter()
    await a.send({"type": "routed", "to": b.name, "text": "ping"})
    try:
        got = await b.recv()
    except TimeoutError:
        answer = await asyncio.wait_for(a.ws.recv(), 1)  # an error for the sender?
        raise AssertionError(f"{b.name} never got the message; {a.name} got {answer}") from None
    assert got == {"type": "routed", "from": a.name, "text": "ping"}, got
    await b.send({"type": "routed", "to": a.name, "text": "pong"})
    got = await a.recv()
    assert got["text"] == "pong", got
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


async def one_run(
    demo: Demo, counter: Counter, args: argparse.Namespace, rep: int
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    # Pairs: enough clients that each worker has two.
    clients: list[Client] = []
    by_worker: dict[int, list[Client]] = {0: [], 1: []}
    batch = 0
    while min(len(v) for v in by_worker.values()) < 2:
        new = await log_in(demo.url, [f"r{rep}p{batch}c{i}" for i in range(8)])
        batch += 1
        clients += new
        for client, worker in zip(new, demo.worker_of([c.port for c in new]), strict=True):
            by_worker[worker].append(client)
        if batch > 20:
            raise RuntimeError("the kernel put every connection on one worker")
    same = (by_worker[0][0], by_worker[0][1])
    cross = (by_worker[0][0], by_worker[1][0])
    for pair in (same, cross):  # warm-up
        for _ in range(20):
            await round_trip(*pair)
    times: dict[str, list[float]] = {"same": [], "cross": []}
    counter.start()
    for _ in range(args.rounds):
        times["same"].append(await round_trip(*same))
        times["cross"].append(await round_trip(*cross))
    result["routed ops"] = counter.per(4 * args.rounds)
    for kind, values in times.items():
        result[f"{kind} p50"] = pct(values, 0.5) * 1e3
        result[f"{kind} p99"] = pct(values, 0.99) * 1e3

    # Group subscribe and publish: every client but the publisher subscribes (both workers).
    group = f"bench{rep}"
    publisher = by_worker[0][0]
    subs = [c for c in clients if c is not publisher]
    counter.start()
    for sub in subs:
        await sub.send({"type": "grouped", "action": "subscribe", "group": group})
        assert (await sub.recv())["type"] == "subscribed"
    await asyncio.sleep(0.2)  # the presence updates, sent in the background
    result["subscribe ops"] = counter.per(len(subs))
    counter.start()
    for i in range(args.rounds):
        await publisher.send({"type": "grouped", "action": "publish", "group": group, "text": "x"})
        for sub in subs:
            got = await sub.recv()
            assert got["seq"] == i + 1, got
    result["publish ops"] = counter.per(args.rounds)
    for client in clients:
        await client.ws.close()

    # Idle connections, logged in.
    await asyncio.sleep(1.5)  # the closed ones are gone and their names released
    rss0 = demo.rss()
    counter.start()
    idle = await log_in(demo.url, [f"r{rep}i{i}" for i in range(args.conns)])
    result["login ops"] = counter.per(args.conns)
    await asyncio.sleep(1.0)
    rss1 = demo.rss()
    # Idle: what the logged-in connections cost Redis per second (the names' leases).
    counter.start()
    await asyncio.sleep(args.idle_seconds)
    result["idle ops"] = {
        k: v / args.idle_seconds for k, v in counter.per(args.conns).items() if v > 0
    }
    held = demo.worker_of([c.port for c in idle])
    for worker in (0, 1):
        n = held.count(worker)
        result[f"node{worker} conns"] = n
        result[f"node{worker} KiB/conn"] = (rss1[worker] - rss0[worker]) / 1024 / n if n else 0.0
    for client in idle:
        await client.ws.close()
    await asyncio.sleep(1.5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=2000, help="idle logged-in connections")
    parser.add_argument("--rounds", type=int, default=2000, help="round trips per pair")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--idle-seconds", type=float, default=7.0, help="idle window (two heartbeats: 3.3 s each)"
    )
    args = parser.parse_args()
    if args.conns > 1800:
        # The demo lets one address hold 1,000 connections per worker, and the kernel
        # spreads them over the two at random.
        parser.error("--conns above 1800 would hit the per-address limit on one worker")
    global psutil, connect
    psutil = need("psutil", "reading the workers' memory and sockets")
    connect = need("websockets.asyncio.client", "the clients").connect
    from tests.redis_fixture import start_redis

    runs: list[dict[str, Any]] = []
    with start_redis() as redis:
        demo = Demo(redis.url, Path(redis.directory) / "demo.log")
        try:
            counter = Counter(redis.port)
            for rep in range(args.reps):
                note(f"rep {rep + 1}/{args.reps}")
                try:
                    runs.append(asyncio.run(one_run(demo, counter, args, rep)))
                except (TimeoutError, AssertionError) as exc:
                    sys.exit(f"cross_node.py: {exc!r}; the demo's log ends:\n{demo.log_tail()}")
        finally:
            demo.stop()
    report(runs, args)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"\ncross_node.py: 2 workers on one Redis, median of {len(runs)} runs")
    print(f"routed round trip ({args.rounds} per pair and run), ms:")
    print("| pair | p50 | p99 |\n|---|---|---|")
    for kind in ("same", "cross"):
        print(f"| {kind} worker | {med(kind + ' p50'):.3f} | {med(kind + ' p99'):.3f} |")
    ratios = [r["cross p50"] / r["same p50"] for r in runs]
    ratios99 = [r["cross p99"] / r["same p99"] for r in runs]
    print(
        f"ratio cross / same: p50 {statistics.median(ratios):.2f}x, "
        f"p99 {statistics.median(ratios99):.2f}x (each run's own ratio, median)"
    )
    print(f"\nidle logged-in connections ({args.conns} in all):")
    print("| node | connections | KiB/conn, first run (fresh workers) | KiB/conn, median |")
    print("|---|---|---|---|")
    for worker in (0, 1):
        first = runs[0][f"node{worker} KiB/conn"]
        print(
            f"| {worker} | {med(f'node{worker} conns'):.0f} | {first:.2f} |"
            f" {med(f'node{worker} KiB/conn'):.2f} |"
        )
    print(
        "\nRedis per operation (commands called, bytes to and from Redis, redis-server CPU"
        " µs), from the last run:"
    )
    for what in ("login", "routed", "subscribe", "publish", "idle"):
        per = runs[-1][f"{what} ops"]
        if what == "idle":
            what = "idle, per logged-in connection and second"
        parts = ", ".join(
            f"{k} {v:.0f}" if k.startswith(("bytes", "redis cpu")) else f"{k} {v:.2f}"
            for k, v in per.items()
        )
        print(f"- {what}: {parts}")


if __name__ == "__main__":
    main()
