"""A trio_ws server speaking the wsbench protocol (../shared/wsbench/README.md).

Paths: ``/sub`` subscribes to one broadcast queue, every message received on ``/pub`` is
published to it (same payload, same type; the messages that one read brought in one
``publish_many`` call), any other path echoes. No login: the handler
uses :class:`trio_ws.Server` and a :class:`~trio_ws._broadcast.BroadcastHub` directly.

With ``--broker redis://...`` the queue goes through that broker (one node): the same
load, measured against the embedded memory broker, gives the broker's cost per delivery.

Usage::

    python benchmarks/wsbench_server.py --port 8765 [--host 127.0.0.1] [--broker URL]
    ./run.sh --server 'trio_ws:echo,broadcast=/path/to/python /path/to/wsbench_server.py --port {port}'
"""

from __future__ import annotations

import argparse
import logging

import trio

from trio_ws import ConnectionClosed, Server, ServerConfig, WebSocketConnection
from trio_ws._broadcast import BroadcastHub
from trio_ws.brokers import broker_from_url

# The most messages of the publisher published in one call: what arrived together (with
# a shared broker, what piled up during the last call's round trip).
PUBLISH_BATCH = 100


def make_server(*, history: int = 0, broker: str = "memory") -> tuple[Server, BroadcastHub]:
    """The wsbench server and its hub (``Server.serve(..., background=[hub.run])``)."""
    # The load generators connect thousands of times from one address: the per-address
    # and pending limits (which protect a public server from one peer) are lifted here.
    config = ServerConfig(
        max_message_size=1 << 24,
        max_connections=100_000,
        max_connections_per_address=100_000,
        max_pending=100_000,
        max_pending_per_address=100_000,
        # Subscribers in a benchmark never send, and fanout.py's only count bytes (they
        # answer no ping): keepalive would close them all 40 s into a long paced run.
        ping_interval=None,
    )
    hub = BroadcastHub(
        broker=broker_from_url(broker), max_subscriber_buffer=config.max_subscriber_buffer
    )
    queue = hub.queue("bench", history=history)
    publish, publish_many = queue.publish, queue.publish_many

    async def handler(conn: WebSocketConnection) -> None:
        assert conn.request is not None
        path = conn.request.path
        try:
            if path == "/sub":
                sub = await hub.subscriber(conn)
                await hub.subscribe(queue, sub)
                try:
                    while True:  # subscribers never send; this reads until the close
                        await conn.receive()
                finally:
                    hub.remove(sub)
            elif path == "/pub":
                while True:
                    batch = [await conn.receive()]
                    while len(batch) < PUBLISH_BATCH:  # and what came with it, in one call
                        try:
                            batch.append(conn.receive_nowait())
                        except trio.WouldBlock:
                            break
                    if len(batch) == 1:
                        await publish(batch[0])
                    else:
                        await publish_many(batch)
            else:
                while True:
                    await conn.send(await conn.receive())
        except ConnectionClosed:
            pass  # the harness ends connections with a TCP reset: a normal disconnect

    return Server(handler, config=config), hub


async def main(host: str, port: int, broker: str) -> None:
    server, hub = make_server(broker=broker)
    await server.serve(host, port, services=[hub.broker.run, hub.run])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log", default="WARNING", help="log level (default WARNING)")
    parser.add_argument("--broker", default="memory", help="memory (default) or redis://...")
    args = parser.parse_args()
    logging.basicConfig(level=args.log.upper())
    try:
        trio.run(main, args.host, args.port, args.broker)
    except KeyboardInterrupt:
        pass
