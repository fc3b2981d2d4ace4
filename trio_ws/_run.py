"""Running an app the way the CLI does: serve until SIGINT or SIGTERM, drain, return.

``trio_ws.run(app)`` (or ``app.run()``) is the whole main program of a server: it logs where
it serves, and on Ctrl-C or SIGTERM stops accepting, closes every client with 1001 within
the grace period and returns normally, so the process exits with status 0 (no traceback,
no ``KeyboardInterrupt`` wrapped in exception groups). :func:`serve_until_signal` is the
same inside a running Trio program.
"""

from __future__ import annotations

import functools
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._server import Address, Server, bind_sockets

if TYPE_CHECKING:
    from ._app import App

__all__ = ["run", "serve_until_signal"]

log = logging.getLogger("trio_ws.server")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve_until_signal(
    target: App | Server,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    listeners: Sequence[Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_ready: Callable[[list[Address]], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
    signals: Sequence[int] = SIGNALS,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve ``target`` until one of ``signals`` arrives; shut down cleanly; return it.

    The signals are caught before the port opens, so from the first connection on they
    mean a clean shutdown. ``on_ready(addresses)`` runs once the server listens (by
    default the addresses are logged at INFO), ``on_signal(signum)`` when the shutdown
    starts (by default it is logged).
    """
    with trio.open_signal_receiver(*signals) as receiver:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                target.serve, host, port, listeners=listeners, ssl_context=ssl_context
            )
            addresses: list[Address] = await nursery.start(serve)
            scheme = "https" if ssl_context is not None else "http"
            if on_ready is not None:
                on_ready(addresses)
            else:
                for address in addresses:
                    log.info("open %s://%s/", scheme, address.url_host)
            task_status.started(addresses)
            async for signum in receiver:
                if on_signal is not None:
                    on_signal(signum)
                else:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return int(signum)
    raise AssertionError("the signal receiver ended")  # pragma: no cover


def run(
    target: App | Server,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    listeners: Sequence[Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_ready: Callable[[list[Address]], None] | None = None,
    log_level: int | str | None = logging.INFO,
) -> None:
    """Serve ``target`` until Ctrl-C or SIGTERM, then drain (1001) and return.

    Sets up logging at ``log_level`` (one line per connection event at INFO) unless the
    program configured logging itself or ``log_level`` is ``None``.

    Raises:
        SystemExit: the address cannot be bound (in use, not available): the message is
            one line, ``PROGRAM: cannot listen on HOST:PORT: REASON``, and the exit
            status 1.
    """
    if log_level is not None and not logging.getLogger().handlers:
        logging.basicConfig(
            level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if listeners is None:
        try:
            listeners = bind_sockets(host, port)
        except OSError as exc:
            program = Path(sys.argv[0]).name or "trio_ws"
            reason = exc.strerror or exc
            raise SystemExit(
                f"{program}: cannot listen on {host or '*'}:{port}: {reason}"
            ) from None
    trio.run(
        functools.partial(
            serve_until_signal,
            target,
            host,
            port,
            listeners=listeners,
            ssl_context=ssl_context,
            on_ready=on_ready,
        )
    )
