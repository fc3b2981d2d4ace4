"""A live statistics stream for dashboards: one JSON snapshot per interval over a WebSocket.

The snapshot carries counters, not rates: a viewer derives per-second rates from two
snapshots and their ``time``, so a late or slow viewer never skews them.
"""

from __future__ import annotations

import hmac
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._connection import ConnectionClosed, WebSocketConnection
from .protocol._errors import CloseCode

if TYPE_CHECKING:
    from ._app import App

StatsProvider = Callable[[], dict[str, Any]]


def snapshot(app: App) -> dict[str, Any]:
    """The app's counters now, as a JSON-ready ``{"type": "stats", ...}`` object."""
    stats = app.server.statistics()
    body: dict[str, Any] = {
        "type": "stats",
        "time": time.time(),
        "uptime": round(time.time() - app.started_at, 3),
        "connections": stats.connections,
        "connections_total": stats.connections_total,
        "clients": len(app.clients),
        "messages_in": stats.messages_in,
        "messages_out": stats.messages_out,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "http_requests": stats.http_requests,
        "close_codes": {str(code): n for code, n in sorted(stats.close_codes.items())},
        "refused": {str(status): n for status, n in sorted(stats.refused.items())},
        "services": [
            {
                "type": type_,
                "calls": s.calls,
                "errors": s.errors,
                "mean_ms": round(s.mean_seconds * 1000, 4),
                "p99_ms": round(s.p99_seconds * 1000, 4),
            }
            for type_, s in sorted(app.service_statistics().items())
        ],
        "queues": [],
    }
    for provider in app.stats_providers:
        body.update(provider())
    return body


def stats_endpoint(
    app: App, *, interval: float = 1.0, token: str | None = None
) -> Callable[[WebSocketConnection], Any]:
    """A raw WebSocket handler streaming :func:`snapshot` every ``interval`` seconds.

    With ``token`` set, the connection URL must carry ``?token=<token>`` (else close 1008).
    """

    async def stream_stats(conn: WebSocketConnection) -> None:
        if token is not None and not _token_matches(conn, token):
            await conn.aclose(CloseCode.POLICY_VIOLATION, "a valid token is required")
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain_incoming, conn, nursery.cancel_scope)
            while True:
                try:
                    await conn.send(snapshot(app))
                except ConnectionClosed:
                    break
                await trio.sleep(interval)
            nursery.cancel_scope.cancel()

    return stream_stats


async def _drain_incoming(conn: WebSocketConnection, scope: trio.CancelScope) -> None:
    """Read (and ignore) what the viewer sends, so pings and the close are answered."""
    try:
        async for _ in conn:
            pass
    except ConnectionClosed:
        pass
    scope.cancel()


def _token_matches(conn: WebSocketConnection, token: str) -> bool:
    query = urllib.parse.parse_qs(conn.request.query if conn.request else "")
    given = query.get("token", [""])[0]
    return hmac.compare_digest(given.encode(), token.encode())
