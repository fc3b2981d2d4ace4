"""``trio-ws-demo``: serve the demo app until Ctrl-C or SIGTERM, then shut down cleanly.

Bad options (a malformed value, a port in use, an unreadable certificate) end with one line
on stderr and exit status 1, never a traceback or a usage dump.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from typing import NoReturn

import trio

from .._api import check_api_key
from .._config import ServerConfig
from .._run import serve_until_signal
from .._server import Address, bind_sockets
from ..brokers import Broker, broker_from_url
from .app import create_app


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 1, like every other bad option."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in _LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid level {value!r} (choose from {', '.join(_LEVELS)}, any case)"
        )
    return level


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _rate(value: str) -> tuple[int, float] | None:
    if value.lower() == "off":
        return None
    count, _, seconds = value.partition("/")
    try:
        rate = (int(count), float(seconds or "1"))
    except ValueError:
        rate = (0, 0.0)
    if rate[0] < 1 or not rate[1] > 0:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS like 100/1, or off; not {value!r}")
    return rate


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-ws-demo",
        description="Serve the trio_ws demo: the page at /, the dashboard at /dashboard, "
        "the WebSocket at /ws. Stops cleanly on Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; '' for every interface (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--broker",
        default="memory",
        help="where queues, presence and names live: 'memory' (this process; the default) "
        "or a Redis URL shared by the nodes: redis://host:port/db (rediss:// for TLS), "
        "redis+cluster://host:port,host:port, redis+sentinel://host:port/service",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT), each a node of the broker, "
        "restarted if one dies; more than 1 needs a shared broker (redis://...), which "
        "'memory' is not (default: %(default)s)",
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
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
        "--dashboard-token",
        metavar="TOKEN",
        help="require TOKEN for the dashboard's stream (?token=) and /metrics (Authorization: "
        "Bearer); without one, both answer only this machine",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("TRIO_WS_API_KEY") or None,
        help="turn the server API on (/api/, docs/server-api.md) for backends sending "
        "Authorization: Bearer KEY; the environment variable TRIO_WS_API_KEY gives it "
        "without showing it in ps (default: off)",
    )
    parser.add_argument(
        "--rate-limit",
        default="100/1",
        type=_rate,
        metavar="N/SECONDS",
        help="messages a logged-in client may send per SECONDS (bursts of N); 'off' for "
        "none (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=_log_level,
        metavar="LEVEL",
        help=f"logging level: {', '.join(_LEVELS)} in any case (default: %(default)s)",
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
    except ssl.SSLError as exc:  # before OSError, of which it is a kind
        if args.tls_key is None and "PEM" in str(exc):
            _fail(
                f"cannot load the TLS certificate {args.tls_cert}: it has no private key "
                "(or the key does not match); give the key with --tls-key"
            )
        what = "key" if args.tls_key is not None else "certificate"
        _fail(f"cannot load the TLS {what} ({exc.reason or exc}): check --tls-cert and --tls-key")
    except OSError as exc:
        _fail(f"cannot load the TLS certificate {args.tls_cert}: {exc.strerror or exc}")
    return context


async def _run(args: argparse.Namespace, context: ssl.SSLContext | None, broker: Broker) -> None:
    # Bound before serving, so "address in use" is one line, not an exception group.
    try:
        sockets = bind_sockets(args.host, args.port, reuse_port=args.worker is not None)
    except OSError as exc:
        _fail(f"cannot listen on {args.host or '*'}:{args.port}: {exc.strerror or exc}")
    app = create_app(
        config=ServerConfig(allowed_origins=tuple(args.allowed_origin), rate_limit=args.rate_limit),
        dashboard_token=args.dashboard_token,
        broker=broker,
        api_key=args.api_key,
    )
    http, ws = ("https", "wss") if context is not None else ("http", "ws")

    def ready(addresses: list[Address]) -> None:
        if args.worker is not None:  # the supervisor prints the URLs once
            print(f"trio-ws-demo: worker {args.worker} (pid {os.getpid()}) serving", flush=True)
            return
        shown = dict.fromkeys(address.url_host for address in addresses)
        for where in shown:
            print(f"trio-ws-demo: page      {http}://{where}/", flush=True)
            print(f"trio-ws-demo: dashboard {http}://{where}/dashboard", flush=True)
            print(f"trio-ws-demo: websocket {ws}://{where}/ws", flush=True)
            if args.api_key is not None:
                print(f"trio-ws-demo: api       {http}://{where}/api/", flush=True)
        if not args.host:
            print("trio-ws-demo: (listening on every interface)", flush=True)

    def stopping(signum: int) -> None:
        if args.worker is None:
            print(f"trio-ws-demo: {signal.Signals(signum).name}: shutting down", flush=True)

    await serve_until_signal(
        app, listeners=sockets, ssl_context=context, on_ready=ready, on_signal=stopping
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the options, bind, serve until a signal, exit 0."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        _fail(f"--port must be 0..65535, not {args.port}")
    if args.workers < 1:
        _fail(f"--workers must be at least 1, not {args.workers}")
    if args.api_key is not None:
        try:
            check_api_key(args.api_key)
        except ValueError as exc:
            _fail(f"--api-key: {exc}")
    try:
        broker = broker_from_url(args.broker)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    if args.workers != 1 and broker.kind == "memory":
        _fail("--workers above 1 needs a broker shared by the processes; 'memory' is per process")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    context = _ssl_context(args)
    if args.workers > 1:
        try:  # fail here, in one line, rather than in every worker
            for sock in bind_sockets(args.host, args.port, reuse_port=True):
                sock.close()
        except OSError as exc:
            _fail(f"cannot listen on {args.host or '*'}:{args.port}: {exc.strerror or exc}")
        raise SystemExit(supervise(args, sys.argv[1:] if argv is None else argv))
    trio.run(_run, args, context, broker)


def _worker_argv(argv: list[str], index: int) -> list[str]:
    """The worker's command: the same options, one process, marked as worker ``index``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [sys.executable, "-m", "trio_ws.demo.cli", *out, "--worker", str(index)]


