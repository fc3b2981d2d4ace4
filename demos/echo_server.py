"""The smallest trio_ws server: echo every message back exactly as received.

No login, permessage-deflate accepted, messages up to 16 MiB. It is the target of
conformance suites and of the benchmarks:

    python demos/echo_server.py --host 127.0.0.1 --port 9001
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal

import trio

import trio_ws


async def echo(conn: trio_ws.WebSocketConnection) -> None:
    async for message in conn:  # str for text, bytes for binary
        await conn.send(message)


async def serve(server: trio_ws.Server, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (close 1001)."""
    # The handlers come first: from the moment the port listens, a signal is a clean stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sockets = trio_ws.bind_sockets(host, port)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(server.serve, listeners=sockets))
            async for _signum in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = trio_ws.ServerConfig(max_message_size=16 << 20, ping_interval=None)
    server = trio_ws.Server(echo, config=config)
    try:
        trio.run(serve, server, args.host, args.port)
    except OSError as exc:  # from bind_sockets: errors inside the nursery come grouped
        raise SystemExit(
            f"echo_server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None


if __name__ == "__main__":
    main()
