"""The smallest trio_ws server: echo every message back exactly as received.

No login, permessage-deflate accepted, messages up to 16 MiB. It is the target of
conformance suites and of the benchmarks:

    python demos/echo_server.py --host 127.0.0.1 --port 9001
"""

from __future__ import annotations

import argparse
import logging

import trio_ws


async def echo(conn: trio_ws.WebSocketConnection) -> None:
    async for message in conn:  # str for text, bytes for binary
        await conn.send(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    # It serves conformance suites and load generators, which open thousands of
    # connections from one address: the per-address and pending limits are lifted.
    config = trio_ws.ServerConfig(
        max_message_size=16 << 20,
        ping_interval=None,
        max_connections=100_000,
        max_connections_per_address=100_000,
        max_pending=100_000,
        max_pending_per_address=100_000,
    )
    server = trio_ws.Server(echo, config=config)
    # Until SIGINT or SIGTERM, then a graceful shutdown (close 1001).
    trio_ws.run(server, args.host, args.port, log_level=logging.WARNING)


if __name__ == "__main__":
    main()
