"""trio_ws: a real-time WebSocket server framework on Trio.

The public API; the modules behind it are private.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from ._app import App
from ._broadcast import (
    BroadcastHub,
    BroadcastQueue,
    BroadcastStatistics,
    QueueChannel,
    QueueGap,
    QueueMessage,
)
from ._client import HandshakeFailed, connect
from ._client_session import (
    DEFAULT_FATAL_CLOSE_CODES,
    Backoff,
    ConnectionLost,
    HistoryLost,
    LoginFailed,
    Received,
    ReconnectFailed,
    RequestFailed,
    Session,
    SessionClosed,
    SessionError,
    SessionRefused,
    SessionState,
    SessionStatistics,
    Subscription,
    SubscriptionItem,
    open_session,
)
from ._clients import Client, ClientRegistry, RecipientBusy, UnknownClient
from ._config import ServerConfig
from ._connection import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    WebSocketConnection,
)
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
from ._queue_model import QueueError, QueueOptions
from ._run import run, serve_until_signal
from ._server import Address, Server, ServerStatistics, bind_sockets
from ._services import ServiceError, ServiceStatistics
from ._subscriber import Subscriber, SubscriberState
from .brokers import Broker, BrokerState, BrokerUnavailable, MemoryBroker
from .protocol._errors import CloseCode, LocalProtocolError, RemoteProtocolError, WebSocketError

try:
    __version__ = _version("trio_ws")
except _NotInstalled:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_FATAL_CLOSE_CODES",
    "Address",
    "App",
    "Backoff",
    "BroadcastHub",
    "BroadcastQueue",
    "BroadcastStatistics",
    "Broker",
    "BrokerState",
    "BrokerUnavailable",
    "Client",
    "ClientRegistry",
    "CloseCode",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionLost",
    "HandshakeFailed",
    "HistoryLost",
    "HttpResponse",
    "HttpRouter",
    "LocalProtocolError",
    "LoginAccepted",
    "LoginFailed",
    "LoginPolicy",
    "LoginRefused",
    "LoginRequest",
    "MemoryBroker",
    "QueueChannel",
    "QueueError",
    "QueueGap",
    "QueueMessage",
    "QueueOptions",
    "Received",
    "RecipientBusy",
    "ReconnectFailed",
    "RemoteProtocolError",
    "RequestFailed",
    "Server",
    "ServerConfig",
    "ServerStatistics",
    "ServiceError",
    "ServiceStatistics",
    "Session",
    "SessionClosed",
    "SessionError",
    "SessionRefused",
    "SessionState",
    "SessionStatistics",
    "Subscriber",
    "SubscriberState",
    "Subscription",
    "SubscriptionItem",
    "UnknownClient",
    "WebSocketConnection",
    "WebSocketError",
    "bind_sockets",
    "connect",
    "make_token",
    "open_session",
    "run",
    "serve_until_signal",
    "signed_tokens",
    "static_resource",
    "unique_names",
]
