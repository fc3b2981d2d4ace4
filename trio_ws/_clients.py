"""Logical clients and the registry that finds them, on this node or through the broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from ._connection import ConnectionClosed, Message, WebSocketConnection, dumps
from ._names import name_key
from ._services import ServiceError
from .brokers._base import Payload, RoutedClose
from .protocol._errors import CloseCode

if TYPE_CHECKING:
    from ._subscriber import Subscriber
    from .brokers._base import Broker
    from .protocol._handshake import Request

__all__ = ["Client", "ClientRegistry", "RecipientBusy", "UnknownClient"]

log = logging.getLogger("trio_ws.app")


class UnknownClient(ServiceError, KeyError):
    """No client of that name is connected (on any node)."""

    def __init__(self, name: str) -> None:
        super().__init__("unknown_recipient", f"no client named {name!r} is connected")
        self.name = name

    def __str__(self) -> str:
        return self.message


class RecipientBusy(ServiceError):
    """The client is connected but not reading: too much is queued for it already."""

    def __init__(self, name: str) -> None:
        super().__init__("recipient_busy", f"{name!r} is not keeping up; try again later")
        self.name = name


class Client:
    """A logged-in connection: the Push Framework's logical client.

    Attributes:
        name: the name it logged in with (its key in the registry).
        connection: the WebSocket it speaks through; replaced on a takeover.
        data: free storage for the application.
    """

    def __init__(self, name: str, connection: WebSocketConnection) -> None:
        self.name = name
        self.connection = connection
        self.data: dict[str, Any] = {}
        self.subscriber: Subscriber | None = None
        """Its side of the broadcast queues, made on its first subscription."""

    def __repr__(self) -> str:
        return f"<Client {self.name!r} #{self.connection.id}>"

    @property
    def request(self) -> Request | None:
        return self.connection.request

    async def send(self, message: Message | dict[str, Any]) -> None:
        """Send a JSON object (``dict``), text or bytes. See ``WebSocketConnection.send``."""
        await self.connection.send(message)

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake; the connection's task finishes it."""
        await self.connection.send_close(code, reason)


class ClientRegistry:
    """The logged-in clients of this node by name (case-insensitive); sends reach any node."""

    def __init__(self, broker: Broker) -> None:
        self._clients: dict[str, Client] = {}
        self._broker = broker
        broker.on_routed = self._on_routed

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name_key(name) in self._clients

    def get(self, name: str) -> Client | None:
        """The client of this node logged in as ``name`` (any case), or ``None``."""
        return self._clients.get(name_key(name))

    def names(self) -> list[str]:
        """The names of this node's logged-in clients, sorted."""
        return sorted(client.name for client in self._clients.values())

    async def send(self, name: str, message: Message | dict[str, Any]) -> None:
        """Send to the client called ``name``, wherever it is connected, without waiting
        for its socket.

        Raises:
            UnknownClient: nobody of that name is connected (or it just disconnected).
            RecipientBusy: it is connected to this node but more than its write buffer is
                queued for it already (it does not read). Nothing was sent.
            BrokerUnavailable: the name is not on this node and the broker is unavailable.
        """
        client = self._clients.get(name_key(name))
        if client is not None:
            try:
                client.connection.send_nowait(message)
                return
            except ConnectionClosed:
                pass  # it is leaving (or was taken over elsewhere): ask the broker
            except trio.WouldBlock:
                raise RecipientBusy(name) from None
        payload = message if isinstance(message, str | bytes) else _encode(message)
        if not await self._broker.route(name, payload):
            raise UnknownClient(name)

    async def disconnect(
        self, name: str, code: int = CloseCode.NORMAL_CLOSURE, reason: str = ""
    ) -> None:
        """Close the connection of the client called ``name``, wherever it is connected,
        with ``code`` and ``reason``, without waiting for the close handshake.

        Raises:
            UnknownClient: nobody of that name is connected (or it is leaving already).
            BrokerUnavailable: the name is not on this node and the broker is unavailable.
        """
        client = self._clients.get(name_key(name))
        if client is not None and _close_nowait(client, code, reason):
            return
        if not await self._broker.route(name, RoutedClose(code, reason)):
            raise UnknownClient(name)

    def _on_routed(self, name: str, payload: Payload) -> bool:
        client = self._clients.get(name_key(name))
        if client is None:
            return False
        if isinstance(payload, RoutedClose):
            return _close_nowait(client, payload.code, payload.reason)
        try:
            client.connection.send_nowait(payload)
        except (ConnectionClosed, trio.WouldBlock):
            return False
        return True

    def _add(self, client: Client) -> None:
        self._clients[name_key(client.name)] = client

    def _remove(self, client: Client) -> None:
        key = name_key(client.name)
        if self._clients.get(key) is client:
            del self._clients[key]


def _close_nowait(client: Client, code: int, reason: str) -> bool:
    """Start closing ``client``'s connection; whether it was open to close."""
    conn = client.connection
    log.info("#%d %r disconnected (%d) by the server API", conn.id, client.name, code)
    try:
        if not conn.close_nowait(code, reason):
            conn.drain_soon()  # (always on TLS) the Close goes out behind what is owed
    except ConnectionClosed:
        return False
    return True


def _encode(message: Any) -> str | bytes:
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if not isinstance(message, dict):
        raise TypeError(f"cannot send {type(message).__name__}; use str, bytes or dict")
    return dumps(message)
