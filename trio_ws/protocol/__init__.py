"""The sans-IO WebSocket core: RFC 6455 and RFC 7692 as state machines, without I/O.

Nothing here reads a socket, awaits or looks at a clock: you feed bytes in, get events
out, and write the bytes it gives you, on whatever I/O you have (blocking sockets,
asyncio, trio, a test). trio_ws's own runtime is one user of it; ``demos/sansio_echo.py``
is another, on plain blocking sockets.

The pieces, in the order a connection uses them:

- **Opening handshake** (RFC 6455 §4): :class:`ServerHandshake` reads a :class:`Request`
  and answers it with :meth:`~ServerHandshake.accept` (the 101) or
  :meth:`~ServerHandshake.reject`; :class:`ClientHandshake` writes the request and checks
  the :class:`Response` (:class:`InvalidStatus` for anything but 101). Bytes that arrived
  after the head are in ``trailing_data``: feed them to the connection.
- **permessage-deflate** (RFC 7692): a server picks an offer with
  :func:`negotiate_server`, a client offers :func:`client_offer` and checks the answer
  with :func:`negotiate_client`; both give a :class:`PerMessageDeflate` (or ``None``).
- **The connection** (RFC 6455 §5-§7): :class:`WebSocketProtocol` in either
  :class:`Role`. ``receive_data()`` / ``receive_eof()`` in, ``events_received()``
  (:class:`TextMessage`, :class:`BytesMessage`, :class:`Ping`, :class:`Pong`,
  :class:`Close`) and ``data_to_send()`` out; ``send_text()``, ``send_bytes()``,
  ``send_ping()``, ``send_close()`` queue frames. It answers Pings and Closes itself, so
  write ``data_to_send()`` after every ``receive_data()``.
- **Errors**: everything raised on purpose is a :class:`WebSocketError`.
  :class:`RemoteProtocolError` means the peer broke the rules; it carries the
  ``close_code`` (already queued as a Close frame) or, in a handshake, the
  ``http_status`` to answer with. :class:`LocalProtocolError` means the caller asked for
  something illegal in the current state. Both are sticky.

Limits (``max_head_size``, ``max_message_size``, ``max_fragments``) are checked before
anything is buffered. The core has no clock, so timeouts are the caller's:
:attr:`WebSocketProtocol.message_in_progress` says when a fragmented message started.

A client and a server talking through memory:

>>> from trio_ws.protocol import (
...     ClientHandshake, Role, ServerHandshake, TextMessage, WebSocketProtocol,
...     client_offer, negotiate_client, negotiate_server,
... )
>>> client_hs = ClientHandshake("example.com", "/chat", extensions=[client_offer()])
>>> server_hs = ServerHandshake()
>>> request = server_hs.receive_data(client_hs.data_to_send())
>>> request.path, request.is_websocket
('/chat', True)
>>> deflate = negotiate_server(request.extensions)
>>> response = client_hs.receive_data(server_hs.accept(extensions=[deflate.response_value()]))
>>> response.status
101
>>> server = WebSocketProtocol(Role.SERVER, deflate=deflate)
>>> client = WebSocketProtocol(Role.CLIENT, deflate=negotiate_client(response.extensions[0]))
>>> client.send_text("Hello")
>>> server.receive_data(client.data_to_send())
>>> server.events_received()
[TextMessage(data='Hello')]
>>> server.send_close(1000, "bye")
>>> client.receive_data(server.data_to_send())
>>> client.events_received()
[Close(code=1000, reason='bye')]
>>> server.receive_data(client.data_to_send())  # the client echoed the Close
>>> server.state, client.state
(<ConnectionState.CLOSED: 'closed'>, <ConnectionState.CLOSED: 'closed'>)
"""

from ._connection import (
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    ConnectionState,
    MessageProgress,
    WebSocketProtocol,
)
from ._deflate import (
    EXTENSION_NAME,
    MessageCompressor,
    MessageDecompressor,
    PerMessageDeflate,
    client_offer,
    negotiate_client,
    negotiate_server,
)
from ._errors import (
    CloseCode,
    LocalProtocolError,
    RemoteProtocolError,
    WebSocketError,
    is_valid_close_code,
)
from ._events import BytesMessage, Close, Event, Ping, Pong, TextMessage
from ._frames import Opcode, Role
from ._handshake import (
    GUID,
    ClientHandshake,
    InvalidStatus,
    Request,
    Response,
    ServerHandshake,
    accept_key,
    build_response,
)
from ._headers import ExtensionOffer, parse_extensions, serialize_extension

__all__ = [
    # opening handshake (RFC 6455 §4)
    "GUID",
    "ClientHandshake",
    "InvalidStatus",
    "Request",
    "Response",
    "ServerHandshake",
    "accept_key",
    "build_response",
    # extension headers and permessage-deflate (RFC 6455 §9, RFC 7692)
    "EXTENSION_NAME",
    "ExtensionOffer",
    "MessageCompressor",
    "MessageDecompressor",
    "PerMessageDeflate",
    "client_offer",
    "negotiate_client",
    "negotiate_server",
    "parse_extensions",
    "serialize_extension",
    # the connection (RFC 6455 §5-§7)
    "DEFAULT_MAX_FRAGMENTS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ConnectionState",
    "MessageProgress",
    "Opcode",
    "Role",
    "WebSocketProtocol",
    # events
    "BytesMessage",
    "Close",
    "Event",
    "Ping",
    "Pong",
    "TextMessage",
    # errors
    "CloseCode",
    "LocalProtocolError",
    "RemoteProtocolError",
    "WebSocketError",
    "is_valid_close_code",
]
