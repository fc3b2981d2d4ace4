"""trio_ws: a real-time WebSocket server framework on Trio.

The public API; the modules behind it are private.
"""

from ._app import App, Client, ClientRegistry, ServiceError, UnknownClient
from ._broadcast import BroadcastHub, BroadcastQueue, BroadcastStatistics, QueueError, Subscriber
from ._client import HandshakeFailed, connect
from ._config import ServerConfig
from ._connection import ConnectionClosed, WebSocketConnection
from ._http import HttpResponse, HttpRouter, static_resource
from ._login import (
    LoginAccepted,
    LoginPolicy,
    LoginRefused,
    LoginRequest,
    make_token,
    signed_tokens,
    unique_names,
)
from ._server import Server, ServerStatistics, bind_sockets
from .protocol._errors import CloseCode, LocalProtocolError, RemoteProtocolError, WebSocketError

__all__ = [
    "App",
    "BroadcastHub",
    "BroadcastQueue",
    "BroadcastStatistics",
    "QueueError",
    "Subscriber",
    "Client",
    "ClientRegistry",
    "HandshakeFailed",
    "LoginAccepted",
    "LoginPolicy",
    "LoginRefused",
    "LoginRequest",
    "ServiceError",
    "UnknownClient",
    "connect",
    "make_token",
    "signed_tokens",
    "unique_names",
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
