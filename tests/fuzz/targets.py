"""Fuzz targets for the sans-IO core, and the property each one checks.

Each target takes one ``bytes`` input and raises ``AssertionError`` (or any exception the
core should never raise) when the property fails. They do not depend on the fuzzer, so
atheris (``python -m tests.fuzz``) and hypothesis (``test_fuzz.py``) drive the same code.

The property (issue 10): any byte stream ends in events, or in a close with a valid code
(an HTTP status during the handshake), never another exception; errors are sticky; what
the core writes back is well-formed; and what it holds stays within the configured limits.

Input layout: a few leading bytes choose the options (limits, deflate parameters, how the
rest is cut into ``receive_data`` calls, one local action and when it happens); the rest
is the byte stream from the peer. Seeds in :mod:`tests.fuzz.corpus` follow this layout.
"""

# The targets run under atheris as well as pytest, so they check exceptions with plain
# try/except and assert, not pytest.raises.
# ruff: noqa: PT017

from __future__ import annotations

from collections.abc import Callable, Iterator

from trio_ws.protocol import (
    DEFAULT_MAX_FRAGMENTS,
    BytesMessage,
    ClientHandshake,
    Close,
    CloseCode,
    ConnectionState,
    Event,
    InvalidStatus,
    LocalProtocolError,
    PerMessageDeflate,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    ServerHandshake,
    TextMessage,
    WebSocketProtocol,
    accept_key,
    client_offer,
    is_valid_close_code,
    negotiate_client,
    negotiate_server,
)
from trio_ws.protocol._frames import FrameParser

# The client target replaces this placeholder with the Sec-WebSocket-Accept its random key
# needs, so that a fuzzer can reach everything after the accept check.
ACCEPT_PLACEHOLDER = b"@ACCEPT@"

CHUNK_SIZES = (1, 2, 3, 7, 64, 517, 4096, 1 << 30)
MESSAGE_SIZES = (16, 1000, 65536, 1 << 20)
FRAGMENT_CAPS = (1, 4, 64, DEFAULT_MAX_FRAGMENTS)
HANDSHAKE_STATUSES = frozenset({400, 426, 431, 505})
MAX_HEADER = 14  # the longest frame header: 2 bytes, a 64-bit length and a masking key


