"""The demo application: the wire protocol of ``docs/protocol.md`` as trio_ws services.

Echo, routed, grouped, streamed and the application ping, plus ``who`` (the names of
connected clients, for the page's recipient picker), the page at ``/``, the dashboard at
``/dashboard`` and its statistics stream at ``/stats``.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from .._api import DEFAULT_API_RATE
from .._app import App
from .._clients import Client
from .._config import ServerConfig
from .._http import static_resource
from .._names import MAX_QUEUE_NAME_LENGTH, valid_name
from .._queue_model import QueueOptions
from .._services import ServiceError
from .._stats import stats_endpoint
from ..brokers import Broker

_PACKAGE = __package__ or "trio_ws.demo"
_STATIC = {
    "/": "static/index.html",
    "/app.js": "static/app.js",
    "/style.css": "static/style.css",
    "/dashboard": "static/dashboard.html",
    "/dashboard.js": "static/dashboard.js",
}
STREAM = "stream"
"""The server-fed ticker queue; groups of that name are not open to clients."""
HISTORY = 100
"""Messages each queue keeps for ``since`` (docs/protocol.md)."""
TICKS_PER_SECOND = 4
_SYMBOLS = {"TRIO": 42.0, "NURS": 17.5, "SCOP": 128.0, "CHAN": 9.25}


def _since(message: dict[str, Any]) -> int | None:
    since = message.get("since")
    if since is None:
        return None
    if type(since) is not int or since < 0:
        raise ServiceError("bad_message", "field 'since' must be a non-negative integer")
    return since


def _epoch(message: dict[str, Any]) -> str | None:
    epoch = message.get("epoch")
    if epoch is None:
        return None
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise ServiceError("bad_message", "field 'epoch' must be a string (from 'subscribed')")
    return epoch


def _group(message: dict[str, Any]) -> str:
    group = message.get("group")
    if not isinstance(group, str):
        raise ServiceError("bad_message", "field 'group' must be a string")
    if not valid_name(group, max_length=MAX_QUEUE_NAME_LENGTH):
        raise ServiceError(
            "bad_message",
            f"group names are 1-{MAX_QUEUE_NAME_LENGTH} characters of A-Z a-z 0-9 _ . -",
        )
    if group == STREAM:
        raise ServiceError("bad_message", f"{STREAM!r} is the server's ticker: use 'streamed'")
    return group


async def ticker(app: App, *, rate: float = TICKS_PER_SECOND, seed: int | None = None) -> None:
    """Publish a simulated price ticker to the ``stream`` queue, ``rate`` times a second."""
    rng = random.Random(seed)
    prices = dict(_SYMBOLS)
    while True:
        symbol = rng.choice(list(prices))
        prices[symbol] = round(max(0.01, prices[symbol] * (1 + rng.gauss(0, 0.004))), 2)
        data = {"symbol": symbol, "price": prices[symbol], "time": round(time.time(), 3)}
        await app.publish(STREAM, {"type": "streamed", "data": data})
        await trio.sleep(1 / rate)


def create_app(
    *,
    config: ServerConfig | None = None,
    dashboard_token: str | None = None,
    ticks_per_second: float = TICKS_PER_SECOND,
    broker: Broker | str = "memory",
    api_key: str | None = None,
    api_rate: tuple[int, float] | None = DEFAULT_API_RATE,
) -> App:
    """Build the demo app: unique pseudonyms, the services, the ticker, page and dashboard
    (and the server API, with ``api_key``)."""
    app = App(
        config=config,
        ws_path="/ws",
        broker=broker,
        queue_defaults=QueueOptions(history=HISTORY, max_history_bytes=256 << 10),
        metrics_token=dashboard_token,  # one token for the dashboard's stream and /metrics
        api_key=api_key,
        api_rate=api_rate,
    )
    for path, name in _STATIC.items():
        app.router.add(path, static_resource(_PACKAGE, name))
    app.websocket("/stats")(stats_endpoint(app, token=dashboard_token))
    app.queue(STREAM, history=HISTORY)

    @app.background
    async def feed() -> None:
        await ticker(app, rate=ticks_per_second)

    @app.service("echo", fields={"text": str})
    async def echo(client: Client, message: dict[str, Any]) -> None:
        await client.send(message)

    @app.service("routed", fields={"to": str, "text": str})
    async def routed(client: Client, message: dict[str, Any]) -> None:
        await app.clients.send(
            message["to"], {"type": "routed", "from": client.name, "text": message["text"]}
        )

    @app.service("grouped", fields={"action": str})
    async def grouped(client: Client, message: dict[str, Any]) -> None:
        action = message["action"]
        if action == "subscribe":
            await app.subscribe(
                client, _group(message), since=_since(message), epoch=_epoch(message)
            )
        elif action == "unsubscribe":
            group = _group(message)
            app.unsubscribe(client, group)
            await client.send({"type": "unsubscribed", "group": group})
        elif action == "publish":
            group = _group(message)
            text = message.get("text")
            if not isinstance(text, str):
                raise ServiceError("bad_message", "field 'text' must be a string")
            await app.publish(
                group, {"type": "grouped", "group": group, "from": client.name, "text": text}
            )
        elif action == "members":
            group = _group(message)
            names = await app.members(group)
            await client.send({"type": "members", "group": group, "names": names})
        else:
            raise ServiceError("bad_message", f"unknown grouped action {action!r}")

    @app.service("streamed", fields={"action": str})
    async def streamed(client: Client, message: dict[str, Any]) -> None:
        action = message["action"]
        if action == "subscribe":
            await app.subscribe(client, STREAM, since=_since(message), epoch=_epoch(message))
        elif action == "unsubscribe":
            app.unsubscribe(client, STREAM)
            await client.send({"type": "unsubscribed", "group": STREAM})
        else:
            raise ServiceError("bad_message", f"unknown streamed action {action!r}")

    @app.service("ping")
    async def ping(client: Client, _message: dict[str, Any]) -> None:
        await client.send({"type": "pong"})

    @app.service("who")
    async def who(client: Client, _message: dict[str, Any]) -> None:
        await client.send({"type": "who", "names": app.clients.names()})

    @app.binary
    async def binary_echo(client: Client, data: bytes) -> None:
        await client.send(data)

    return app
