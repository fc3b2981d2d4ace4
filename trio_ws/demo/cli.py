"""``trio-ws-demo``: serve the demo app until Ctrl-C or SIGTERM, then shut down cleanly."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from .._config import ServerConfig
from .app import create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-ws-demo",
        description="Serve the trio_ws demo: the page at /, the WebSocket at /ws.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an Origin allowed besides the server's own host (repeatable; '*' allows any)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    app = create_app(config=ServerConfig(allowed_origins=tuple(args.allowed_origin)))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(app.serve, args.host, args.port)
            for address in addresses:
                print(
                    f"trio-ws-demo: page http://{address}/  WebSocket ws://{address}/ws", flush=True
                )
            async for signum in signals:
                print(f"trio-ws-demo: {signal.Signals(signum).name}, shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_run, args)
    except OSError as exc:
        print(
            f"trio-ws-demo: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
