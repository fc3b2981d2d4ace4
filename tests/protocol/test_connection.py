"""The RFC 6455 connection state machine: messages, control frames, errors, closing, limits."""

from __future__ import annotations

import itertools
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_ws.protocol import _connection, _frames
from trio_ws.protocol._connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ConnectionState,
    WebSocketProtocol,
)
from trio_ws.protocol._deflate import PerMessageDeflate
from trio_ws.protocol._errors import (
    CloseCode,
    LocalProtocolError,
    RemoteProtocolError,
    WebSocketError,
)
from trio_ws.protocol._events import BytesMessage, Close, Event, Ping, Pong, TextMessage
from trio_ws.protocol._frames import Opcode, Role

from .helpers import (
    RFC_MASK,
    ProtocolPair,
    close_payload,
    parse_close,
    parse_frames,
    raw_frame,
    sent_frames,
)

# ---------------------------------------------------------------- helpers


def server(**kwargs: object) -> WebSocketProtocol:
    return WebSocketProtocol(Role.SERVER, **kwargs)  # type: ignore[arg-type]


def client(**kwargs: object) -> WebSocketProtocol:
    return WebSocketProtocol(Role.CLIENT, **kwargs)  # type: ignore[arg-type]


def feed(proto: WebSocketProtocol, *frames: bytes) -> list[Event]:
    proto.receive_data(b"".join(frames))
    return proto.events_received()


def assert_fails(
    proto: WebSocketProtocol, data: bytes, code: int, *, reason: str | None = None
) -> RemoteProtocolError:
    """Feed ``data``; check the error (and its ``reason``, the text the peer gets), the
    Close frame queued for it, the state, stickiness."""
    with pytest.raises(RemoteProtocolError) as exc_info:
        proto.receive_data(data)
    error = exc_info.value
    assert error.close_code == code
    if reason is not None:
        assert error.reason == reason
    assert proto.state is ConnectionState.CLOSED
    frames = sent_frames(proto)
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    sent_code, reason = parse_close(frames[0])
    assert sent_code == code
    assert len(reason) <= 123
    assert proto.close_sent == Close(code, reason.decode("utf-8"))
    # Sticky: the connection stays failed, whatever comes next.
    with pytest.raises(RemoteProtocolError) as again:
        proto.receive_data(raw_frame(Opcode.TEXT, b"ok", mask=expected_mask(proto)))
    assert again.value is error
    assert proto.data_to_send() == b""
    return error


def expected_mask(proto: WebSocketProtocol) -> bytes | None:
    """The masking key a legal frame *to* ``proto`` carries (None for frames to a client)."""
    return b"\x01\x02\x03\x04" if proto.role is Role.SERVER else None


DEFLATE_CONFIGS = [
    PerMessageDeflate(),
    PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True),
    PerMessageDeflate(server_no_context_takeover=True),
    PerMessageDeflate(server_max_window_bits=9, client_max_window_bits=10),
    PerMessageDeflate(server_max_window_bits=8, client_max_window_bits=8),
]


def deflate_raw(data: bytes, *, wbits: int = 15) -> bytes:
    """Compress one message the way RFC 7692 §7.2.1 says, independently of _deflate."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@pytest.fixture(params=["python", "compiled"])
def mask_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the pure-Python masking and frame parser, then with the compiled
    ones (when built)."""
    if request.param == "compiled":
        if not _frames.HAS_SPEEDUPS:
            pytest.skip("the compiled speedup was not built")
        assert _frames.apply_mask is _frames._apply_mask_c
        assert _frames.parse_frame is _frames._parse_frame_c
        assert _frames.take_messages is _frames._take_messages_c
        yield "compiled"
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_frames, "apply_mask", _frames._apply_mask_python)
        mp.setattr(_frames, "parse_frame", _frames._parse_frame_python)
        mp.setattr(_frames, "unmask_join", _frames._unmask_join_python)
        mp.setattr(_frames, "take_messages", None)
        yield "python"


# ---------------------------------------------------------------- data messages


def test_initial_state() -> None:
    proto = server()
    assert proto.state is ConnectionState.OPEN
    assert proto.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert proto.data_to_send() == b""
    assert proto.events_received() == []
    assert proto.close_sent is None
    assert proto.close_received is None


def test_rfc_vectors_through_the_connection() -> None:
    assert feed(server(), bytes.fromhex("818537fa213d7f9f4d5158")) == [TextMessage("Hello")]
    assert feed(client(), bytes.fromhex("810548656c6c6f")) == [TextMessage("Hello")]
    assert feed(client(), bytes.fromhex("010348656c"), bytes.fromhex("80026c6f")) == [
        TextMessage("Hello")
    ]
    proto = client()
    assert feed(proto, bytes.fromhex("890548656c6c6f")) == [Ping(b"Hello")]
    (pong,) = sent_frames(proto)
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"Hello")
    assert feed(server(), bytes.fromhex("8a8537fa213d7f9f4d5158")) == [Pong(b"Hello")]


def test_server_sends_unmasked_rfc_bytes() -> None:
    proto = server()
    proto.send_text("Hello")
    assert proto.data_to_send() == bytes.fromhex("810548656c6c6f")
    proto.send_text("Hel", final=False)
    proto.send_text("lo")
    assert proto.data_to_send() == bytes.fromhex("010348656c80026c6f")
    proto.send_ping(b"Hello")
    assert proto.data_to_send() == bytes.fromhex("890548656c6c6f")
    payload = bytes(256)
    proto.send_bytes(payload)
    assert proto.data_to_send() == bytes.fromhex("827e0100") + payload
    payload = bytes(65536)
    proto.send_bytes(payload)
    assert proto.data_to_send() == bytes.fromhex("827f0000000000010000") + payload


@pytest.mark.parametrize("size", [0, 125, 126, 127, 65_535, 65_536])
def test_server_text_header_at_each_length_form_boundary(size: int) -> None:
    """§5.2: up to 125 bytes the length is in the second byte; 126 and 127 there mean a
    16- or 64-bit length follows, so a 126-byte payload needs the 16-bit form."""
    proto = server()
    proto.send_text("t" * size)
    if size < 126:
        head = bytes([0x81, size])
    elif size < 65_536:
        head = bytes([0x81, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 127]) + size.to_bytes(8, "big")
    assert proto.data_to_send() == head + b"t" * size


def test_server_large_fragments_keep_their_fin_bit() -> None:
    """A fragment large enough to be queued apart from its header is still marked not
    final, and the peer reassembles the message."""
    pair = ProtocolPair()
    pair.server.send_bytes(b"a" * 20_000, final=False)
    pair.server.send_bytes(b"b" * 20_000)
    frames = sent_frames(pair.server)
    assert [(f.opcode, f.fin) for f in frames] == [
        (Opcode.BINARY, False),
        (Opcode.CONTINUATION, True),
    ]
    pair.server.send_text("t" * 20_000, final=False)
    pair.server.send_text("u")
    assert pair.transfer(pair.server) == [TextMessage("t" * 20_000 + "u")]


def test_client_masks_every_frame() -> None:
    proto = client()
    proto.send_text("Hello")
    proto.send_bytes(b"x" * 300)
    proto.send_ping(b"p")
    proto.send_pong(b"q")
    proto.send_close(1000, "bye")
    frames = parse_frames(proto.data_to_send(), masked=True)
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.TEXT, b"Hello"),
        (Opcode.BINARY, b"x" * 300),
        (Opcode.PING, b"p"),
        (Opcode.PONG, b"q"),
        (Opcode.CLOSE, close_payload(1000, b"bye")),
    ]


def test_text_and_bytes_both_directions() -> None:
    pair = ProtocolPair()
    pair.client.send_text("héllo €")
    pair.client.send_bytes(b"\x00\xff")
    pair.client.send_bytes(bytearray(b"ba"))
    pair.client.send_bytes(memoryview(b"mv"))
    assert pair.transfer(pair.client) == [
        TextMessage("héllo €"),
        BytesMessage(b"\x00\xff"),
        BytesMessage(b"ba"),
        BytesMessage(b"mv"),
    ]
    pair.server.send_text("")
    pair.server.send_bytes(b"")
    assert pair.transfer(pair.server) == [TextMessage(""), BytesMessage(b"")]


def test_fragmented_messages_are_reassembled() -> None:
    pair = ProtocolPair()
    pair.client.send_bytes(b"ab", final=False)
    pair.client.send_bytes(b"", final=False)
    pair.client.send_bytes(b"cd")
    pair.client.send_text("x", final=False)
    pair.client.send_text("€")
    assert pair.transfer(pair.client) == [BytesMessage(b"abcd"), TextMessage("x€")]


def test_no_event_before_the_final_fragment() -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.BINARY, b"ab", fin=False)) == []
    assert feed(proto, raw_frame(Opcode.CONTINUATION, b"cd", fin=False)) == []
    assert feed(proto, raw_frame(Opcode.CONTINUATION, b"ef")) == [BytesMessage(b"abcdef")]


def test_cannot_switch_type_mid_message() -> None:
    proto = client()
    proto.send_text("a", final=False)
    with pytest.raises(LocalProtocolError, match=r"^cannot switch message type in the middle"):
        proto.send_bytes(b"b")


