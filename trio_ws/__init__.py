"""trio_ws: a real-time WebSocket server framework on Trio.

The public API; the modules behind it are private.
"""

from ._config import ServerConfig
from ._connection import ConnectionClosed, WebSocketConnection
from ._http import HttpResponse, HttpRouter, static_resource
from ._server import Server, ServerStatistics, bind_sockets
from .protocol._errors import CloseCode, LocalProtocolError, RemoteProtocolError, WebSocketError

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "HttpResponse",
    "HttpRouter",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Server",
    "ServerConfig",
    "ServerStatistics",
    "WebSocketConnection",
    "WebSocketError",
    "bind_sockets",
    "static_resource",
]
