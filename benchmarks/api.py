"""Server API benchmark: what a backend pays per call, against a plain HTTP request.

Starts the demo app with the API on and no API rate limit in a subprocess on a free
loopback port (stopped by PID at the end), with one logged-in WebSocket subscriber on the
group, and measures from ``--threads`` threads:

* **healthz**: ``GET /healthz`` with ``http.client``: the floor of one request on its own
  connection;
* **publish**: ``trio_ws.api.Client.publish`` to a group with a subscriber: the key
  check, the body, JSON, the broker's seq and the fan-out on top of that floor.

Prints requests/s for each and the ratio publish / healthz (1.0: the API costs nothing
over a bare request). Usage: ``python benchmarks/api.py [--count 2000] [--threads 4]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from websockets.sync.client import connect

from trio_ws.api import Client

KEY = "bench-key"
SERVER = """
from trio_ws.demo.app import create_app
create_app(api_key={key!r}, api_rate=None).run("127.0.0.1", {port})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rate(threads: int, count: int, call: Callable[[], None]) -> float:
    """Requests per second, ``count`` in all, spread over ``threads`` threads."""
    per_thread = count // threads

    def work() -> None:
        for _ in range(per_thread):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers")
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(key=KEY, port=port)])
    try:
        api = Client(f"http://127.0.0.1:{port}", KEY)
        deadline = time.monotonic() + 15
        while True:
            try:
                api.info()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("api.py: trio-ws-demo did not start")
                time.sleep(0.05)

        def healthz() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()

        received = [0]
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "login", "name": "bench"}))
            ws.recv(timeout=5)
            ws.send(json.dumps({"type": "grouped", "action": "subscribe", "group": "bench"}))
            ws.recv(timeout=5)

            def drain() -> None:
                try:
                    while True:
                        ws.recv()
                        received[0] += 1
                except Exception:
                    return

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            rate(args.threads, min(args.count, 200), healthz)  # warm up
            base = rate(args.threads, args.count, healthz)
            publish = rate(
                args.threads, args.count, lambda: api.publish("bench", {"type": "bench"})
            )
        print(f"healthz: {base:,.0f} requests/s ({args.threads} threads, {args.count} requests)")
        print(f"publish: {publish:,.0f} requests/s (subscriber received {received[0]:,})")
        print(f"ratio publish/healthz: {publish / base:.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