def test_valid_multibyte_character_split_across_fragments() -> None:
    euro = "€".encode()  # e2 82 ac
    proto = server()
    frames = [
        raw_frame(Opcode.TEXT, b"a" + euro[:1], fin=False),
        raw_frame(Opcode.CONTINUATION, euro[1:2], fin=False),
        raw_frame(Opcode.CONTINUATION, euro[2:] + b"b"),
    ]
    for frame in frames[:-1]:
        assert feed(proto, frame) == []
    assert feed(proto, frames[-1]) == [TextMessage("a€b")]


def test_events_before_an_error_are_kept() -> None:
    proto = server()
    with pytest.raises(RemoteProtocolError):
        proto.receive_data(raw_frame(Opcode.TEXT, b"ok") + raw_frame(Opcode.TEXT, b"\xff"))
    assert proto.events_received() == [TextMessage("ok")]


# ---------------------------------------------------------------- errors: framing


SERVER_PROTOCOL_ERRORS = [
    pytest.param(raw_frame(Opcode.TEXT, b"a", rsv2=True), id="rsv2"),
    pytest.param(raw_frame(Opcode.TEXT, b"a", rsv3=True), id="rsv3"),
    pytest.param(raw_frame(Opcode.TEXT, b"a", rsv1=True), id="rsv1-without-deflate"),
    *(pytest.param(raw_frame(op, b"x"), id=f"reserved-opcode-{op:#x}") for op in range(3, 8)),
    *(pytest.param(raw_frame(op, b"x"), id=f"reserved-opcode-{op:#x}") for op in range(0xB, 0x10)),
    pytest.param(raw_frame(Opcode.TEXT, b"a", mask=None), id="unmasked-client-frame"),
    pytest.param(raw_frame(Opcode.PING, b"p" * 126), id="control-126-16-bit-marker"),
    pytest.param(raw_frame(Opcode.PING, b"", length_form=126), id="control-16-bit-form-len-0"),
    pytest.param(raw_frame(Opcode.PONG, b"", length_form=127), id="control-64-bit-form"),
    pytest.param(raw_frame(Opcode.CLOSE, b"", length_form=127), id="close-64-bit-form"),
    pytest.param(raw_frame(Opcode.PING, b"p", fin=False), id="fragmented-ping"),
    pytest.param(raw_frame(Opcode.CLOSE, close_payload(1000), fin=False), id="fragmented-close"),
    pytest.param(raw_frame(Opcode.BINARY, length=1 << 63)[:10], id="64-bit-length-msb"),
    pytest.param(raw_frame(Opcode.CONTINUATION, b"x"), id="continuation-without-start"),
    pytest.param(
        raw_frame(Opcode.TEXT, b"a", fin=False) + raw_frame(Opcode.TEXT, b"b"),
        id="new-text-during-fragmented-message",
    ),
    pytest.param(
        raw_frame(Opcode.BINARY, b"a", fin=False) + raw_frame(Opcode.BINARY, b"b"),
        id="new-binary-during-fragmented-message",
    ),
    pytest.param(
        raw_frame(Opcode.BINARY, b"a", fin=False) + raw_frame(Opcode.TEXT, b"b", fin=False),
        id="new-fragment-during-fragmented-message",
    ),
    pytest.param(raw_frame(Opcode.CLOSE, b"\x03"), id="close-1-byte-payload"),
]


# What each error tells the peer, in its Close frame: by the ids of the cases above and below.
_RESERVED_BITS = "reserved bits set without an extension that defines them"
_CONTROL_OVER_125 = "control frame payload over 125 bytes"
_NEW_DATA_FRAME = "new data frame before the previous message ended"
_CONTINUATION = "continuation frame without a message to continue"
PROTOCOL_ERROR_REASONS = {
    "rsv1": _RESERVED_BITS,
    "rsv2": _RESERVED_BITS,
    "rsv3": _RESERVED_BITS,
    "rsv1-without-deflate": _RESERVED_BITS,
    **{
        f"reserved-opcode-{op:#x}": f"reserved opcode {op:#x}"
        for op in (*range(3, 8), *range(11, 16))
    },
    "opcode-3": "reserved opcode 0x3",
    "opcode-f": "reserved opcode 0xf",
    "unmasked-client-frame": "client frame not masked",
    "control-126": _CONTROL_OVER_125,
    "control-126-16-bit-marker": _CONTROL_OVER_125,
    "control-16-bit-form-len-0": _CONTROL_OVER_125,
    "control-64-bit-form": _CONTROL_OVER_125,
    "close-64-bit-form": _CONTROL_OVER_125,
    "fragmented-control": "fragmented control frame",
    "fragmented-ping": "fragmented control frame",
    "fragmented-close": "fragmented control frame",
    "64-bit-length-msb": "64-bit payload length with the most significant bit set",
    "continuation": _CONTINUATION,
    "continuation-without-start": _CONTINUATION,
    "new-text-during-fragmented-message": _NEW_DATA_FRAME,
    "new-binary-during-fragmented-message": _NEW_DATA_FRAME,
    "new-fragment-during-fragmented-message": _NEW_DATA_FRAME,
    "close-1-byte-payload": "close frame with a 1-byte payload",
}


def test_remote_protocol_error_repr_and_text() -> None:
    refusal = RemoteProtocolError("bad header", http_status=400)
    assert str(refusal) == "bad header"
    assert repr(refusal) == "RemoteProtocolError('bad header', close_code=1002, http_status=400)"
    too_big = RemoteProtocolError("too big", close_code=CloseCode.MESSAGE_TOO_BIG)
    assert repr(too_big) == "RemoteProtocolError('too big', close_code=1009)"


@pytest.mark.parametrize("data", SERVER_PROTOCOL_ERRORS)
def test_server_protocol_errors(data: bytes, request: pytest.FixtureRequest) -> None:
    reason = PROTOCOL_ERROR_REASONS[request.node.callspec.id]
    assert_fails(server(), data, CloseCode.PROTOCOL_ERROR, reason=reason)


def test_client_rejects_masked_server_frame() -> None:
    assert_fails(
        client(),
        raw_frame(Opcode.TEXT, b"Hello"),
        CloseCode.PROTOCOL_ERROR,
        reason="server frame masked",
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw_frame(Opcode.TEXT, b"a", rsv2=True, mask=None), id="rsv2"),
        pytest.param(raw_frame(Opcode.TEXT, b"a", rsv1=True, mask=None), id="rsv1"),
        pytest.param(raw_frame(0x3, b"", mask=None), id="opcode-3"),
        pytest.param(raw_frame(0xF, b"", mask=None), id="opcode-f"),
        pytest.param(raw_frame(Opcode.PING, b"p" * 126, mask=None), id="control-126"),
        pytest.param(raw_frame(Opcode.PING, b"", fin=False, mask=None), id="fragmented-control"),
        pytest.param(raw_frame(Opcode.CONTINUATION, b"x", mask=None), id="continuation"),
    ],
)
def test_client_protocol_errors(data: bytes, request: pytest.FixtureRequest) -> None:
    """A failing client also queues its Close, masked as every client frame."""
    reason = PROTOCOL_ERROR_REASONS[request.node.callspec.id]
    assert_fails(client(), data, CloseCode.PROTOCOL_ERROR, reason=reason)


@pytest.mark.parametrize("length_form", [126, 127])
def test_control_frame_length_checked_from_the_first_two_bytes(length_form: int) -> None:
    proto = server()
    data = raw_frame(Opcode.PING, b"", length_form=length_form)
    assert_fails(
        proto, data[:2], CloseCode.PROTOCOL_ERROR, reason="control frame payload over 125 bytes"
    )


def test_rsv1_on_control_frame_with_deflate() -> None:
    assert_fails(
        server(deflate=PerMessageDeflate()),
        raw_frame(Opcode.PING, b"", rsv1=True),
        CloseCode.PROTOCOL_ERROR,
        reason="RSV1 set on a control frame",
    )


def test_rsv1_on_continuation_frame_with_deflate() -> None:
    proto = server(deflate=PerMessageDeflate())
    first = raw_frame(Opcode.BINARY, b"a", fin=False)
    assert feed(proto, first) == []
    assert_fails(
        proto,
        raw_frame(Opcode.CONTINUATION, b"b", rsv1=True),
        CloseCode.PROTOCOL_ERROR,
        reason="RSV1 set on a continuation frame",
    )


# ---------------------------------------------------------------- errors: UTF-8


