"""Memory per idle logged-in connection: the demo app on the embedded memory broker.

Starts ``python -m trio_ws`` (the demo: login, rooms, the ticker) for each tree measured,
logs in 50 warm clients, waits until the server is quiet and reads its RSS (psutil), then
logs in ``--conns`` more (900: the demo admits 1,000 per address) and reads it again: RSS growth per connection, KiB. Each
client has sent its ``login`` and received its ``welcome``, so this is the cost of a
logged-in client, not of a bare WebSocket (wsbench's ``idle`` scenario measures that).

Trees are compared in one run, the order rotating between repetitions::

    python benchmarks/idle_memory.py                       # this tree, 3 repetitions
    python benchmarks/idle_memory.py --tree before=/tmp/wt-old --tree now=.

Only 127.0.0.1 is used. Needs the ``bench`` extra (psutil, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cross_node
from _tools import need
from cross_node import DEMO_OPTIONS, free_port, log_in

psutil = need("psutil", "to read the server's memory")
cross_node.connect = need("websockets.asyncio.client", "the clients").connect

HERE = Path(__file__).resolve().parent.parent


class DemoServer:
    """``python -m trio_ws`` from one tree, on a free port, in a session of its own."""

    def __init__(self, tree: Path) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_ws", "--port", str(self.port), *DEMO_OPTIONS],
            env=env,
            cwd=tree,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the demo from {tree} did not start") from None
                time.sleep(0.05)
        self.process = psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    async def wait_quiet(self, window: float = 0.5, threshold: float = 0.03) -> None:
        """Until the server uses under ``threshold`` of a core over ``window`` seconds."""
        for _ in range(40):
            before = self.process.cpu_times()
            await asyncio.sleep(window)
            after = self.process.cpu_times()
            if (after.user + after.system - before.user - before.system) / window < threshold:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def measure(tree: Path, conns: int, rep: int) -> float:
    server = DemoServer(tree)
    clients = []
    try:
        clients += await log_in(server.url, [f"w{rep}_{i}" for i in range(50)])
        await server.wait_quiet()
        before = server.rss()
        clients += await log_in(server.url, [f"c{rep}_{i}" for i in range(conns)])
        await server.wait_quiet()
        return (server.rss() - before) / 1024 / conns
    finally:
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a tree to measure (repeatable); default: this one",
    )
    parser.add_argument(
        "--conns",
        type=int,
        default=900,
        help="idle logged-in connections (the demo allows 1,000 per address)",
    )
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("trio_ws", str(HERE))]
    results: dict[str, list[float]] = {name: [] for name, _ in trees}
    for rep in range(args.reps):
        order = trees[rep % len(trees) :] + trees[: rep % len(trees)]
        for name, path in order:
            kib = asyncio.run(measure(Path(path).resolve(), args.conns, rep))
            results[name].append(kib)
            print(f"  rep {rep + 1}/{args.reps} {name}: {kib:.2f} KiB/conn", flush=True)
    print(f"\nidle logged-in connections ({args.conns}), demo app, memory broker:")
    print("| tree | KiB/conn (median) | min..max |")
    print("|---|---|---|")
    for name, values in results.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}..{max(values):.2f} |"
        )


if __name__ == "__main__":
    main()
