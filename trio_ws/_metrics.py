"""What a node tells about itself: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import trio

from ._http import HttpResponse, bearer_token_matches, peer_is_loopback
from .brokers._base import BrokerState

if TYPE_CHECKING:
    from ._app import App
    from .protocol._handshake import Request

__all__ = ["healthz", "metrics", "metrics_text", "queue_stats"]


def queue_stats(app: App) -> dict[str, Any]:
    """Per queue: subscribers, last seq, published, drops and depth (for the dashboard)."""
    queues = []
    for name, q in sorted(app.hub.queues.items()):
        depth = sum(len(lane.messages) for lane in q._subs.values())
        queues.append(
            {
                "name": name,
                "subscribers": len(q),
                "seq": q.seq,
                "published": q.published,
                "drops": q.dropped,
                "depth": depth,
            }
        )
    return {"queues": queues}


def healthz(app: App, _request: Request) -> HttpResponse:
    """``ok`` while the broker is up, ``degraded`` (still 200: local clients are served)
    while it is not."""
    stats = app.server.statistics()
    broker = app.broker.describe()
    body = {
        "status": "ok" if app.broker.state is BrokerState.UP else "degraded",
        "connections": stats.connections,
        "clients": len(app.clients),
        "accepting": stats.accepting,
        "broker": broker,
        "uptime_seconds": round(time.time() - app.started_at, 3),
    }
    return HttpResponse(200, json.dumps(body) + "\n", "application/json")


async def metrics(app: App, request: Request) -> HttpResponse:
    """``/metrics``: with ``App(metrics_token=...)`` for whoever sends it (``Authorization:
    Bearer``, or ``?token=``), else only for peers on this machine; 403 otherwise."""
    token = app.metrics_token
    allowed = bearer_token_matches(request, token) if token is not None else peer_is_loopback()
    if not allowed:
        return HttpResponse(403, "forbidden\n")
    from ._stats import cluster_view

    # The text costs O(connections + queues): computed at most once per
    # METRICS_INTERVAL, however many scrapers ask.
    now = trio.current_time()
    cached = app._metrics_cache
    if cached is None or now - cached[0] >= METRICS_INTERVAL:
        cached = app._metrics_cache = (now, metrics_text(app, await cluster_view(app)))
    return HttpResponse(200, cached[1], "text/plain; version=0.0.4; charset=utf-8")


METRICS_INTERVAL = 1.0
"""Seconds one rendering of ``/metrics`` is served for."""


def metrics_text(app: App, cluster: dict[str, Any] | None = None) -> str:
    """The Prometheus text exposition of this node's counters (and, with ``cluster`` from
    :func:`trio_ws._stats.cluster_view`, of every live node's)."""
    stats = app.server.statistics()
    lines = [
        "# HELP trio_ws_open_connections Open WebSocket connections.",
        "# TYPE trio_ws_open_connections gauge",
        f"trio_ws_open_connections {stats.connections}",
        "# HELP trio_ws_pending_connections Connections not yet admitted (not logged in).",
        "# TYPE trio_ws_pending_connections gauge",
        f"trio_ws_pending_connections {stats.pending}",
        "# HELP trio_ws_logged_in_clients Logged-in clients of this node.",
        "# TYPE trio_ws_logged_in_clients gauge",
        f"trio_ws_logged_in_clients {len(app.clients)}",
        "# HELP trio_ws_accepted_connections_total WebSocket connections accepted.",
        "# TYPE trio_ws_accepted_connections_total counter",
        f"trio_ws_accepted_connections_total {stats.connections_total}",
        "# HELP trio_ws_messages_received_total Messages received from clients.",
        "# TYPE trio_ws_messages_received_total counter",
        f"trio_ws_messages_received_total {stats.messages_in}",
        "# HELP trio_ws_messages_sent_total Messages sent to clients.",
        "# TYPE trio_ws_messages_sent_total counter",
        f"trio_ws_messages_sent_total {stats.messages_out}",
        "# HELP trio_ws_received_bytes_total Bytes received on WebSocket connections.",
        "# TYPE trio_ws_received_bytes_total counter",
        f"trio_ws_received_bytes_total {stats.bytes_in}",
        "# HELP trio_ws_sent_bytes_total Bytes sent on WebSocket connections.",
        "# TYPE trio_ws_sent_bytes_total counter",
        f"trio_ws_sent_bytes_total {stats.bytes_out}",
        "# HELP trio_ws_http_requests_total Plain HTTP requests answered.",
        "# TYPE trio_ws_http_requests_total counter",
        f"trio_ws_http_requests_total {stats.http_requests}",
        "# HELP trio_ws_refused_total Connections refused, by reason (IP rules, or the HTTP"
        " status of a refused handshake).",
        "# TYPE trio_ws_refused_total counter",
        f'trio_ws_refused_total{{reason="ip_rules"}} {stats.refused_by_ip_rules}',
        f'trio_ws_refused_total{{reason="limits"}} {stats.refused_by_limits}',
    ]
    lines += [
        f'trio_ws_refused_total{{reason="http_{s}"}} {n}' for s, n in sorted(stats.refused.items())
    ]
    lines += [
        "# HELP trio_ws_closed_total Closed WebSocket connections, by close code.",
        "# TYPE trio_ws_closed_total counter",
    ]
    lines += [
        f'trio_ws_closed_total{{code="{c}"}} {n}' for c, n in sorted(stats.close_codes.items())
    ]
    lines += [
        "# HELP trio_ws_service_calls_total Messages handled, by service.",
        "# TYPE trio_ws_service_calls_total counter",
    ]
    lines += [
        f'trio_ws_service_calls_total{{service="{t}"}} {e.calls}'
        for t, e in sorted(app._services.items())
    ]
    lines += [
        "# HELP trio_ws_service_seconds_total Time spent in services.",
        "# TYPE trio_ws_service_seconds_total counter",
    ]
    lines += [
        f'trio_ws_service_seconds_total{{service="{t}"}} {e.seconds:.6f}'
        for t, e in sorted(app._services.items())
    ]
    queues = queue_stats(app)["queues"]
    for metric, kind, field, text in (
        ("trio_ws_queue_subscribers", "gauge", "subscribers", "Subscribers, by queue."),
        ("trio_ws_queue_depth", "gauge", "depth", "Messages waiting in subscriber buffers."),
        ("trio_ws_queue_published_total", "counter", "published", "Messages published."),
        (
            "trio_ws_queue_dropped_total",
            "counter",
            "drops",
            "Messages skipped for slow subscribers.",
        ),
    ):
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{queue="{q["name"]}"}} {q[field]}' for q in queues]
    hub = app.hub.statistics()
    lines += [
        "# HELP trio_ws_subscribers_kicked_total Subscribers closed (1013) for being too slow.",
        "# TYPE trio_ws_subscribers_kicked_total counter",
        f"trio_ws_subscribers_kicked_total {hub.kicked}",
    ]
    broker = app.broker.statistics()
    lines += [
        "# HELP trio_ws_broker_up Whether the broker is reachable (1) or not (0).",
        "# TYPE trio_ws_broker_up gauge",
        f'trio_ws_broker_up{{kind="{broker.kind}"}} {int(broker.state is BrokerState.UP)}',
        "# HELP trio_ws_broker_outages_total Times the broker connection was lost.",
        "# TYPE trio_ws_broker_outages_total counter",
        f"trio_ws_broker_outages_total {broker.outages}",
        "# HELP trio_ws_broker_errors_total Operations refused while the broker was unavailable.",
        "# TYPE trio_ws_broker_errors_total counter",
        f"trio_ws_broker_errors_total {broker.errors}",
        "# HELP trio_ws_broker_latency_seconds Mean round trip of the latest broker operations.",
        "# TYPE trio_ws_broker_latency_seconds gauge",
        f"trio_ws_broker_latency_seconds {broker.latency_seconds:.6f}",
    ]
    nodes = cluster.get("nodes") if cluster else None
    if nodes is not None:
        lines += [
            "# HELP trio_ws_cluster_nodes Live nodes of the cluster, as the broker knows them.",
            "# TYPE trio_ws_cluster_nodes gauge",
            f"trio_ws_cluster_nodes {len(nodes)}",
            "# HELP trio_ws_cluster_connections Open connections, by node.",
            "# TYPE trio_ws_cluster_connections gauge",
        ]
        lines += [
            f'trio_ws_cluster_connections{{node="{n["id"]}"}} {n["connections"]}' for n in nodes
        ]
        lines += [
            "# HELP trio_ws_cluster_clients Logged-in clients, by node.",
            "# TYPE trio_ws_cluster_clients gauge",
        ]
        lines += [f'trio_ws_cluster_clients{{node="{n["id"]}"}} {n["clients"]}' for n in nodes]
    return "\n".join(lines) + "\n"