def test_invalid_utf8_single_text_frame() -> None:
    assert_fails(
        server(),
        raw_frame(Opcode.TEXT, b"ok\xff"),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


def test_invalid_utf8_single_text_frame_to_client() -> None:
    assert_fails(
        client(),
        raw_frame(Opcode.TEXT, b"\xc0\xaf", mask=None),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\xff", id="invalid-byte"),
        pytest.param(b"\xe2\x82(", id="broken-sequence"),
        pytest.param(b"\xed\xa0\x80", id="surrogate"),
        pytest.param(b"\xf4\x90\x80\x80", id="above-max-code-point"),
    ],
)
def test_invalid_utf8_mid_message_fails_before_the_final_fragment(bad: bytes) -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.TEXT, "héllo".encode(), fin=False)) == []
    # The bad fragment is not final: the error must come now, not with the last fragment.
    assert_fails(
        proto,
        raw_frame(Opcode.CONTINUATION, bad, fin=False),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"\xed\xa0", id="surrogate-prefix"),
        pytest.param(b"\xf4\x90", id="beyond-max-prefix"),
        pytest.param(b"\xe0\x80", id="overlong-prefix"),
        pytest.param(b"\xf0\x80\x80", id="overlong-4-prefix"),
    ],
)
def test_invalid_prefix_at_the_end_of_a_fragment_fails_at_once(prefix: bytes) -> None:
    # The decoder holds an incomplete sequence back; these prefixes can never become valid.
    assert_fails(
        server(),
        raw_frame(Opcode.TEXT, b"ok" + prefix, fin=False),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


@pytest.mark.parametrize(
    ("prefix", "char"),
    [
        (b"\xe2\x82", "\u20ac"),
        (b"\xf0\x9f", "\U0001f600"),
        (b"\xf0\x9f\x98", "\U0001f600"),
        (b"\xed\x9f", "\ud7ff"),
        (b"\xe2", "\u20ac"),
    ],
)
def test_valid_prefix_at_the_end_of_a_fragment_is_kept(prefix: bytes, char: str) -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.TEXT, b"ok" + prefix, fin=False)) == []
    rest = char.encode()[len(prefix) :]
    assert feed(proto, raw_frame(Opcode.CONTINUATION, rest)) == [TextMessage("ok" + char)]


def test_invalid_utf8_in_first_fragment() -> None:
    assert_fails(
        server(),
        raw_frame(Opcode.TEXT, b"\xff", fin=False),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


def test_truncated_utf8_at_the_end_of_a_message() -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.TEXT, b"a\xe2", fin=False)) == []
    assert_fails(
        proto,
        raw_frame(Opcode.CONTINUATION, b"\x82"),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


def test_binary_messages_are_not_utf8_checked() -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.BINARY, b"\xff", fin=False)) == []
    assert feed(proto, raw_frame(Opcode.CONTINUATION, b"\xfe")) == [BytesMessage(b"\xff\xfe")]


# ---------------------------------------------------------------- errors: close frames

INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 4000, 4999]


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_code_received(code: int) -> None:
    data = raw_frame(Opcode.CLOSE, close_payload(code))
    assert_fails(server(), data, CloseCode.PROTOCOL_ERROR, reason=f"invalid close code {code}")


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_received_and_echoed(code: int) -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.CLOSE, close_payload(code, b"bye"))) == [Close(code, "bye")]
    assert proto.state is ConnectionState.CLOSED
    (reply,) = sent_frames(proto)
    assert parse_close(reply) == (code, b"")
    assert proto.close_received == Close(code, "bye")
    assert proto.close_sent == Close(code, "")


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_echoed_by_client(code: int) -> None:
    proto = client()
    assert feed(proto, raw_frame(Opcode.CLOSE, close_payload(code), mask=None)) == [Close(code)]
    (reply,) = sent_frames(proto)
    assert parse_close(reply) == (code, b"")


def test_invalid_utf8_close_reason() -> None:
    assert_fails(
        server(),
        raw_frame(Opcode.CLOSE, close_payload(1000, b"\xff")),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in the close reason",
    )


def test_close_reason_of_123_bytes_accepted() -> None:
    reason = "é" * 61 + "a"  # 123 bytes, the most a 125-byte control payload can hold
    proto = server()
    data = raw_frame(Opcode.CLOSE, close_payload(1000, reason.encode()))
    assert feed(proto, data) == [Close(1000, reason)]


# ---------------------------------------------------------------- errors: message size


def test_single_frame_too_big_detected_from_the_header_alone() -> None:
    proto = server(max_message_size=1000)
    frame = raw_frame(Opcode.BINARY, b"x" * 1001)
    header = frame[:4]  # 82 fe 03 e9: opcode, mask bit and the 16-bit length, no key yet
    assert header == bytes.fromhex("82fe03e9")
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 1001 bytes exceeds the 1000-byte limit",
    )


def test_single_frame_too_big_7_bit_length() -> None:
    proto = server(max_message_size=10)
    assert_fails(
        proto,
        raw_frame(Opcode.TEXT, b"x" * 11)[:2],
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 11 bytes exceeds the 10-byte limit",
    )


def test_huge_64_bit_frame_refused_from_the_header() -> None:
    proto = server()
    assert_fails(
        proto,
        raw_frame(Opcode.BINARY, length=1 << 40)[:10],
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 1099511627776 bytes exceeds the 1048576-byte limit",
    )


def test_client_refuses_frame_too_big() -> None:
    proto = client(max_message_size=100)
    header = raw_frame(Opcode.BINARY, b"x" * 101, mask=None)[:4]
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 101 bytes exceeds the 100-byte limit",
    )


def test_message_exactly_at_the_limit_is_accepted() -> None:
    proto = server(max_message_size=1000)
    assert feed(proto, raw_frame(Opcode.BINARY, b"x" * 1000)) == [BytesMessage(b"x" * 1000)]
    assert feed(proto, raw_frame(Opcode.TEXT, b"y" * 1000)) == [TextMessage("y" * 1000)]
    frames = [
        raw_frame(Opcode.TEXT, b"a" * 600, fin=False),
        raw_frame(Opcode.CONTINUATION, b"b" * 400),
    ]
    assert feed(proto, *frames) == [TextMessage("a" * 600 + "b" * 400)]


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_fragments_adding_up_beyond_the_limit(opcode: int) -> None:
    proto = server(max_message_size=1000)
    assert feed(proto, raw_frame(opcode, b"a" * 600, fin=False)) == []
    assert feed(proto, raw_frame(Opcode.CONTINUATION, b"b" * 300, fin=False)) == []
    # 100 bytes left: the next header announcing 101 is refused before its payload arrives.
    header = raw_frame(Opcode.CONTINUATION, b"c" * 101)[:2]
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 101 bytes exceeds the 100-byte limit",
    )


def test_limit_is_restored_after_a_fragmented_message() -> None:
    proto = server(max_message_size=1000)
    frames = [raw_frame(Opcode.BINARY, b"a" * 900, fin=False), raw_frame(Opcode.CONTINUATION, b"")]
    assert feed(proto, *frames) == [BytesMessage(b"a" * 900)]
    assert feed(proto, raw_frame(Opcode.BINARY, b"z" * 1000)) == [BytesMessage(b"z" * 1000)]


def test_control_frames_do_not_count_towards_the_message() -> None:
    proto = server(max_message_size=10)
    frames = [
        raw_frame(Opcode.BINARY, b"a" * 10, fin=False),
        raw_frame(Opcode.PING, b"p" * 125),
        raw_frame(Opcode.CONTINUATION, b""),
    ]
    assert feed(proto, *frames) == [Ping(b"p" * 125), BytesMessage(b"a" * 10)]


def test_max_message_size_none_is_unlimited() -> None:
    size = 3 * DEFAULT_MAX_MESSAGE_SIZE
    pair = ProtocolPair(max_message_size=None)
    pair.client.send_bytes(b"x" * size)
    pair.client.send_text("a" * size, final=False)
    pair.client.send_text("b")
    assert pair.transfer(pair.client) == [
        BytesMessage(b"x" * size),
        TextMessage("a" * size + "b"),
    ]


def test_default_limit_applies() -> None:
    proto = server()
    header = raw_frame(Opcode.BINARY, length=DEFAULT_MAX_MESSAGE_SIZE + 1)[:10]
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 1048577 bytes exceeds the 1048576-byte limit",
    )


# ---------------------------------------------------------------- close handshake


def test_server_initiated_close() -> None:
    pair = ProtocolPair()
    pair.server.send_close(1001, "going away")
    assert pair.server.state is ConnectionState.CLOSING
    assert pair.server.close_sent == Close(1001, "going away")
    assert pair.transfer(pair.server) == [Close(1001, "going away")]
    assert pair.client.state is ConnectionState.CLOSED
    assert pair.client.close_received == Close(1001, "going away")
    assert pair.client.close_sent == Close(1001, "")
    assert pair.transfer(pair.client) == [Close(1001, "")]
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.server.close_received == Close(1001, "")
    assert pair.server.data_to_send() == b""
    assert pair.client.data_to_send() == b""


def test_client_initiated_close() -> None:
    pair = ProtocolPair()
    pair.client.send_close(4000, "done")
    assert pair.client.state is ConnectionState.CLOSING
    assert pair.server.state is ConnectionState.OPEN
    assert pair.transfer(pair.client) == [Close(4000, "done")]
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.transfer(pair.server) == [Close(4000, "")]
    assert pair.client.state is ConnectionState.CLOSED
    # After the handshake, nothing more is expected and late bytes are ignored.
    pair.client.receive_data(raw_frame(Opcode.TEXT, b"late", mask=None))
    assert pair.client.events_received() == []
    pair.client.receive_eof()
    assert pair.client.events_received() == []


