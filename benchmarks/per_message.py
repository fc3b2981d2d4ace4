"""Per-operation costs of the echo path, without the kernel: what one message costs in Python.

Each figure is the best of 7 passes (the machine's noise only ever adds time):

* ``connection``: ``await conn.receive()`` then ``await conn.send(message)`` on a
  :class:`~trio_ws.WebSocketConnection` over a socket stand-in whose ``recv`` returns the
  next masked frame at once and whose ``send`` takes everything: the runtime's whole
  per-message path (the read's checkpoint included), minus the system calls;
* ``protocol receive``: ``receive_data(frame)`` + ``take_received()`` on the sans-IO core;
* ``protocol send``: ``send_text()`` + ``data_to_send()``;
* ``parse``: :class:`~trio_ws.protocol._frames.FrameParser` ``feed()`` + ``next_parts()``.

Sizes: ``--size`` bytes of payload (32 by default: the wsbench echo; text below 1,000
bytes, binary from there; a frame over 64 KiB arrives in 64 KiB reads). Several trees
are compared in one run with ``--tree NAME=PATH`` (each in a process of its own, the
order alternating)::

    python benchmarks/per_message.py
    python benchmarks/per_message.py --tree before=/tmp/wt-old --tree now=. --size 1048576

A tree's ``connection`` figure needs its compiled speedup built in place to be compared
fairly (``python setup.py build_ext --inplace``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def measure(size: int) -> dict[str, float]:
    """Run in the tree under test (on sys.path first); return ns per operation."""
    import trio

    from trio_ws._connection import WebSocketConnection
    from trio_ws._transport import SocketTransport
    from trio_ws.protocol._connection import WebSocketProtocol
    from trio_ws.protocol._frames import FrameParser, Role, encode_frame

    frame = encode_frame(1 if size < 1000 else 2, b"x" * size, mask=True)
    take = getattr(WebSocketProtocol, "take_received", WebSocketProtocol.events_received)

    class Sock:
        """recv: the next piece of the frame, 64 KiB at most; send: takes it all."""

        family = 1
        pos = 0

        def recv(self, max_bytes: int) -> bytes:
            n = min(max_bytes, 65536)
            if len(frame) <= n:
                return frame
            chunk = frame[self.pos : self.pos + n]
            self.pos = 0 if self.pos + n >= len(frame) else self.pos + n
            return chunk

        def send(self, data: Any) -> int:
            return len(data)

        def sendmsg(self, parts: list[Any]) -> int:
            return sum(map(len, parts))

        def setblocking(self, flag: bool) -> None:
            pass

        def fileno(self) -> int:
            return -1

    count = 20_000 if size < 1000 else 2_000 if size <= 65536 else 200
    out: dict[str, float] = {}

    async def connection() -> None:
        conn = WebSocketConnection(
            SocketTransport(Sock()),  # type: ignore[arg-type]
            WebSocketProtocol(Role.SERVER, max_message_size=1 << 24),
        )
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(count):
                await conn.send(await conn.receive())
            best = min(best, (time.perf_counter() - start) / count)
        out["connection"] = best * 1e9

    trio.run(connection)

    proto = WebSocketProtocol(Role.SERVER, max_message_size=1 << 24)
    parser = FrameParser(expect_masked=True, allow_rsv1=False, max_frame_size=1 << 24)
    next_parts = getattr(parser, "next_parts", parser.next_frame)
    text = "x" * size

    def receive() -> None:
        proto.receive_data(frame)
        take(proto)

    def send() -> None:
        proto.send_text(text)
        proto.data_to_send()

    def parse() -> None:
        parser.feed(frame)
        next_parts()

    for name, fn in (("protocol receive", receive), ("protocol send", send), ("parse", parse)):
        n = max(count // 2, 100)
        out[name] = min(timeit.repeat(fn, number=n, repeat=7)) / n * 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.size)))
        return
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("trio_ws", str(HERE))]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(args.rounds):
        for name, path in trees:
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
            run = subprocess.run(
                [sys.executable, __file__, "--child", "1", "--size", str(args.size)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[name].append(json.loads(run.stdout))
    ops = list(next(iter(results.values()))[0])
    print(f"ns per operation, {args.size}-byte messages (best of 7 passes; median of processes)")
    print(f"| tree | {' | '.join(ops)} |")
    print(f"|---|{'---|' * len(ops)}")
    for name, runs in results.items():
        cells = " | ".join(f"{statistics.median(r[op] for r in runs):,.0f}" for op in ops)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