RESTART_BACKOFF = (0.1, 5.0)
"""Seconds before restarting a worker that died: doubling from the first, up to the
second, for a worker that keeps dying within a second of its start."""


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``args.workers`` worker processes on one port (SO_REUSEPORT), each a node of the
    broker: print the URLs once, restart a worker that dies (and log it), and on SIGINT or
    SIGTERM stop every worker (each drains its clients with 1001) and return 0."""
    log = logging.getLogger("trio_ws.demo")
    stop = [0]

    def on_signal(signum: int, _frame: object) -> None:
        stop[0] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workers: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    backoff: dict[int, float] = {}

    def spawn(index: int) -> None:
        workers[index] = subprocess.Popen(_worker_argv(argv, index))
        started[index] = time.monotonic()

    for index in range(1, args.workers + 1):
        spawn(index)
    http = "https" if args.tls_cert else "http"
    where = Address(args.host or "0.0.0.0", args.port).url_host
    print(f"trio-ws-demo: page      {http}://{where}/", flush=True)
    print(f"trio-ws-demo: dashboard {http}://{where}/dashboard", flush=True)
    print(f"trio-ws-demo: websocket {'wss' if args.tls_cert else 'ws'}://{where}/ws", flush=True)
    print(f"trio-ws-demo: {args.workers} workers, broker {args.broker}", flush=True)
    pending: dict[int, float] = {}
    while not stop[0]:
        time.sleep(0.1)
        now = time.monotonic()
        for index, proc in list(workers.items()):
            if index in pending or proc.poll() is None:
                continue
            quick = now - started[index] < 1.0
            delay = min(backoff.get(index, RESTART_BACKOFF[0]) * 2, RESTART_BACKOFF[1])
            backoff[index] = delay if quick else RESTART_BACKOFF[0]
            log.warning(
                "worker %d (pid %d) exited with status %s; restarting in %.1f s",
                index,
                proc.pid,
                proc.returncode,
                backoff[index],
            )
            pending[index] = now + backoff[index]
        for index, when in list(pending.items()):
            if now >= when and not stop[0]:
                del pending[index]
                spawn(index)
    print(f"trio-ws-demo: {signal.Signals(stop[0]).name}: shutting down", flush=True)
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in workers.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    main()
