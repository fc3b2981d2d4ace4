"""The demo application: the wire protocol of ``docs/protocol.md`` as trio_ws services.

Echo, routed, grouped, streamed and the application ping, plus ``who`` (the names of
connected clients, for the page's recipient picker), the page at ``/``, the dashboard at
``/dashboard`` and its statistics stream at ``/stats``.
"""

from __future__ import annotations

from typing import Any

from .._app import App, Client
from .._config import ServerConfig
from .._http import static_resource
from .._stats import stats_endpoint

_PACKAGE = __package__ or "trio_ws.demo"
_STATIC = {
    "/": "static/index.html",
    "/app.js": "static/app.js",
    "/style.css": "static/style.css",
    "/dashboard": "static/dashboard.html",
    "/dashboard.js": "static/dashboard.js",
}


def create_app(*, config: ServerConfig | None = None, dashboard_token: str | None = None) -> App:
    """Build the demo app: unique pseudonyms, the services, the page and the dashboard."""
    app = App(config=config, ws_path="/ws")
    for path, name in _STATIC.items():
        app.router.add(path, static_resource(_PACKAGE, name))
    app.websocket("/stats")(stats_endpoint(app, token=dashboard_token))

    @app.service("echo", fields={"text": str})
    async def echo(client: Client, message: dict[str, Any]) -> None:
        await client.send(message)

    @app.service("routed", fields={"to": str, "text": str})
    async def routed(client: Client, message: dict[str, Any]) -> None:
        await app.clients.send(
            message["to"], {"type": "routed", "from": client.name, "text": message["text"]}
        )

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