def test_simultaneous_close() -> None:
    pair = ProtocolPair()
    pair.client.send_close(1000, "c")
    pair.server.send_close(1001, "s")
    client_events, server_events = pair.pump()
    assert client_events == [Close(1001, "s")]
    assert server_events == [Close(1000, "c")]
    assert pair.client.state is pair.server.state is ConnectionState.CLOSED


def test_default_close_code_is_1000() -> None:
    pair = ProtocolPair()
    pair.client.send_close()
    assert pair.transfer(pair.client) == [Close(1000, "")]


def test_close_without_status() -> None:
    pair = ProtocolPair()
    pair.client.send_close(None)
    assert pair.client.close_sent == Close(CloseCode.NO_STATUS_RCVD, "")
    data = pair.client.data_to_send()
    frames = parse_frames(data, masked=True)
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.CLOSE, b"")]
    pair.server.receive_data(data)
    assert pair.server.events_received() == [Close(1005, "")]
    (reply,) = sent_frames(pair.server)
    assert (reply.opcode, reply.payload) == (Opcode.CLOSE, b"")
    assert pair.server.close_sent == Close(1005, "")


def test_close_without_status_but_with_reason_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match=r"^a close reason needs a close code$"):
        client().send_close(None, "why")


def test_receive_eof_reports_abnormal_closure() -> None:
    proto = server()
    proto.receive_eof()
    assert proto.state is ConnectionState.CLOSED
    assert proto.events_received() == [Close(1006, "")]
    assert proto.data_to_send() == b""
    proto.receive_eof()
    assert proto.events_received() == []


def test_receive_eof_while_closing() -> None:
    proto = server()
    proto.send_close()
    proto.receive_eof()
    assert proto.state is ConnectionState.CLOSED
    assert proto.events_received() == [Close(1006, "")]


def test_receive_eof_after_an_error_adds_nothing() -> None:
    proto = server()
    with pytest.raises(RemoteProtocolError):
        proto.receive_data(raw_frame(0x3, b""))
    proto.receive_eof()
    assert proto.events_received() == []


SEND_CALLS = [
    pytest.param(lambda p: p.send_text("x"), id="text"),
    pytest.param(lambda p: p.send_bytes(b"x"), id="bytes"),
    pytest.param(lambda p: p.send_ping(b""), id="ping"),
    pytest.param(lambda p: p.send_pong(b""), id="pong"),
    pytest.param(lambda p: p.send_close(), id="close"),
]
CANNOT_SEND = r"^cannot send a (message|ping|pong|close) in state [A-Z]+$"


@pytest.mark.parametrize("send", SEND_CALLS)
def test_nothing_can_be_sent_after_send_close(send) -> None:  # type: ignore[no-untyped-def]
    proto = client()
    proto.send_close()
    proto.data_to_send()
    with pytest.raises(LocalProtocolError, match=CANNOT_SEND):
        send(proto)
    assert proto.data_to_send() == b""


@pytest.mark.parametrize("send", SEND_CALLS)
def test_nothing_can_be_sent_after_close_received(send) -> None:  # type: ignore[no-untyped-def]
    proto = server()
    feed(proto, raw_frame(Opcode.CLOSE, close_payload(1000)))
    proto.data_to_send()
    with pytest.raises(LocalProtocolError, match=CANNOT_SEND):
        send(proto)
    assert proto.data_to_send() == b""


@pytest.mark.parametrize("send", SEND_CALLS)
def test_nothing_can_be_sent_after_failure(send) -> None:  # type: ignore[no-untyped-def]
    proto = server()
    with pytest.raises(RemoteProtocolError):
        proto.receive_data(raw_frame(0x3, b""))
    proto.data_to_send()
    with pytest.raises(LocalProtocolError, match=CANNOT_SEND):
        send(proto)


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 0])
def test_send_close_with_invalid_code(code: int) -> None:
    proto = server()
    with pytest.raises(LocalProtocolError, match=rf"^close code {code} may not be sent$"):
        proto.send_close(code)
    assert proto.state is ConnectionState.OPEN
    assert proto.close_sent is None
    assert proto.data_to_send() == b""


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("a" * 200, "a" * 123, id="ascii"),
        pytest.param("é" * 100, "é" * 61, id="two-byte"),
        pytest.param("a" + "€" * 60, "a" + "€" * 40, id="three-byte"),
        pytest.param("ab" + "😀" * 40, "ab" + "😀" * 30, id="four-byte"),
        pytest.param("a" * 123, "a" * 123, id="exactly-123"),
        pytest.param("a" * 124, "a" * 123, id="one-over"),
        pytest.param("a" * 127, "a" * 123, id="four-over"),
    ],
)
def test_close_reason_truncated_without_splitting_utf8(reason: str, expected: str) -> None:
    pair = ProtocolPair()
    pair.server.send_close(1000, reason)
    assert pair.server.close_sent == Close(1000, expected)
    data = pair.server.data_to_send()
    assert len(data) == 2 + 2 + len(expected.encode())
    assert len(data) <= 2 + 125
    pair.client.receive_data(data)
    assert pair.client.events_received() == [Close(1000, expected)]


def test_failure_reason_is_truncated_too() -> None:
    proto = server()
    error = RemoteProtocolError("€" * 100, close_code=1008)
    proto._fail(error)
    (frame,) = sent_frames(proto)
    code, reason = parse_close(frame)
    assert code == 1008
    assert reason.decode() == "€" * 41


def test_data_received_while_closing_is_delivered() -> None:
    pair = ProtocolPair()
    pair.server.send_close(1000, "bye")
    # The client sent these before it saw the server's Close.
    pair.client.send_text("in flight")
    pair.client.send_bytes(b"more", final=False)
    pair.client.send_bytes(b"!")
    pair.client.send_ping(b"p")
    assert pair.transfer(pair.client) == [
        TextMessage("in flight"),
        BytesMessage(b"more!"),
        Ping(b"p"),
    ]
    assert pair.server.state is ConnectionState.CLOSING
    # §5.5.2: the Ping is still answered, since no Close was received yet.
    data = pair.server.data_to_send()
    frames = parse_frames(data, masked=False)
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.CLOSE, close_payload(1000, b"bye")),
        (Opcode.PONG, b"p"),
    ]
    pair.client.receive_data(data)
    # The client stops at the Close: the Pong behind it is ignored.
    assert pair.client.events_received() == [Close(1000, "bye")]
    assert pair.transfer(pair.client) == [Close(1000, "")]
    assert pair.server.state is ConnectionState.CLOSED


def test_protocol_error_while_closing_sends_no_second_close() -> None:
    proto = server()
    proto.send_close(1000)
    proto.data_to_send()
    with pytest.raises(RemoteProtocolError) as exc_info:
        proto.receive_data(raw_frame(Opcode.TEXT, b"\xff"))
    assert exc_info.value.close_code == CloseCode.INVALID_DATA
    assert proto.state is ConnectionState.CLOSED
    assert proto.data_to_send() == b""
    assert proto.close_sent == Close(1000, "")


def test_bytes_after_a_close_frame_are_ignored() -> None:
    proto = server()
    events = feed(proto, raw_frame(Opcode.CLOSE, close_payload(1000)), raw_frame(Opcode.TEXT, b"x"))
    assert events == [Close(1000, "")]
    assert proto.state is ConnectionState.CLOSED


# ---------------------------------------------------------------- ping and pong


def test_ping_answered_with_the_same_payload() -> None:
    pair = ProtocolPair()
    pair.client.send_ping(b"payload")
    assert pair.transfer(pair.client) == [Ping(b"payload")]
    assert pair.transfer(pair.server) == [Pong(b"payload")]
    pair.server.send_ping()
    assert pair.transfer(pair.server) == [Ping(b"")]
    assert pair.transfer(pair.client) == [Pong(b"")]


def test_ping_of_125_bytes() -> None:
    pair = ProtocolPair()
    pair.server.send_ping(b"p" * 125)
    assert pair.transfer(pair.server) == [Ping(b"p" * 125)]
    assert pair.transfer(pair.client) == [Pong(b"p" * 125)]


def test_ping_answered_while_closing() -> None:
    proto = server()
    proto.send_close(1000)
    proto.data_to_send()
    assert feed(proto, raw_frame(Opcode.PING, b"still there?")) == [Ping(b"still there?")]
    (pong,) = sent_frames(proto)
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"still there?")
    assert proto.state is ConnectionState.CLOSING


def test_auto_pong_off() -> None:
    pair = ProtocolPair(auto_pong=False)
    pair.client.send_ping(b"x")
    assert pair.transfer(pair.client) == [Ping(b"x")]
    assert pair.server.data_to_send() == b""
    pair.server.send_pong(b"x")
    assert pair.transfer(pair.server) == [Pong(b"x")]


def test_unsolicited_pong() -> None:
    pair = ProtocolPair()
    pair.server.send_pong(b"heartbeat")
    assert pair.transfer(pair.server) == [Pong(b"heartbeat")]
    assert pair.client.data_to_send() == b""


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_control_payload_over_125_bytes_refused(method: str) -> None:
    proto = client()
    with pytest.raises(LocalProtocolError, match=r"^control frame payload over 125 bytes$"):
        getattr(proto, method)(b"x" * 126)
    assert proto.data_to_send() == b""
    assert proto.state is ConnectionState.OPEN


