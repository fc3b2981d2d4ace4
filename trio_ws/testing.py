"""Helpers for testing trio_ws applications with pytest-trio, without sockets.

:func:`open_test_server` serves an app in memory and gives logged-in
:class:`TestClient` objects (send, receive with a timeout, assert on close codes), as
Starlette's ``TestClient.websocket_connect`` and Channels' ``WebsocketCommunicator`` do.

:class:`MemoryListener` is a :class:`trio.abc.Listener` whose connections are in-memory
streams, so an :class:`~trio_ws.App` can be served and reached under trio's virtual clock
(``autojump_clock``), where real sockets would let the clock jump while bytes are in
flight::

    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        async with trio_ws.connect("ws://test/ws", stream=await listener.connect()) as ws:
            ...
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from ._client import connect
from ._connection import ConnectionClosed, WebSocketConnection

if TYPE_CHECKING:
    from ._app import App
    from ._server import Server

__all__ = ["DEFAULT_TIMEOUT", "MemoryListener", "TestClient", "TestServer", "open_test_server"]

DEFAULT_TIMEOUT = 5.0
"""Seconds ``TestClient.receive`` waits by default (virtual seconds under autojump_clock)."""


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs (see the module docstring)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)
        self._closed = False

    async def connect(self) -> trio.abc.Stream:
        """Open a connection: return the client's end; the server's end is accepted."""
        if self._closed:
            raise trio.ClosedResourceError("the listener is closed")
        client, server = trio.testing.memory_stream_pair()
        self._send.send_nowait(server)
        await trio.lowlevel.checkpoint()
        return client

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("the listener is closed") from None

    async def aclose(self) -> None:
        self._closed = True
        await self._send.aclose()
        await self._receive.aclose()


class TestClient:
    """A WebSocket client of a :class:`TestServer` (made by :meth:`TestServer.connect`).

    Attributes:
        connection: the underlying :class:`~trio_ws.WebSocketConnection`.
        name: the name it logged in with, if it did.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, connection: WebSocketConnection, name: str | None = None) -> None:
        self.connection = connection
        self.name = name

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send a JSON object (``dict``), a text or a binary message."""
        await self.connection.send(message)

    async def receive(self, *, within: float | None = DEFAULT_TIMEOUT) -> str | bytes:
        """The next message; fails with ``trio.TooSlowError`` after ``within`` seconds.

        Raises:
            ConnectionClosed: the server closed the connection.
        """
        with trio.fail_after(math.inf if within is None else within):
            return await self.connection.receive()

    async def receive_json(self, *, within: float | None = DEFAULT_TIMEOUT) -> Any:
        """The next message, which must be JSON text, decoded."""
        message = await self.receive(within=within)
        if not isinstance(message, str):
            raise AssertionError(f"expected a JSON text message, got {message!r}")
        return json.loads(message)

    async def expect_nothing(self, *, within: float = 0.1) -> None:
        """Assert that no message arrives within ``within`` seconds (virtual time under
        ``autojump_clock``)."""
        with trio.move_on_after(within):
            message = await self.connection.receive()
            raise AssertionError(f"expected nothing, got {message!r}")

    async def expect_closed(
        self, code: int | None = None, *, within: float | None = DEFAULT_TIMEOUT
    ) -> ConnectionClosed:
        """Wait until the server closes the connection (failing on any message); check
        ``code`` if given; return how it closed."""
        try:
            message = await self.receive(within=within)
        except ConnectionClosed as closed:
            if code is not None and closed.code != code:
                raise AssertionError(f"closed with {closed.code}, expected {code}") from None
            return closed
        raise AssertionError(f"expected the connection to close, got {message!r}")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the close handshake)."""
        await self.connection.aclose(code, reason)


class TestServer:
    """An app served over in-memory streams; see :func:`open_test_server`."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App | Server, listener: MemoryListener, nursery: trio.Nursery) -> None:
        self.app = app
        self.listener = listener
        self._nursery = nursery

    @asynccontextmanager
    async def connect(self, path: str = "/ws", **connect_kwargs: Any) -> AsyncIterator[TestClient]:
        """Open a client (``trio_ws.connect``'s keywords: ``headers``, ``subprotocols``,
        ``compression``, ...); it is closed at the end of the block."""
        stream = await self.listener.connect()
        async with connect(f"ws://testserver{path}", stream=stream, **connect_kwargs) as conn:
            yield TestClient(conn)

    @asynccontextmanager
    async def client(self, name: str, **login_fields: Any) -> AsyncIterator[TestClient]:
        """A client logged in as ``name`` (extra fields go into the login message, e.g.
        ``token=...``).

        Raises:
            AssertionError: the login was not answered with ``welcome``.
        """
        async with self.connect() as client:
            await client.send({"type": "login", "name": name, **login_fields})
            reply = await client.receive_json()
            if reply.get("type") != "welcome":
                raise AssertionError(f"login as {name!r} refused: {reply!r}")
            client.name = reply["name"]
            yield client


@asynccontextmanager
async def open_test_server(app: App | Server) -> AsyncIterator[TestServer]:
    """Serve ``app`` in memory for the length of the block, then shut it down.

    No sockets: it works under pytest-trio's ``autojump_clock``, where every timeout of
    the app (login, keepalive, a service's sleep) passes in virtual time::

        async def test_echo(autojump_clock):
            async with open_test_server(app) as server:
                async with server.client("alice") as alice, server.client("bob") as bob:
                    await alice.send({"type": "echo", "text": "hi"})
                    assert await alice.receive_json() == {"type": "echo", "text": "hi"}
    """
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        try:
            yield TestServer(app, listener, nursery)
        finally:
            nursery.cancel_scope.cancel()