class Input:
    """A fuzz input read front to back: option bytes, then the rest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """The next byte, or 0 once the input is used up."""
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def rest(self) -> bytes:
        data = self.data[self.pos :]
        self.pos = len(self.data)
        return data


def chunks(data: bytes, code: int) -> Iterator[bytes]:
    """``data`` cut into ``receive_data`` calls of one of :data:`CHUNK_SIZES`."""
    size = CHUNK_SIZES[code & 7]
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ---------------------------------------------------------------------------------------
# The connection machine


def check_written(proto: WebSocketProtocol) -> list[Event]:
    """Drain what ``proto`` wrote; check it parses as frames its peer accepts.

    Returns the control frames as events (to compare a Close with the error).
    """
    data = proto.data_to_send()
    parser = FrameParser(
        expect_masked=proto.role is Role.CLIENT, allow_rsv1=True, max_frame_size=1 << 62
    )
    parser.feed(data)
    written: list[Event] = []
    while (frame := parser.next_frame()) is not None:
        if frame.opcode == 0x8:
            payload = frame.payload
            assert len(payload) != 1
            if payload:
                code = int.from_bytes(payload[:2], "big")
                assert is_valid_close_code(code), code
                written.append(Close(code, payload[2:].decode("utf-8")))
            else:
                written.append(Close(CloseCode.NO_STATUS_RCVD))
        elif frame.opcode in (0x9, 0xA):
            assert len(frame.payload) <= 125
            written.append(Pong(frame.payload) if frame.opcode == 0xA else Ping(frame.payload))
    assert parser.buffered == 0, "a partial frame was written"
    return written


def check_events(proto: WebSocketProtocol, events: list[Event], closed_before: bool) -> bool:
    """Check the events of one call; return whether a Close was among them."""
    closed = closed_before
    for event in events:
        assert not closed, f"{event!r} after the Close"
        if isinstance(event, TextMessage):
            assert isinstance(event.data, str)
            assert len(event.data.encode("utf-8")) <= proto.max_message_size
        elif isinstance(event, BytesMessage):
            assert isinstance(event.data, bytes)
            assert len(event.data) <= proto.max_message_size
        elif isinstance(event, Ping | Pong):
            assert len(event.payload) <= 125
        elif isinstance(event, Close):
            assert is_valid_close_code(event.code) or event.code in (1005, 1006), event
            closed = True
        else:
            raise AssertionError(f"not an event: {event!r}")
    return closed


def check_bounded(proto: WebSocketProtocol) -> None:
    """What the core holds stays within its limits: at most one partial frame whose
    header passed the size check (a control frame: 125 bytes), and at most
    ``max_message_size`` bytes of a message."""
    parser = proto._parser
    largest = max(parser.max_frame_size, 125)  # control frames are bounded by §5.5 instead
    assert parser.buffered <= MAX_HEADER + largest, parser.buffered
    assert proto._msg_size <= proto.max_message_size
    assert proto._msg_fragments <= proto.max_fragments
    progress = proto.message_in_progress
    if progress is not None:
        assert progress.size <= proto.max_message_size
        assert proto.state is not ConnectionState.CLOSED


def local_action(proto: WebSocketProtocol, code: int) -> None:
    """One thing our side may do; LocalProtocolError is allowed only once not OPEN."""
    state = proto.state
    try:
        kind = code & 7
        if kind == 0:
            proto.send_text("hé" * (code >> 3), final=bool(code & 0x80))
        elif kind == 1:
            proto.send_bytes(bytes(code), final=bool(code & 0x80))
        elif kind == 2:
            proto.send_ping(b"p" * (code >> 3))
        elif kind == 3:
            proto.send_pong(b"")
        elif kind == 4:
            proto.send_close(CloseCode.GOING_AWAY, "bye" * (code >> 3))
        elif kind == 5:
            proto.send_close(None)
        elif kind == 6:
            proto.receive_eof()
    except LocalProtocolError:
        assert state is not ConnectionState.OPEN, "refused in state OPEN"
    check_written(proto)


def drive(proto: WebSocketProtocol, data: bytes, *, chunk_code: int, action: int) -> None:
    """Feed ``data`` as the peer's bytes, checking the property after every call."""
    closed = False
    error: RemoteProtocolError | None = None
    action_at = action >> 5
    for index, chunk in enumerate(chunks(data, chunk_code)):
        if index == action_at and action & 0x10:
            local_action(proto, action)
        was_open = proto.state is ConnectionState.OPEN
        try:
            proto.receive_data(chunk)
        except RemoteProtocolError as exc:
            if error is not None:
                assert exc is error, "the error is not sticky"
            error = exc
            assert is_valid_close_code(exc.close_code), exc
            assert exc.http_status is None
            assert proto.state is ConnectionState.CLOSED
            written = check_written(proto)
            if was_open:
                # §7.1.7: failing an open connection sends a Close with the error's code.
                assert written[-1:] == [Close(exc.close_code, proto.close_sent.reason)]  # type: ignore[union-attr]
        else:
            assert error is None, "a failed connection accepted more bytes"
            check_written(proto)
        closed = check_events(proto, proto.events_received(), closed)
        check_bounded(proto)
    proto.receive_eof()
    assert proto.state is ConnectionState.CLOSED
    closed = check_events(proto, proto.events_received(), closed)
    assert closed or error is not None, "the connection ended without a Close event"
    assert proto.message_in_progress is None
    assert proto.data_to_send() == b""


def make_deflate(code: int) -> PerMessageDeflate:
    return PerMessageDeflate(
        server_no_context_takeover=bool(code & 0x40),
        client_no_context_takeover=bool(code & 0x80),
        server_max_window_bits=8 + (code & 7),
        client_max_window_bits=8 + ((code >> 3) & 7),
    )


def connection(data: bytes, role: Role, *, deflate: bool) -> None:
    """The connection machine in ``role``, fed arbitrary bytes after the handshake."""
    inp = Input(data)
    options = inp.byte()
    deflate_code = inp.byte() if deflate else 0
    chunk_code = inp.byte()
    action = inp.byte()
    proto = WebSocketProtocol(
        role,
        deflate=make_deflate(deflate_code) if deflate else None,
        max_message_size=MESSAGE_SIZES[options & 3],
        max_fragments=FRAGMENT_CAPS[(options >> 2) & 3],
        auto_pong=not options & 0x10,
        compress=not options & 0x20,
    )
    drive(proto, inp.rest(), chunk_code=chunk_code, action=action)


def connection_server(data: bytes) -> None:
    connection(data, Role.SERVER, deflate=False)


def connection_client(data: bytes) -> None:
    connection(data, Role.CLIENT, deflate=False)


def connection_server_deflate(data: bytes) -> None:
    connection(data, Role.SERVER, deflate=True)


def connection_client_deflate(data: bytes) -> None:
    connection(data, Role.CLIENT, deflate=True)