def test_ping_between_fragments() -> None:
    pair = ProtocolPair()
    pair.client.send_text("hel", final=False)
    pair.client.send_ping(b"1")
    pair.client.send_text("lo ", final=False)
    pair.client.send_pong(b"2")
    pair.client.send_text("wörld")
    assert pair.transfer(pair.client) == [Ping(b"1"), Pong(b"2"), TextMessage("hello wörld")]
    assert pair.transfer(pair.server) == [Pong(b"1")]


def test_ping_between_raw_fragments_gets_its_pong_at_once() -> None:
    proto = server()
    assert feed(proto, raw_frame(Opcode.BINARY, b"a", fin=False), raw_frame(Opcode.PING, b"x")) == [
        Ping(b"x")
    ]
    (pong,) = sent_frames(proto)
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"x")
    assert feed(proto, raw_frame(Opcode.CONTINUATION, b"b")) == [BytesMessage(b"ab")]


def test_close_between_fragments() -> None:
    proto = server()
    frames = [raw_frame(Opcode.TEXT, b"a", fin=False), raw_frame(Opcode.CLOSE, close_payload(1001))]
    assert feed(proto, *frames) == [Close(1001, "")]
    assert proto.state is ConnectionState.CLOSED


# ---------------------------------------------------------------- permessage-deflate


def test_compressed_message_has_rsv1_on_first_frame_only() -> None:
    pair = ProtocolPair(deflate=PerMessageDeflate())
    text = "compress me " * 50
    pair.client.send_text(text)
    frames = sent_frames(pair.client)
    assert [(f.opcode, f.rsv1, f.fin) for f in frames] == [(Opcode.TEXT, True, True)]
    assert len(frames[0].payload) < len(text)

    pair.client.send_bytes(b"a" * 500, final=False)
    pair.client.send_bytes(b"b" * 500, final=False)
    pair.client.send_bytes(b"c" * 500)
    pair.client.send_ping(b"ping")
    frames = sent_frames(pair.client)
    assert [(f.opcode, f.rsv1, f.fin) for f in frames] == [
        (Opcode.BINARY, True, False),
        (Opcode.CONTINUATION, False, False),
        (Opcode.CONTINUATION, False, True),
        (Opcode.PING, False, True),
    ]


def test_small_text_is_compressed_when_deflate_is_negotiated() -> None:
    """The short path for small text frames is for connections without compression: with
    permessage-deflate a short text goes out compressed (RSV1) like any other."""
    pair = ProtocolPair(deflate=PerMessageDeflate())
    pair.server.send_text("hi hi hi hi")
    data = pair.server.data_to_send()
    frames = parse_frames(data, masked=False)
    assert [(f.opcode, f.rsv1, f.fin) for f in frames] == [(Opcode.TEXT, True, True)]
    pair.client.receive_data(data)
    assert pair.client.events_received() == [TextMessage("hi hi hi hi")]


def test_compressed_messages_round_trip() -> None:
    pair = ProtocolPair(deflate=PerMessageDeflate())
    pair.client.send_text("€" * 1000)
    pair.client.send_bytes(b"a" * 500, final=False)
    pair.client.send_ping(b"!")
    pair.client.send_bytes(b"b" * 500)
    pair.client.send_text("")
    assert pair.transfer(pair.client) == [
        TextMessage("€" * 1000),
        Ping(b"!"),
        BytesMessage(b"a" * 500 + b"b" * 500),
        TextMessage(""),
    ]
    pair.server.send_text("back", final=False)
    pair.server.send_text(" again")
    assert pair.transfer(pair.server) == [Pong(b"!"), TextMessage("back again")]


def test_compressed_message_from_an_independent_compressor() -> None:
    """RFC 7692 §7.2.3.1: "Hello" compressed is c2 48 cd c9 c9 07 00 with RSV1 set."""
    proto = client(deflate=PerMessageDeflate())
    frame = bytes.fromhex("c107f248cdc9c90700")
    assert feed(proto, frame) == [TextMessage("Hello")]
    assert deflate_raw(b"Hello") == bytes.fromhex("f248cdc9c90700")


def test_rfc7692_shared_window_example() -> None:
    """RFC 7692 §7.2.3.2: the second "Hello" reuses the window of the first."""
    proto = client(deflate=PerMessageDeflate())
    frames = bytes.fromhex("c107f248cdc9c90700") + bytes.fromhex("c105f200110000")
    assert feed(proto, frames) == [TextMessage("Hello"), TextMessage("Hello")]


def test_rfc7692_fragmented_compressed_example() -> None:
    """RFC 7692 §7.2.3.1: "Hello" compressed and sent in two fragments."""
    proto = client(deflate=PerMessageDeflate())
    frames = bytes.fromhex("4103f248cd") + bytes.fromhex("8004c9c90700")
    assert feed(proto, frames) == [TextMessage("Hello")]


def test_uncompressed_message_with_deflate_negotiated() -> None:
    proto = server(deflate=PerMessageDeflate())
    assert feed(proto, raw_frame(Opcode.TEXT, b"plain")) == [TextMessage("plain")]
    assert feed(proto, raw_frame(Opcode.BINARY, b"a", fin=False), raw_frame(0, b"b")) == [
        BytesMessage(b"ab")
    ]


def test_compress_false_sends_uncompressed() -> None:
    pair = ProtocolPair(deflate=PerMessageDeflate(), server_kwargs={"compress": False})
    pair.server.send_text("x" * 100)
    (frame,) = sent_frames(pair.server)
    assert not frame.rsv1
    assert frame.payload == b"x" * 100


def test_invalid_utf8_in_compressed_text() -> None:
    proto = server(deflate=PerMessageDeflate())
    frame = raw_frame(Opcode.TEXT, deflate_raw(b"ok\xff"), rsv1=True)
    assert_fails(proto, frame, CloseCode.INVALID_DATA, reason="invalid UTF-8 in a text message")


def test_invalid_utf8_in_compressed_fragment_fails_early() -> None:
    proto = server(deflate=PerMessageDeflate())
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    part1 = compressor.compress(b"fine ") + compressor.flush(zlib.Z_SYNC_FLUSH)
    part2 = compressor.compress(b"\xff") + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert feed(proto, raw_frame(Opcode.TEXT, part1, rsv1=True, fin=False)) == []
    assert_fails(
        proto,
        raw_frame(0, part2, fin=False),
        CloseCode.INVALID_DATA,
        reason="invalid UTF-8 in a text message",
    )


def test_corrupt_compressed_data() -> None:
    proto = server(deflate=PerMessageDeflate())
    assert_fails(
        proto,
        raw_frame(Opcode.BINARY, b"\xff\xff\xff", rsv1=True),
        CloseCode.INVALID_DATA,
        reason="invalid compressed data",
    )


