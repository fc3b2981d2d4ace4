"""``trio-ws-demo``: serve the demo app until Ctrl-C or SIGTERM, then shut down cleanly.

Bad options (a port in use, an unreadable certificate) end with one line on stderr and
exit status 2 (usage) or 1 (cannot serve), never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import ssl
import sys
from typing import NoReturn

import trio

from .._config import ServerConfig
from .._server import bind_sockets
from ..brokers import Broker, broker_from_url
from .app import create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-ws-demo",
        description="Serve the trio_ws demo: the page at /, the dashboard at /dashboard, "
        "the WebSocket at /ws. Stops cleanly on Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--broker",
        default="memory",
        help="where queues, presence and names live: 'memory' (this process; the default) "
        "or a Redis URL, redis://host:port/db (rediss:// for TLS) shared by the nodes",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port; more than 1 needs a broker shared by "
        "the processes, which 'memory' is not (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="certificate chain: serve https:// and wss://"
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", help="private key of --tls-cert (if not in the same file)"
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an Origin allowed besides the server's own host, e.g. https://example.com "
        "(repeatable; '*' allows any)",
    )
    parser.add_argument(
        "--dashboard-token", metavar="TOKEN", help="require ?token=TOKEN for the dashboard's stream"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
    return parser


def _fail(message: str) -> NoReturn:
    print(f"trio-ws-demo: {message}", file=sys.stderr)
    raise SystemExit(1)


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        if args.tls_key is not None:
            _fail("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        _fail(f"cannot load the TLS certificate {args.tls_cert}: {reason}")
    return context


async def _run(args: argparse.Namespace, context: ssl.SSLContext | None, broker: Broker) -> None:
    # Signals are caught before the port opens: from the first connection on, SIGINT and
    # SIGTERM mean a clean shutdown.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            sockets = bind_sockets(args.host, args.port)
        except OSError as exc:
            _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        app = create_app(
            config=ServerConfig(allowed_origins=tuple(args.allowed_origin)),
            dashboard_token=args.dashboard_token,
            broker=broker,
        )
        http, ws = ("https", "wss") if context is not None else ("http", "ws")
        async with trio.open_nursery() as nursery:
            serve = functools.partial(app.serve, listeners=sockets, ssl_context=context)
            addresses = await nursery.start(serve)
            for address in addresses:
                print(f"trio-ws-demo: page      {http}://{address}/", flush=True)
                print(f"trio-ws-demo: dashboard {http}://{address}/dashboard", flush=True)
                print(f"trio-ws-demo: websocket {ws}://{address}/ws", flush=True)
            async for signum in signals:
                print(f"trio-ws-demo: {signal.Signals(signum).name}: shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    """Parse the options, bind, serve until a signal, exit 0."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        _fail(f"--port must be 0..65535, not {args.port}")
    try:
        broker = broker_from_url(args.broker)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    if args.workers != 1:
        _fail("--workers above 1 needs a broker shared by the processes; 'memory' is per process")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    context = _ssl_context(args)
    trio.run(_run, args, context, broker)
