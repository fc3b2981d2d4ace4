"""``connect()``: the Trio client, for tests, demos, benchmarks and services of your own."""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ._connection import WebSocketConnection
from ._transport import StreamTransport, TransportClosed
from .protocol._connection import DEFAULT_MAX_MESSAGE_SIZE, WebSocketProtocol
from .protocol._deflate import EXTENSION_NAME, client_offer, negotiate_client
from .protocol._errors import RemoteProtocolError, WebSocketError
from .protocol._frames import Role
from .protocol._handshake import ClientHandshake, Response


class HandshakeFailed(WebSocketError):
    """The opening handshake failed (refused, timed out, or invalid)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _parse_url(url: str) -> tuple[bool, str, int, str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host_header = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return secure, parts.hostname, port, host_header, target


@asynccontextmanager
async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    compression: bool = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float | None = 10.0,
    close_timeout: float = 5.0,
    stream: trio.abc.Stream | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket client connection; close it (1000) when the block ends.

    Args:
        url: ``ws://host:port/path?query`` or ``wss://...``.
        subprotocols: offered in order; the chosen one is ``conn.subprotocol``.
        headers: extra request headers (e.g. ``Cookie``, ``Authorization``).
        origin: the ``Origin`` header, as a browser would send it.
        compression: offer permessage-deflate.
        max_message_size: largest message accepted (``None``: unlimited).
        ssl_context: for ``wss://``; the default verifies certificates.
        open_timeout: seconds for TCP, TLS and the opening handshake together.
        close_timeout: seconds to wait for the server's Close reply.
        stream: speak over this stream instead of opening a TCP connection (the URL still
            gives the ``Host`` header and the path); for example one end of
            :class:`trio_ws.testing.MemoryListener`.

    The connection has no background task: pings from the server are answered, and pongs
    seen, while some task is in ``receive()``.

    Raises:
        HandshakeFailed: refused (``status`` set), timed out, or an invalid answer.
        OSError: the TCP connection could not be made.
    """
    secure, host, port, host_header, target = _parse_url(url)
    offer = client_offer() if compression else None
    with trio.move_on_after(open_timeout if open_timeout is not None else math.inf) as scope:
        if stream is None:
            stream = await trio.open_tcp_stream(host, port)
        try:
            if secure:
                stream = trio.SSLStream(
                    stream, ssl_context or ssl.create_default_context(), server_hostname=host
                )
            transport = StreamTransport(stream)
            handshake = ClientHandshake(
                host_header,
                target,
                subprotocols=subprotocols,
                extensions=[offer] if offer else (),
                origin=origin,
                headers=headers,
            )
            response = await _handshake(transport, handshake)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    if scope.cancelled_caught:
        raise HandshakeFailed(f"opening handshake with {url} timed out")
    deflate = None
    try:
        for extension in response.extensions:
            if extension.name == EXTENSION_NAME and deflate is None:
                deflate = negotiate_client(extension)
            else:
                raise RemoteProtocolError(f"unexpected extension {extension.name!r}")
    except RemoteProtocolError as exc:
        await transport.aclose()
        raise HandshakeFailed(f"invalid handshake response: {exc.reason}") from exc
    protocol = WebSocketProtocol(Role.CLIENT, deflate=deflate, max_message_size=max_message_size)
    conn = WebSocketConnection(
        transport,
        protocol,
        subprotocol=response.subprotocol,
        remote=f"{host}:{port}",
        close_timeout=close_timeout,
    )
    try:
        if handshake.trailing_data:
            conn.feed(handshake.trailing_data)
        yield conn
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()


async def _handshake(transport: StreamTransport, handshake: ClientHandshake) -> Response:
    try:
        await transport.send_all(handshake.data_to_send())
        while True:
            data = await transport.receive_some()
            if not data:
                raise HandshakeFailed("the server closed the connection during the handshake")
            try:
                response = handshake.receive_data(data)
            except RemoteProtocolError as exc:
                status = getattr(getattr(exc, "response", None), "status", None)
                raise HandshakeFailed(f"handshake failed: {exc.reason}", status=status) from exc
            if response is not None:
                return response
    except TransportClosed as exc:
        raise HandshakeFailed(f"connection lost during the handshake: {exc}") from exc