def test_deflate_bomb_is_refused_with_bounded_memory() -> None:
    limit = 64 * 1024
    bomb = deflate_raw(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < limit
    proto = server(deflate=PerMessageDeflate(), max_message_size=limit)
    data = raw_frame(Opcode.BINARY, bomb, rsv1=True)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as exc_info:
            proto.receive_data(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while refusing a bomb"
    (frame,) = sent_frames(proto)
    assert parse_close(frame)[0] == CloseCode.MESSAGE_TOO_BIG
    assert proto.state is ConnectionState.CLOSED


def test_deflate_bomb_spread_over_fragments() -> None:
    limit = 10_000
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(b"\0" * 6000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    proto = server(deflate=PerMessageDeflate(), max_message_size=limit)
    assert feed(proto, raw_frame(Opcode.BINARY, chunk, rsv1=True, fin=False)) == []
    assert_fails(
        proto,
        raw_frame(0, chunk, fin=False),
        CloseCode.MESSAGE_TOO_BIG,
        reason="message too big after decompression",
    )


def test_inflated_size_over_the_limit() -> None:
    proto = server(deflate=PerMessageDeflate(), max_message_size=1000)
    assert feed(proto, raw_frame(Opcode.TEXT, deflate_raw(b"a" * 1000), rsv1=True)) == [
        TextMessage("a" * 1000)
    ]
    assert_fails(
        proto,
        raw_frame(Opcode.TEXT, deflate_raw(b"a" * 1001), rsv1=True),
        CloseCode.MESSAGE_TOO_BIG,
        reason="message too big after decompression",
    )


def test_compressed_frame_limit_is_the_worst_case_of_deflate() -> None:
    # 1 MiB inflated: stored blocks add 1 KiB, plus 64 bytes of flush markers.
    budget = (1 << 20) + 1024 + 64
    proto = server(deflate=PerMessageDeflate(), max_message_size=1 << 20)
    assert feed(proto, raw_frame(Opcode.BINARY, length=budget, rsv1=True)[:14]) == []
    proto = server(deflate=PerMessageDeflate(), max_message_size=1 << 20)
    header = raw_frame(Opcode.BINARY, length=budget + 1, rsv1=True)[:14]
    reason = f"frame of {budget + 1} bytes exceeds the {budget}-byte limit"
    assert_fails(proto, header, CloseCode.MESSAGE_TOO_BIG, reason=reason)


def test_compressed_frame_too_big_refused_from_its_header() -> None:
    proto = server(deflate=PerMessageDeflate(), max_message_size=1000)
    header = raw_frame(Opcode.BINARY, length=100_000, rsv1=True)[:10]
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 100000 bytes exceeds the 1064-byte limit",
    )


def test_frame_limit_after_a_fragmented_message_without_deflate() -> None:
    """After a fragmented message the frame limit is the message limit again, not the
    compressed budget that only a negotiated deflate needs: a frame one byte over it is
    refused from its header, before any of its payload is read."""
    proto = server(max_message_size=100)
    assert feed(
        proto,
        raw_frame(Opcode.TEXT, b"o", fin=False),
        raw_frame(Opcode.CONTINUATION, b"k"),
    ) == [TextMessage("ok")]
    header = raw_frame(Opcode.BINARY, length=101)[:8]
    assert_fails(
        proto,
        header,
        CloseCode.MESSAGE_TOO_BIG,
        reason="frame of 101 bytes exceeds the 100-byte limit",
    )


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_uncompressed_frame_over_the_limit_with_deflate(opcode: int) -> None:
    """With deflate negotiated, an uncompressed message is held to the same limit."""
    proto = server(deflate=PerMessageDeflate(), max_message_size=1000)
    assert_fails(
        proto,
        raw_frame(opcode, b"a" * 1001),
        CloseCode.MESSAGE_TOO_BIG,
        reason="message exceeds the 1000-byte limit",
    )


@pytest.mark.parametrize("deflate", DEFLATE_CONFIGS, ids=repr)
def test_context_takeover_configurations(deflate: PerMessageDeflate) -> None:
    pair = ProtocolPair(deflate=deflate)
    messages = ["repeat " * 20] * 3 + ["x"]
    for text in messages:
        pair.client.send_text(text)
        pair.server.send_text(text)
    client_events, server_events = pair.pump()
    expected = [TextMessage(t) for t in messages]
    assert client_events == expected
    assert server_events == expected


# ---------------------------------------------------------------- hypothesis properties

# One message: (is_text, fragments). Text fragments are str, binary ones bytes.
text_messages = st.lists(st.text(max_size=40), min_size=1, max_size=4).map(lambda f: (True, f))
bytes_messages = st.lists(st.binary(max_size=300), min_size=1, max_size=4).map(lambda f: (False, f))
message_lists = st.lists(st.one_of(text_messages, bytes_messages), max_size=6)
deflate_configs = st.one_of(
    st.none(),
    st.builds(
        PerMessageDeflate,
        server_no_context_takeover=st.booleans(),
        client_no_context_takeover=st.booleans(),
        server_max_window_bits=st.integers(8, 15),
        client_max_window_bits=st.integers(8, 15),
    ),
)


def send_messages(
    proto: WebSocketProtocol,
    messages: list[tuple[bool, list[str] | list[bytes]]],
    *,
    ping_between: bool = False,
) -> list[Event]:
    """Send each message in its fragments; return the events the peer should see.

    With ``ping_between``, a Ping goes out after every non-final fragment (§5.4: control
    frames MAY be injected in the middle of a fragmented message).
    """
    expected: list[Event] = []
    for is_text, fragments in messages:
        last = len(fragments) - 1
        for i, fragment in enumerate(fragments):
            if is_text:
                assert isinstance(fragment, str)
                proto.send_text(fragment, final=i == last)
            else:
                assert isinstance(fragment, bytes)
                proto.send_bytes(fragment, final=i == last)
            if ping_between and i < last:
                payload = f"{len(expected)}/{i}".encode()
                proto.send_ping(payload)
                expected.append(Ping(payload))
        if is_text:
            expected.append(TextMessage("".join(fragments)))  # type: ignore[arg-type]
        else:
            expected.append(BytesMessage(b"".join(fragments)))  # type: ignore[arg-type]
    return expected


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=message_lists,
    deflate=deflate_configs,
    client_to_server=st.booleans(),
    ping_between=st.booleans(),
)
def test_messages_round_trip(
    mask_impl: str,
    messages: list[tuple[bool, list[str] | list[bytes]]],
    deflate: PerMessageDeflate | None,
    client_to_server: bool,
    ping_between: bool,
) -> None:
    """Runs once with each masking and parsing implementation (the ``mask_impl`` fixture)."""
    assert (_frames.apply_mask is _frames._apply_mask_python) == (mask_impl == "python")
    assert (_frames.parse_frame is _frames._parse_frame_python) == (mask_impl == "python")
    pair = ProtocolPair(deflate=deflate)
    sender = pair.client if client_to_server else pair.server
    expected = send_messages(sender, messages, ping_between=ping_between)
    # Then close, to check that the stream ends cleanly on a frame boundary.
    sender.send_close(1000, "end")
    expected.append(Close(1000, "end"))
    assert pair.transfer(sender) == expected
    pongs: list[Event] = [Pong(e.payload) for e in expected if isinstance(e, Ping)]
    assert pair.transfer(pair.peer(sender)) == [*pongs, Close(1000, "")]
    assert pair.client.state is pair.server.state is ConnectionState.CLOSED


@settings(max_examples=40, deadline=None)
@given(
    messages=message_lists,
    deflate=deflate_configs,
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
    client_to_server=st.booleans(),
)
def test_any_chunking_gives_the_same_events(
    messages: list[tuple[bool, list[str] | list[bytes]]],
    deflate: PerMessageDeflate | None,
    cuts: list[int],
    client_to_server: bool,
) -> None:
    pair = ProtocolPair(deflate=deflate)
    sender = pair.client if client_to_server else pair.server
    expected = send_messages(sender, messages[:3])
    sender.send_ping(b"ping")
    expected.append(Ping(b"ping"))
    expected += send_messages(sender, messages[3:])
    sender.send_close(1001)
    expected.append(Close(1001, ""))
    stream = sender.data_to_send()

    receiver = pair.peer(sender)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    events: list[Event] = []
    written = b""
    for start, end in itertools.pairwise(bounds):
        receiver.receive_data(stream[start:end])
        events += receiver.events_received()
        written += receiver.data_to_send()
    assert events == expected

    # The same bytes in one piece: same events, same bytes written back.
    whole = WebSocketProtocol(receiver.role, deflate=deflate)
    whole.receive_data(stream)
    assert whole.events_received() == expected
    masked = receiver.role is Role.CLIENT
    replies = [(f.opcode, f.payload) for f in parse_frames(written, masked=masked)]
    assert replies == [
        (f.opcode, f.payload) for f in parse_frames(whole.data_to_send(), masked=masked)
    ]


@settings(max_examples=60, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=3000), st.text(max_size=500).map(str.encode)),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    limit=st.sampled_from([None, 0, 100, 3000]),
    wbits=st.integers(9, 15),
)
def test_compressed_stream_split_anywhere(
    data: bytes, cuts: list[int], limit: int | None, wbits: int
) -> None:
    """RFC 7692 §6.1: a compressed message may be cut into fragments at any byte.

    Whatever the cuts, the message is accepted when it fits the limit and refused with 1009
    when it does not; a Ping sits between every two fragments.
    """
    compressed = deflate_raw(data, wbits=wbits)
    bounds = sorted({0, len(compressed), *(c % (len(compressed) + 1) for c in cuts)})
    parts = [compressed[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    frames = []
    for i, part in enumerate(parts):
        final = i == len(parts) - 1
        frames.append(raw_frame(Opcode.BINARY if i == 0 else 0, part, fin=final, rsv1=i == 0))
        if not final:
            frames.append(raw_frame(Opcode.PING, b"%d" % i))
    deflate = PerMessageDeflate(client_max_window_bits=wbits)
    proto = server(deflate=deflate, max_message_size=limit)
    pings: list[Event] = [Ping(b"%d" % i) for i in range(len(parts) - 1)]
    if limit is None or len(data) <= limit:
        assert feed(proto, *frames) == [*pings, BytesMessage(data)]
    else:
        with pytest.raises(RemoteProtocolError) as exc_info:
            proto.receive_data(b"".join(frames))
        assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2000), chunk=st.integers(1, 64))
def test_byte_at_a_time_equals_all_at_once(data: bytes, chunk: int) -> None:
    """Arbitrary input: same events and the same error whatever the chunking."""
    whole = server(max_message_size=4096)
    whole_error = None
    try:
        whole.receive_data(data)
    except RemoteProtocolError as exc:
        whole_error = exc.close_code
    pieces = server(max_message_size=4096)
    pieces_error = None
    events: list[Event] = []
    try:
        for i in range(0, len(data), chunk):
            pieces.receive_data(data[i : i + chunk])
            events += pieces.events_received()
    except RemoteProtocolError as exc:
        pieces_error = exc.close_code
    events += pieces.events_received()
    assert events == whole.events_received()
    assert pieces_error == whole_error


