"""Regressions found by fuzzing the core (``tests/fuzz/``), one test per finding.

Each test states the input in readable form; the raw fuzz input is kept beside it where
it is short, and is replayed through its target too.
"""

from __future__ import annotations

import traceback
import tracemalloc
from collections.abc import Callable

import pytest

from tests.fuzz.targets import TARGETS
from trio_ws.protocol import (
    ClientHandshake,
    ConnectionState,
    InvalidStatus,
    RemoteProtocolError,
    Role,
    ServerHandshake,
    WebSocketProtocol,
)

from .helpers import close_payload, raw_frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def held_after(proto: WebSocketProtocol, data: bytes) -> int:
    """Bytes the core still holds after one ``receive_data(data)`` call."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        try:
            proto.receive_data(data)
        except RemoteProtocolError:
            pass
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


# ---------------------------------------------------------------- bytes after the end


def test_bytes_after_the_peers_close_are_not_kept() -> None:
    """Found by connection_server_deflate: the rest of a read after a Close stayed in the
    frame buffer for the life of the object (a whole read, up to the runtime's read size)."""
    proto = WebSocketProtocol(Role.SERVER)
    data = raw_frame(0x8, close_payload(1000)) + b"\x00" * 500_000
    assert held_after(proto, data) < 16 * 1024
    assert proto.state is ConnectionState.CLOSED


def test_bytes_after_the_close_in_the_fuzz_input() -> None:
    TARGETS["connection_server_deflate"](
        bytes.fromhex("00 8e ad 3f")
        + raw_frame(0x8, close_payload(1000), mask=b"\xc1\x07\x0f\x42")
        + b"\x15" * 200
    )


def test_a_failed_connection_does_not_keep_its_last_read() -> None:
    """The sticky error's traceback held the frame parser's locals, so the buffer of the
    read that failed (here 500 KB) lived as long as the protocol object."""
    proto = WebSocketProtocol(Role.SERVER)
    data = raw_frame(0x3, b"reserved opcode") + b"\x00" * 500_000
    assert held_after(proto, data) < 16 * 1024


def raise_count(call: Callable[[], object]) -> int:
    """Frames in the traceback of the error ``call`` raises."""
    with pytest.raises(RemoteProtocolError) as info:
        call()
    return len(traceback.extract_tb(info.value.__traceback__))


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: WebSocketProtocol(Role.SERVER), raw_frame(0x3)),
        (ServerHandshake, b"\x00 bad\r\n\r\n"),
        (lambda: ClientHandshake("example.com"), b"HTTP/1.1 1\r\n\r\n"),
    ],
    ids=["connection", "server handshake", "client handshake"],
)
def test_a_sticky_error_does_not_grow_when_raised_again(
    make: Callable[[], WebSocketProtocol | ServerHandshake | ClientHandshake], bad: bytes
) -> None:
    """Raising the stored error again used to add a frame to its traceback every call:
    a caller that kept feeding a failed object grew it without bound."""
    machine = make()
    first = raise_count(lambda: machine.receive_data(bad))
    for _ in range(100):
        with pytest.raises(RemoteProtocolError):
            machine.receive_data(b"x")
    assert raise_count(lambda: machine.receive_data(b"x")) <= first


# ---------------------------------------------------------------- status codes


@pytest.mark.parametrize("status", [b"000", b"042", b"099"])
def test_a_status_below_100_is_a_malformed_response(status: bytes) -> None:
    """Found by client_handshake: "HTTP/1.1 042 X" was reported as InvalidStatus(42), a
    response with a status no HTTP class has (RFC 7231 §6); it is a malformed head."""
    handshake = ClientHandshake("example.com")
    with pytest.raises(RemoteProtocolError) as info:
        handshake.receive_data(b"HTTP/1.1 " + status + b" Odd\r\n\r\n")
    assert not isinstance(info.value, InvalidStatus)
    assert info.value.close_code == 1002
    assert "malformed status line" in info.value.reason
    # From 100 up, a status other than 101 is still reported as the server's answer.
    with pytest.raises(InvalidStatus) as refused:
        ClientHandshake("example.com").receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert refused.value.response.status == 100


def test_the_status_found_by_the_fuzzer() -> None:
    TARGETS["client_handshake"](b"\x07HTTP/1.1 007 \r\n\r\n")


# ---------------------------------------------------------------- subprotocol tokens


def upgrade(protocol_header: bytes) -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: " + protocol_header + b"\r\n\r\n"
    )


@pytest.mark.parametrize(
    "value",
    [b"chat; v=1", b"a b", b'"quoted"', b"chat, caps=10; server_no_context_takeover"],
)
def test_a_subprotocol_that_is_not_a_token_is_a_400(value: bytes) -> None:
    """Found by server_handshake: a request offering "cax_window_bits=10; x" as a
    subprotocol was accepted, and accept(subprotocol=...) echoed it into a 101 that no
    client may accept (RFC 6455 §4.1: the header is 1#token)."""
    handshake = ServerHandshake()
    with pytest.raises(RemoteProtocolError) as info:
        handshake.receive_data(upgrade(value))
    assert info.value.http_status == 400
    assert "not a token" in info.value.reason
    # Tokens are still offered, and chosen.
    handshake = ServerHandshake()
    request = handshake.receive_data(upgrade(b"chat,  superchat ,"))
    assert request is not None
    assert request.subprotocols == ("chat", "superchat")
    assert b"Sec-WebSocket-Protocol: superchat\r\n" in handshake.accept(subprotocol="superchat")


def test_a_plain_request_with_a_bad_subprotocol_header_is_still_plain_http() -> None:
    handshake = ServerHandshake()
    request = handshake.receive_data(
        b"GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: a b\r\n\r\n"
    )
    assert request is not None
    assert not request.is_websocket
    assert request.subprotocols == ()


def test_the_subprotocol_found_by_the_fuzzer() -> None:
    offer = b"cax_window_bits=10; server_no_context_takeover"
    TARGETS["server_handshake"](b"\x07" + upgrade(offer))
