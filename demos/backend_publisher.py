"""A plain WSGI backend (Flask or Django in spirit, stdlib only) that publishes to the
trio_ws nodes' queues straight through their Redis (trio_ws.publisher.RedisPublisher).

    redis-server --port 6379 &
    trio-ws-demo --port 8000 --broker redis://127.0.0.1:6379 &
    python demos/backend_publisher.py --redis redis://127.0.0.1:6379 --port 8080
    curl -d 'text=deployed v2' http://127.0.0.1:8080/announce/lobby
    # -> {"group": "lobby", "seq": 1}; every subscriber of "lobby" on every node gets
    #    {"type": "grouped", "group": "lobby", "from": "backend", "text": "deployed v2", "seq": 1}

Or once, from a script or a cron job: ``python demos/backend_publisher.py --redis ... --once
lobby 'backup done'``.

A WSGI app is synchronous and the publisher is async, so the app keeps one asyncio event
loop in a background thread, with one publisher (one pool of Redis connections) in it,
and each request hands its publish to that loop. A Django or Flask view does the same
(``BRIDGE.publish(...)`` below).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import trio_ws
from trio_ws.publisher import RedisPublisher

MAX_BODY = 64 << 10  # bytes of a request body read at most


class PublisherThread:
    """One asyncio loop in a daemon thread, holding one :class:`RedisPublisher`."""

    def __init__(self, url: str) -> None:
        self._ready: Future[None] = Future()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._publisher: RedisPublisher | None = None
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)  # raises if Redis cannot be reached

    def _run(self, url: str) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(url))

    async def _main(self, url: str) -> None:
        self._stop = asyncio.Event()
        try:
            async with RedisPublisher(url) as publisher:
                self._publisher = publisher
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                raise

    def publish(self, group: str, message: dict[str, Any], timeout: float = 5.0) -> int:
        """Publish from any thread; the seq the message got."""
        assert self._publisher is not None
        future = asyncio.run_coroutine_threadsafe(
            self._publisher.publish(group, message), self._loop
        )
        return future.result(timeout)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def announce_app(bridge: PublisherThread) -> Callable[..., Iterable[bytes]]:
    """``POST /announce/<group>`` with a form field ``text``: publish it to the group."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def answer(status: str, body: dict[str, Any]) -> list[bytes]:
            data = json.dumps(body).encode()
            start_response(
                status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
            )
            return [data]

        path = environ.get("PATH_INFO", "")
        if not path.startswith("/announce/"):
            return answer("404 Not Found", {"error": "POST /announce/<group>"})
        if environ["REQUEST_METHOD"] != "POST":
            return answer("405 Method Not Allowed", {"error": "POST only"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return answer("413 Content Too Large", {"error": f"at most {MAX_BODY} bytes"})
        form = urllib.parse.parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
        group = path.removeprefix("/announce/")
        text = form.get("text", [""])[0]
        if not text:
            return answer("400 Bad Request", {"error": "a non-empty 'text' field is required"})
        message = {"type": "grouped", "group": group, "from": "backend", "text": text}
        try:
            seq = bridge.publish(group, message)
        except trio_ws.QueueError as exc:
            return answer("400 Bad Request", {"error": exc.message})
        except trio_ws.BrokerUnavailable:
            return answer("503 Service Unavailable", {"error": "Redis is unavailable"})
        return answer("200 OK", {"group": group, "seq": seq})

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"backend: {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the nodes' broker URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--once", nargs=2, metavar=("GROUP", "TEXT"), help="publish and exit")
    args = parser.parse_args(argv)
    if args.once:
        group, text = args.once

        async def once() -> int:
            async with RedisPublisher(args.redis) as publisher:
                message = {"type": "grouped", "group": group, "from": "backend", "text": text}
                return await publisher.publish(group, message)

        print(json.dumps({"group": group, "seq": asyncio.run(once())}), flush=True)
        return 0
    bridge = PublisherThread(args.redis)
    try:
        with make_server(
            args.host, args.port, announce_app(bridge), handler_class=_QuietHandler
        ) as httpd:
            print(f"backend on http://{args.host}:{httpd.server_port}/announce/<group>", flush=True)
            httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
