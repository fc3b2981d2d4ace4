"""The demo's services: echo, routed and the application ping of the wire protocol.

``docs/protocol.md`` is the contract; every service here implements one row of it.
"""

from __future__ import annotations

from typing import Any

from .._app import App, Client
from .._config import ServerConfig
from .._http import static_resource


def create_app(*, config: ServerConfig | None = None) -> App:
    """Build the demo app: unique pseudonyms, the services, the page at ``/``."""
    app = App(config=config, ws_path="/ws")
    app.router.add("/", static_resource(__package__ or "trio_ws.demo", "static/index.html"))

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

    @app.binary
    async def binary_echo(client: Client, data: bytes) -> None:
        await client.send(data)

    return app