@st.composite
def frame_like(draw: st.DrawFn, masked: bool) -> bytes:
    """A frame with a random first byte and a plausible length: gets past the first checks."""
    fin_rsv = draw(st.sampled_from([0x80, 0x00, 0xC0, 0x40, 0xA0]))
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 0xB]))
    payload = draw(st.binary(max_size=140))
    if opcode == 0x8 and len(payload) >= 2 and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1005, 3000, 0, 4999]))
        payload = code.to_bytes(2, "big") + payload[2:]
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    frame = raw_frame(opcode, payload, mask=mask)
    return bytes([fin_rsv | opcode]) + frame[1:]


def frame_streams(masked: bool) -> st.SearchStrategy[bytes]:
    parts = st.one_of(st.binary(max_size=20), frame_like(masked))
    return st.lists(parts, max_size=8).map(b"".join)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
# A generous deadline: each example is at most a few kB, parsed in linear time.
@settings(max_examples=150, deadline=2000)
@given(data=st.data())
def test_garbage_raises_only_remote_protocol_error(role: Role, data: st.DataObject) -> None:
    stream = data.draw(st.one_of(st.binary(max_size=500), frame_streams(role is Role.SERVER)))
    deflate = data.draw(st.sampled_from([None, PerMessageDeflate()]))
    proto = WebSocketProtocol(role, deflate=deflate, max_message_size=1000)
    error: RemoteProtocolError | None = None
    try:
        proto.receive_data(stream)
    except RemoteProtocolError as exc:
        error = exc
    events = proto.events_received()
    assert all(isinstance(e, TextMessage | BytesMessage | Ping | Pong | Close) for e in events)
    if error is not None:
        assert proto.state is ConnectionState.CLOSED
        assert error.close_code in {1002, 1007, 1009}
        with pytest.raises(RemoteProtocolError):
            proto.receive_data(b"\x00")
    proto.receive_eof()
    assert proto.state is ConnectionState.CLOSED
    # Whatever happened, what we write back is a well-formed frame stream.
    sent_frames(proto)


def test_errors_share_one_root() -> None:
    assert issubclass(LocalProtocolError, WebSocketError)
    assert issubclass(RemoteProtocolError, WebSocketError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)


# ---------------------------------------------------------------- exact bytes and bounds


def test_send_encoded() -> None:
    proto = server()
    frame = b"\x81\x02hi"
    proto.send_encoded(frame)
    proto.send_text("a")
    assert proto.data_to_send() == frame + b"\x81\x01a"
    # Not in the middle of a fragmented message, nor from a client.
    proto.send_text("x", final=False)
    with pytest.raises(
        LocalProtocolError, match=r"^pre-encoded frames are for servers between messages$"
    ):
        proto.send_encoded(frame)
    proto.send_text("y")
    proto.send_encoded(frame)
    assert proto.data_to_send() == b"\x01\x01x\x80\x01y" + frame
    with pytest.raises(
        LocalProtocolError, match=r"^pre-encoded frames are for servers between messages$"
    ):
        client().send_encoded(frame)
    proto.send_close()
    with pytest.raises(LocalProtocolError, match=r"^cannot send a message in state CLOSING$"):
        proto.send_encoded(frame)
    assert proto.data_to_send() == b"\x88\x02\x03\xe8"


def test_send_pong_default_and_limit() -> None:
    proto = server()
    proto.send_pong()
    proto.send_pong(b"p" * 125)
    assert proto.data_to_send() == b"\x8a\x00" + b"\x8a\x7d" + b"p" * 125


@pytest.mark.parametrize("size", [125, 126, 127])
def test_server_frame_length_forms(size: int) -> None:
    proto = server()
    proto.send_bytes(b"b" * size)
    head = bytes([0x82, size]) if size < 126 else b"\x82\x7e" + size.to_bytes(2, "big")
    assert proto.data_to_send() == head + b"b" * size


def test_compressed_frames_get_the_compressed_budget_after_the_first_message() -> None:
    # Incompressible bytes grow a little when deflated: a frame larger than the limit
    # still inflates to the limit, on every message and every fragment.
    deflate = PerMessageDeflate(client_no_context_takeover=True)
    peer = client(deflate=deflate)
    proto = server(deflate=deflate, max_message_size=16)
    whole = [bytes(range(i, i + 16)) for i in (0, 16, 32)]
    for data in whole:
        peer.send_bytes(data)
    frames = sent_frames(peer)
    assert all(len(f.payload) > 16 for f in frames)
    peer.send_bytes(bytes(range(100, 108)), final=False)
    peer.send_bytes(bytes(range(108, 116)))
    fragments = sent_frames(peer)
    assert len(fragments[1].payload) > 8
    events = feed(
        proto,
        *(raw_frame(f.opcode, f.payload, rsv1=f.rsv1) for f in frames),
        *(raw_frame(f.opcode, f.payload, fin=f.fin, rsv1=f.rsv1) for f in fragments),
    )
    assert events == [*map(BytesMessage, whole), BytesMessage(bytes(range(100, 116)))]
    # Without deflate the limit is the limit, after a message too.
    plain = server(max_message_size=16)
    assert feed(plain, raw_frame(Opcode.BINARY, b"x" * 16)) == [BytesMessage(b"x" * 16)]
    # Refused from its header, before its payload is buffered.
    assert_fails(plain, raw_frame(Opcode.BINARY, b"x" * 17)[:6], CloseCode.MESSAGE_TOO_BIG)


def test_text_fragment_ending_in_e0_a0_waits_for_its_last_byte() -> None:
    # E0 A0 starts U+0800, a 3-byte sequence: valid so far, completed by the next fragment.
    proto = server()
    events = feed(
        proto,
        raw_frame(Opcode.TEXT, b"a\xe0\xa0", fin=False),
        raw_frame(Opcode.CONTINUATION, b"\x80"),
    )
    assert events == [TextMessage("a\u0800")]


def test_close_frame_is_not_held_to_the_message_size_limit() -> None:
    # The limit is for data frames; a Close is bounded by §5.5's 125 bytes only.
    proto = server(max_message_size=4)
    events = feed(proto, raw_frame(Opcode.CLOSE, close_payload(1000, b"bye bye")))
    assert events == [Close(1000, "bye bye")]


def test_single_frame_and_single_piece_are_not_copied() -> None:
    # One queued frame goes out as is (a shared broadcast frame is not copied per
    # connection), and a message of one large piece is that piece.
    proto = server()
    frame = b"\x82\x7e\x10\x00" + b"x" * 4096
    proto.send_encoded(frame)
    assert proto.data_to_send() is frame
    piece = b"y" * _connection._COALESCE_SIZE
    fragments = _connection._Fragments(b"")
    fragments.add(piece)
    assert fragments.finish(b"") is piece


# ---------------------------------------------------------------- large frames in pieces

LARGE = _frames.LARGE_FRAME_SIZE


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("cuts", [(LARGE + 1,), (LARGE + 7, 1, 1, 5000), (50_000, 49_999)])
def test_a_large_frame_in_pieces_is_collected_without_the_buffer(
    mask_impl: str, role: Role, cuts: tuple[int, ...]
) -> None:
    """A large frame whose header starts a read is collected as the chunks received: the
    receive buffer stays empty, receive_size_hint says what is missing, and the message,
    and a frame that shares the last chunk, come out whole."""
    proto = WebSocketProtocol(role)
    payload = bytes(range(256)) * 400  # 102,400 bytes
    mask = RFC_MASK if role is Role.SERVER else None
    frame = raw_frame(Opcode.BINARY, payload, mask=mask)
    header = len(frame) - len(payload)
    data = frame + raw_frame(Opcode.TEXT, b"next", mask=mask)
    pos = 0
    for cut in cuts:
        proto.receive_data(data[pos : pos + cut])
        pos += cut
        assert proto.events_received() == []
        assert proto._parser._buf == b""
        assert proto._parser.buffered == pos - header
        assert proto.receive_size_hint == len(data) - pos - len(raw_frame(1, b"next", mask=mask))
    proto.receive_data(data[pos:])
    assert proto.events_received() == [BytesMessage(payload), TextMessage("next")]
    assert proto.receive_size_hint == 0
    assert proto._parser.buffered == 0


def test_a_large_frame_fed_as_a_bytearray_is_kept_as_it_was_fed(mask_impl: str) -> None:
    """The chunks of a large frame are kept until it is complete: one fed as a buffer the
    caller reuses must not change the message."""
    proto = server()
    payload = b"a" * 40_000
    data = raw_frame(Opcode.BINARY, payload)
    chunk = bytearray(data[:30_000])
    proto.receive_data(chunk)
    chunk[:] = b"\xff" * len(chunk)
    proto.receive_data(memoryview(bytearray(data[30_000:])))
    assert proto.events_received() == [BytesMessage(payload)]


def test_a_large_frame_over_the_limit_is_refused_from_its_header() -> None:
    """The size limit applies to a large frame before any of it is kept (1009)."""
    proto = server(max_message_size=LARGE * 2)
    data = raw_frame(Opcode.BINARY, b"x" * (LARGE * 3))
    assert_fails(proto, data[: LARGE + 100], CloseCode.MESSAGE_TOO_BIG)
    assert proto._parser.buffered == 0


