"""A live statistics stream for dashboards: one JSON snapshot per interval over a WebSocket.

The snapshot carries counters, not rates: a viewer derives per-second rates from two
snapshots and their ``time``, so a late or slow viewer never skews them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._connection import ConnectionClosed, WebSocketConnection, dumps
from ._http import bearer_token_matches, peer_is_loopback
from .brokers._base import BrokerUnavailable
from .protocol._errors import CloseCode
from .protocol._frames import Opcode, encode_frame

if TYPE_CHECKING:
    from ._app import App

StatsProvider = Callable[[], dict[str, Any]]


async def cluster_view(app: App, *, within: float = 2.0) -> dict[str, Any]:
    """This node and the cluster through the broker: every live node with its connections
    and clients, and the totals. ``nodes`` is ``None`` when the broker cannot answer (in
    ``within`` seconds)."""
    broker = app.broker.describe()
    nodes: list[dict[str, Any]] | None = None
    with trio.move_on_after(within):
        try:
            found = await app.broker.nodes()
        except BrokerUnavailable:
            found = None
        if found is not None:
            nodes = [
                {"id": n.node_id, "connections": n.connections, "clients": n.clients} for n in found
            ]
    return {
        "node": broker["node"],
        "broker": broker,
        "nodes": nodes,
        "cluster_connections": sum(n["connections"] for n in nodes) if nodes else None,
        "cluster_clients": sum(n["clients"] for n in nodes) if nodes else None,
    }


def snapshot(app: App, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The app's counters now, as a JSON-ready ``{"type": "stats", ...}`` object (with
    ``cluster``, from :func:`cluster_view`, merged in)."""
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
    if cluster is not None:
        body.update(cluster)
    return body


MAX_VIEWERS = 16
"""Viewers one stats stream serves at once; more are closed with 1013."""


class StatsFeed:
    """One snapshot per interval, encoded once, written to every viewer without waiting.

    A snapshot costs O(connections + queues); computing it once per interval, not once
    per viewer, keeps a crowd of viewers from loading the server. A viewer that does not
    keep up (more than its write buffer waiting) is closed (1013).
    """

    def __init__(self, app: App, *, interval: float, max_viewers: int) -> None:
        self.app = app
        self.interval = interval
        self.max_viewers = max_viewers
        self.viewers: set[WebSocketConnection] = set()
        self.snapshots = 0
        self._frame: bytes | None = None
        self._cluster: dict[str, Any] | None = None

    async def run(self) -> None:
        while True:
            if self.viewers:
                self._cluster = await cluster_view(self.app, within=self.interval)
                self._publish()
            await trio.sleep(self.interval)

    def _publish(self) -> None:
        self.snapshots += 1
        frame = dumps(snapshot(self.app, self._cluster)).encode()
        self._frame = encode_frame(Opcode.TEXT, frame)
        for conn in list(self.viewers):
            self._send(conn, self._frame)

    def _send(self, conn: WebSocketConnection, frame: bytes) -> None:
        try:
            if conn.pending_size > conn.write_buffer_size:
                self.viewers.discard(conn)
                conn.close_nowait(CloseCode.TRY_AGAIN_LATER, "too slow for the stats stream")
                return
            if not conn.send_frames_nowait(frame):
                conn.drain_soon()
        except ConnectionClosed:
            self.viewers.discard(conn)

    async def serve_viewer(self, conn: WebSocketConnection) -> None:
        if len(self.viewers) >= self.max_viewers:
            await conn.aclose(CloseCode.TRY_AGAIN_LATER, "too many viewers")
            return
        self.viewers.add(conn)
        try:
            if self._frame is None:
                self._publish()
            else:
                self._send(conn, self._frame)
            async for _ in conn:  # pings and the close are answered; input is ignored
                pass
        except ConnectionClosed:
            pass
        finally:
            self.viewers.discard(conn)


def stats_endpoint(
    app: App,
    *,
    interval: float = 1.0,
    token: str | None = None,
    max_viewers: int = MAX_VIEWERS,
) -> Callable[[WebSocketConnection], Any]:
    """A raw WebSocket handler streaming :func:`snapshot` every ``interval`` seconds.

    With ``token`` set, the connection URL must carry ``?token=<token>`` (or an
    ``Authorization: Bearer`` header); without one, only peers on this machine (loopback)
    are served. Others are closed with 1008. The feed runs as a background job of ``app``.
    """
    feed = StatsFeed(app, interval=interval, max_viewers=max_viewers)
    app.background(feed.run)

    async def stream_stats(conn: WebSocketConnection) -> None:
        request = conn.request
        if token is not None:
            allowed = request is not None and bearer_token_matches(request, token)
        else:
            allowed = peer_is_loopback(conn.remote)
        if not allowed:
            reason = "a valid token is required" if token else "only served to this machine"
            await conn.aclose(CloseCode.POLICY_VIOLATION, reason)
            return
        await feed.serve_viewer(conn)

    stream_stats.feed = feed  # type: ignore[attr-defined]
    return stream_stats