# ---------------------------------------------------------------------------------------
# The opening handshakes


def server_handshake(data: bytes) -> None:
    """A request, in pieces: a Request or an HTTP status to answer with, nothing else.

    An accepted upgrade must produce a 101 that a client offering what was chosen accepts.
    """
    inp = Input(data)
    options = inp.byte()
    max_head_size = 256 if options & 0x80 else 8192
    max_headers = 4 if options & 0x40 else 128
    handshake = ServerHandshake(max_head_size=max_head_size, max_headers=max_headers)
    request = None
    try:
        for chunk in chunks(inp.rest(), options):
            got = handshake.receive_data(chunk)
            if got is not None:
                assert request is None, "two requests returned"
                request = got
    except RemoteProtocolError as exc:
        assert exc.http_status in HANDSHAKE_STATUSES, exc
        try:
            handshake.receive_data(b"more")
        except RemoteProtocolError as again:
            assert again is exc, "the error is not sticky"
        else:
            raise AssertionError("the error is not sticky") from None
        answer = handshake.reject(exc.http_status, body=exc.reason)
        assert answer.startswith(b"HTTP/1.1 %d " % exc.http_status)
        return
    if request is None:
        assert len(handshake._head._buffer) <= max_head_size
        handshake.reject(408)
        return
    # Every accessor works on whatever was accepted.
    _ = (request.host, request.origin, request.key, request.get("Cookie"))
    subprotocols = request.subprotocols
    assert isinstance(request.cookies, dict)
    assert request.path + ("?" + request.query if "?" in request.target else "") == request.target
    if not request.is_websocket:
        assert handshake.reject(404).startswith(b"HTTP/1.1 404 ")
        return
    agreed = negotiate_server(request.extensions)
    chosen = subprotocols[0] if subprotocols else None
    response = handshake.accept(
        subprotocol=chosen, extensions=[agreed.response_value()] if agreed else []
    )
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    # The 101 passes the checks of a client that offered what was chosen (§4.1).
    assert request.key is not None
    client = ClientHandshake(
        "example.com",
        subprotocols=[chosen] if chosen else [],
        extensions=[client_offer()] if agreed else [],
    )
    client.key = request.key
    answer = client.receive_data(response)
    assert answer is not None
    assert answer.status == 101
    assert answer.subprotocol == chosen
    assert len(answer.extensions) == (1 if agreed else 0)


def client_handshake(data: bytes) -> None:
    """A server's answer, in pieces, then frames: a Response or a 1002, then the property
    of the connection machine for whatever follows the 101."""
    inp = Input(data)
    options = inp.byte()
    offer_deflate = bool(options & 0x80)
    subprotocols = ["chat", "v2"] if options & 0x40 else []
    handshake = ClientHandshake(
        "example.com",
        "/ws",
        subprotocols=subprotocols,
        extensions=[client_offer()] if offer_deflate else [],
    )
    assert handshake.data_to_send().startswith(b"GET /ws HTTP/1.1\r\n")
    stream = inp.rest().replace(ACCEPT_PLACEHOLDER, accept_key(handshake.key).encode())
    response = None
    try:
        for chunk in chunks(stream, options):
            got = handshake.receive_data(chunk)
            if got is not None:
                assert response is None, "two responses returned"
                response = got
    except InvalidStatus as exc:
        assert exc.response.status != 101
        assert 100 <= exc.response.status <= 999
        return
    except RemoteProtocolError as exc:
        assert exc.http_status is None, exc
        assert exc.close_code == CloseCode.PROTOCOL_ERROR
        try:
            handshake.receive_data(b"more")
        except RemoteProtocolError as again:
            assert again is exc, "the error is not sticky"
        return
    if response is None:
        return
    assert response.status == 101
    assert response.subprotocol is None or response.subprotocol in subprotocols
    deflate = None
    for extension in response.extensions:
        assert extension.name == "permessage-deflate"  # nothing else was offered
        try:
            deflate = negotiate_client(extension)
        except RemoteProtocolError as exc:
            assert exc.close_code == CloseCode.PROTOCOL_ERROR
            return
    proto = WebSocketProtocol(Role.CLIENT, deflate=deflate, max_message_size=65536)
    drive(proto, handshake.trailing_data, chunk_code=options >> 3, action=0)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "server_handshake": server_handshake,
    "client_handshake": client_handshake,
    "connection_server": connection_server,
    "connection_client": connection_client,
    "connection_server_deflate": connection_server_deflate,
    "connection_client_deflate": connection_client_deflate,
}