def test_a_large_unmasked_client_frame_is_refused() -> None:
    """A header that breaks a rule is left to the parser that raises (1002)."""
    proto = server()
    data = raw_frame(Opcode.BINARY, b"x" * (LARGE * 2), mask=None)
    assert_fails(proto, data[: LARGE + 100], CloseCode.PROTOCOL_ERROR)


def test_a_large_fragment_then_a_ping_then_the_rest(mask_impl: str) -> None:
    """Collecting a large fragment does not reorder it with the control frame after it."""
    proto = server()
    first = raw_frame(Opcode.TEXT, b"a" * 30_000, fin=False)
    ping = raw_frame(Opcode.PING, b"p")
    last = raw_frame(Opcode.CONTINUATION, b"b" * 30_000)
    proto.receive_data(first[:20_000])
    proto.receive_data(first[20_000:] + ping + last[:5])
    assert proto.events_received() == [Ping(b"p")]
    proto.receive_data(last[5:])
    assert proto.events_received() == [TextMessage("a" * 30_000 + "b" * 30_000)]


def test_a_large_payload_is_queued_apart_from_its_header() -> None:
    """A server's large payload goes out as the object it was given, behind its own
    header (no copy); joined, the bytes are those of the one frame."""
    payload = b"z" * LARGE
    proto = server()
    proto.send_bytes(payload)
    parts = proto.data_to_send_vectored()
    assert len(parts) == 2
    assert parts[1] is payload
    assert b"".join(parts) == _frames.encode_frame(Opcode.BINARY, payload)
    proto.send_bytes(payload)
    assert proto.data_to_send() == _frames.encode_frame(Opcode.BINARY, payload)
    small = server()
    small.send_bytes(b"z" * (LARGE - 1))
    assert len(small.data_to_send_vectored()) == 1
    masked = client()
    masked.send_bytes(payload)
    assert len(masked.data_to_send_vectored()) == 1  # a client's frame is masked: one copy


def test_encode_frame_header_only() -> None:
    head = _frames.encode_frame(Opcode.BINARY, b"", length=70_000)
    assert head + b"q" * 70_000 == _frames.encode_frame(Opcode.BINARY, b"q" * 70_000)
    with pytest.raises(ValueError, match=r"^length= makes the header of an unmasked frame"):
        _frames.encode_frame(Opcode.BINARY, b"", length=5, mask=True)


def test_a_large_frame_keeps_a_middle_chunk_as_it_was_fed(mask_impl: str) -> None:
    """A buffer the caller reuses, fed while a large frame is being collected, is copied:
    changing it afterwards does not change the message."""
    proto = server()
    payload = bytes(range(256)) * 200  # 51,200 bytes
    data = raw_frame(Opcode.BINARY, payload)
    proto.receive_data(data[:20_000])
    middle = bytearray(data[20_000:40_000])
    proto.receive_data(middle)
    middle[:] = b"\xff" * len(middle)
    proto.receive_data(data[40_000:])
    assert proto.events_received() == [BytesMessage(payload)]


BAD_LARGE_HEADERS = {
    "rsv2 set": ({"rsv2": True}, CloseCode.PROTOCOL_ERROR),
    "rsv3 set": ({"rsv3": True}, CloseCode.PROTOCOL_ERROR),
    "rsv1 without deflate": ({"rsv1": True}, CloseCode.PROTOCOL_ERROR),
    "reserved opcode": ({"opcode": 0x3}, CloseCode.PROTOCOL_ERROR),
    "control frame": ({"opcode": Opcode.PING}, CloseCode.PROTOCOL_ERROR),
    "unmasked": ({"mask": None}, CloseCode.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("flaw", list(BAD_LARGE_HEADERS))
@pytest.mark.parametrize("form", [126, 127])
def test_a_large_chunk_with_a_bad_header_is_refused_as_a_small_one_is(
    mask_impl: str, flaw: str, form: int
) -> None:
    """A chunk big enough to start collecting a large frame, whose header breaks a rule,
    fails the connection with the code the same header gets when it arrives alone."""
    changes, code = BAD_LARGE_HEADERS[flaw]
    kwargs: dict[str, object] = {"opcode": Opcode.BINARY, "mask": RFC_MASK, **changes}
    opcode = kwargs.pop("opcode")
    frame = raw_frame(opcode, b"x" * 30_000, length_form=form, **kwargs)  # type: ignore[arg-type]
    assert_fails(server(), frame[:20_000], code)
    alone = server()
    assert_fails(alone, frame[:14], code)  # the header alone: the ordinary path


def test_a_large_frame_trickled_in_tiny_pieces_holds_about_its_bytes(mask_impl: str) -> None:
    """A peer that sends the rest of a large frame a byte per read must not make us hold an
    object per byte: what is kept stays near the payload received, not 30-50 times it."""
    proto = server()
    payload = b"t" * 60_000
    data = raw_frame(Opcode.BINARY, payload)
    proto.receive_data(data[:20_000])
    rest = data[20_000:-1]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(len(rest)):
            proto.receive_data(rest[i : i + 1])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held - before < 2 * len(rest), f"{held - before} bytes held for {len(rest)} received"
    proto.receive_data(data[-1:])
    assert proto.events_received() == [BytesMessage(payload)]


# ---------------------------------------------------------------- the compiled fast path

# Frames a peer may send, legal or not: whole messages (text valid or not as UTF-8, binary,
# some over the limit), fragments, control frames, RSV bits, unmasked ones.
_any_frame = st.builds(
    raw_frame,
    opcode=st.sampled_from([0x1, 0x2, 0x1, 0x2, 0x0, 0x3, 0x8, 0x9, 0xA]),
    payload=st.one_of(
        st.sampled_from([b"z" * 100, b"z" * 101, b"\xc3", b"\x03\xe8", b"y" * 70_000]),
        st.text(max_size=40).map(str.encode),
        st.binary(max_size=40),
    ),
    fin=st.sampled_from([True, True, True, False]),
    rsv1=st.sampled_from([False, False, False, True]),
    mask=st.sampled_from([RFC_MASK, b"\x01\x02\x03\x04", RFC_MASK, None]),
)


def _outcome(
    frames: list[bytes], cuts: list[int], *, limit: int, deflate: bool, take: object
) -> list[object]:
    """Everything a server protocol reports for ``frames`` received in pieces cut at
    ``cuts``, with the fast path ``take`` (the compiled one, or None)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_frames, "take_messages", take)
        proto = server(max_message_size=limit, deflate=PerMessageDeflate() if deflate else None)
        data = b"".join(frames)
        seen: list[object] = []
        start = 0
        for end in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            if end < start:
                continue
            try:
                proto.receive_data(data[start:end])
            except RemoteProtocolError as exc:
                seen.append(("error", exc.close_code, exc.reason))
            start = end
            seen.append([repr(e) for e in proto.events_received()])
            seen.append(proto.data_to_send())
        seen += [proto.state, proto.message_in_progress, proto.close_received]
        return seen


@pytest.mark.skipif(not _frames.HAS_SPEEDUPS, reason="the compiled speedup was not built")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(_any_frame, max_size=8),
    cuts=st.lists(st.integers(0, 80_000), max_size=4),
    limit=st.sampled_from([100, 100_000]),
    deflate=st.booleans(),
)
def test_the_compiled_fast_path_changes_nothing_the_protocol_reports(
    frames: list[bytes], cuts: list[int], limit: int, deflate: bool
) -> None:
    """Whole messages taken at once by the compiled ``take_messages`` leave the protocol
    exactly as the frame-by-frame path does: the same events in the same order, the same
    errors and replies, the same state, whatever the frames and however the bytes are cut."""
    compiled = _frames._take_messages_c
    with_it = _outcome(frames, cuts, limit=limit, deflate=deflate, take=compiled)
    without = _outcome(frames, cuts, limit=limit, deflate=deflate, take=None)
    assert with_it == without


@pytest.mark.skipif(not _frames.HAS_SPEEDUPS, reason="the compiled speedup was not built")
def test_a_read_of_whole_messages_takes_the_compiled_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between messages, a read of whole text and binary frames goes through one
    ``take_messages`` call, not a parse per frame; a fragmented message does not."""
    taken: list[int] = []
    compiled = _frames._take_messages_c
    assert compiled is not None

    def counting(buf: bytearray, messages: list[object], limit: int, masked: bool) -> int:
        taken.append(compiled(buf, messages, limit, masked))
        return taken[-1]

    monkeypatch.setattr(_frames, "take_messages", counting)
    proto = server()
    frames = [raw_frame(Opcode.TEXT, b"a"), raw_frame(Opcode.BINARY, b"b")] * 3
    proto.receive_data(b"".join(frames))
    assert proto.take_received() == ["a", b"b"] * 3
    assert taken == [6]
    proto.receive_data(raw_frame(Opcode.TEXT, b"fragment", fin=False))
    proto.receive_data(raw_frame(Opcode.CONTINUATION, b" and more"))
    assert proto.take_received() == ["fragment and more"]
    assert taken == [6, 0]  # the first fragment is not a message; the rest is never offered
