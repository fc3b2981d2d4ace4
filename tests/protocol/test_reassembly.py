"""Fragment reassembly is bounded in bytes and in frames, and visible to a deadline.

RFC 6455 §5.4 lets a message arrive in any number of fragments, including empty ones, so a
peer can make one message as long as it likes. What it can make us hold is bounded three
ways: the memory of a message is its payload bytes plus a few percent (small fragments are
joined, empty ones cost nothing), the frames of one message are counted against
``max_fragments`` (1009 on breach), and
``message_in_progress`` tells a runtime when a message started, for its deadline.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol._connection import (
    DEFAULT_MAX_FRAGMENTS,
    ConnectionState,
    MessageProgress,
    WebSocketProtocol,
)
from trio_ws.protocol._deflate import PerMessageDeflate
from trio_ws.protocol._errors import CloseCode, RemoteProtocolError
from trio_ws.protocol._events import BytesMessage, Close, Ping, TextMessage
from trio_ws.protocol._frames import Opcode, Role

from .helpers import parse_close, raw_frame, sent_frames

MASK = b"\x01\x02\x03\x04"


def server(**kwargs: object) -> WebSocketProtocol:
    return WebSocketProtocol(Role.SERVER, **kwargs)  # type: ignore[arg-type]


def frames(opcode: int, payload: bytes, count: int) -> bytes:
    """``count`` non-final frames of ``opcode`` carrying ``payload`` each."""
    return raw_frame(opcode, payload, fin=False, mask=MASK) * count


def traced_growth(proto: WebSocketProtocol, data: bytes, *, chunk: int = 60_000) -> int:
    """Bytes still allocated after feeding ``data`` in chunks (the input itself excluded)."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for piece in pieces:
            proto.receive_data(piece)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


# ---------------------------------------------------------------- memory equals bytes


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
def test_one_byte_fragments_cost_their_bytes(opcode: int) -> None:
    """20,000 one-byte fragments hold about 20 KB, not an object per fragment."""
    count = 20_000
    proto = server(max_fragments=None)
    proto.receive_data(raw_frame(opcode, b"a", fin=False, mask=MASK))
    growth = traced_growth(proto, frames(Opcode.CONTINUATION, b"b", count))
    assert proto.state is ConnectionState.OPEN
    # The payload joined into 512-byte pieces (and one run of up to 511 small pieces not
    # joined yet): under 2 bytes a fragment plus a constant, where a list holding each
    # fragment's bytes object costs about 40 bytes a fragment.
    assert growth < 2 * count + 32 * 1024, f"{growth} bytes held for {count} bytes of payload"
    proto.receive_data(raw_frame(Opcode.CONTINUATION, b"c", mask=MASK))
    (event,) = proto.events_received()
    expected = b"a" + b"b" * count + b"c"
    if opcode == Opcode.TEXT:
        assert event == TextMessage(expected.decode())
    else:
        assert event == BytesMessage(expected)


def test_endless_empty_continuations_hold_no_memory() -> None:
    count = 20_000
    proto = server(max_fragments=None)
    proto.receive_data(raw_frame(Opcode.BINARY, b"x", fin=False, mask=MASK))
    growth = traced_growth(proto, frames(Opcode.CONTINUATION, b"", count))
    assert proto.state is ConnectionState.OPEN
    assert growth < 16 * 1024, f"{growth} bytes held for {count} empty fragments"


def test_compressed_one_byte_fragments_cost_their_bytes() -> None:
    count = 10_000
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    pieces = [compressor.compress(b"z") + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(count)]
    proto = server(deflate=PerMessageDeflate(), max_fragments=None)
    proto.receive_data(raw_frame(Opcode.BINARY, pieces[0], rsv1=True, fin=False, mask=MASK))
    data = b"".join(raw_frame(0, piece, fin=False, mask=MASK) for piece in pieces[1:])
    growth = traced_growth(proto, data)
    assert growth < 2 * count + 64 * 1024, f"{growth} bytes held for {count} inflated bytes"


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda proto: proto.receive_eof(), id="eof"),
        pytest.param(
            lambda proto: proto.receive_data(raw_frame(Opcode.CLOSE, b"\x03\xe8", mask=MASK)),
            id="peer-close",
        ),
    ],
)
def test_a_half_received_message_is_released_when_the_connection_ends(
    end: Callable[[WebSocketProtocol], None],
) -> None:
    """The fragments of an unfinished message used to stay with the closed connection."""
    proto = server()
    data = raw_frame(Opcode.BINARY, b"a" * 500_000, fin=False, mask=MASK)
    tracemalloc.start()
    try:
        proto.receive_data(data)
        before, _ = tracemalloc.get_traced_memory()
        end(proto)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert proto.state is ConnectionState.CLOSED
    assert before - after > 400_000, "the half-received message is still held"


# ---------------------------------------------------------------- a cap on fragments


def assert_fails_too_many(proto: WebSocketProtocol, data: bytes, limit: int) -> None:
    with pytest.raises(RemoteProtocolError) as exc_info:
        proto.receive_data(data)
    assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert f"more than {limit} fragments" in exc_info.value.reason
    assert proto.state is ConnectionState.CLOSED
    (close,) = sent_frames(proto)
    code, reason = parse_close(close)
    assert code == CloseCode.MESSAGE_TOO_BIG
    assert f"more than {limit} fragments" in reason.decode()
    assert proto.message_in_progress is None


def test_endless_empty_continuations_end_with_1009_at_the_default_cap() -> None:
    proto = server()
    assert proto.max_fragments == DEFAULT_MAX_FRAGMENTS
    data = raw_frame(Opcode.TEXT, b"", fin=False, mask=MASK)
    data += frames(Opcode.CONTINUATION, b"", DEFAULT_MAX_FRAGMENTS - 1)
    proto.receive_data(data)
    assert proto.events_received() == []
    assert proto.state is ConnectionState.OPEN
    assert_fails_too_many(
        proto, raw_frame(Opcode.CONTINUATION, b"", fin=False, mask=MASK), DEFAULT_MAX_FRAGMENTS
    )


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
def test_max_fragments_is_configurable(opcode: int) -> None:
    proto = server(max_fragments=3)
    message = [
        raw_frame(opcode, b"a", fin=False, mask=MASK),
        raw_frame(Opcode.CONTINUATION, b"b", fin=False, mask=MASK),
        raw_frame(Opcode.CONTINUATION, b"c", mask=MASK),
    ]
    # Exactly at the cap, twice: the count starts again with every message.
    proto.receive_data(b"".join(message) * 2)
    assert len(proto.events_received()) == 2
    proto.receive_data(b"".join(message[:2]) + message[1])
    assert proto.state is ConnectionState.OPEN
    assert_fails_too_many(proto, message[1], 3)


def test_unfragmented_messages_are_not_limited_by_the_cap() -> None:
    proto = server(max_fragments=1)
    proto.receive_data(raw_frame(Opcode.BINARY, b"one", mask=MASK) * 5)
    assert proto.events_received() == [BytesMessage(b"one")] * 5
    proto.receive_data(raw_frame(Opcode.BINARY, b"a", fin=False, mask=MASK))
    assert_fails_too_many(proto, raw_frame(Opcode.CONTINUATION, b"b", mask=MASK), 1)


def test_control_frames_between_fragments_are_not_counted() -> None:
    proto = server(max_fragments=2)
    data = raw_frame(Opcode.TEXT, b"a", fin=False, mask=MASK)
    data += raw_frame(Opcode.PING, b"p", mask=MASK) * 10
    data += raw_frame(Opcode.CONTINUATION, b"b", mask=MASK)
    proto.receive_data(data)
    assert proto.events_received() == [Ping(b"p")] * 10 + [TextMessage("ab")]


def test_the_cap_applies_to_compressed_messages() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(b"x") + compressor.flush(zlib.Z_SYNC_FLUSH)
    proto = server(deflate=PerMessageDeflate(), max_fragments=4)
    data = raw_frame(Opcode.BINARY, first, rsv1=True, fin=False, mask=MASK)
    data += frames(Opcode.CONTINUATION, b"", 3)
    proto.receive_data(data)
    assert_fails_too_many(proto, raw_frame(Opcode.CONTINUATION, b"", mask=MASK), 4)


def test_max_fragments_none_is_unlimited() -> None:
    proto = server(max_fragments=None)
    data = raw_frame(Opcode.BINARY, b"", fin=False, mask=MASK)
    data += frames(Opcode.CONTINUATION, b"", DEFAULT_MAX_FRAGMENTS + 10)
    data += raw_frame(Opcode.CONTINUATION, b"end", mask=MASK)
    proto.receive_data(data)
    assert proto.events_received() == [BytesMessage(b"end")]


@pytest.mark.parametrize("value", [0, -1])
def test_max_fragments_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_fragments"):
        server(max_fragments=value)


# ---------------------------------------------------------------- what a deadline needs


def test_message_in_progress_follows_a_fragmented_message() -> None:
    proto = server()
    assert proto.message_in_progress is None
    proto.receive_data(raw_frame(Opcode.TEXT, b"ab", fin=False, mask=MASK))
    assert proto.message_in_progress == MessageProgress(
        number=1, opcode=Opcode.TEXT, fragments=1, size=2
    )
    proto.receive_data(raw_frame(Opcode.PING, b"", mask=MASK))
    proto.receive_data(raw_frame(Opcode.CONTINUATION, b"cde", fin=False, mask=MASK))
    assert proto.message_in_progress == MessageProgress(
        number=1, opcode=Opcode.TEXT, fragments=2, size=5
    )
    proto.receive_data(raw_frame(Opcode.CONTINUATION, b"f", mask=MASK))
    assert proto.message_in_progress is None
    assert proto.events_received() == [Ping(b""), TextMessage("abcdef")]


def test_message_in_progress_numbers_tell_messages_apart() -> None:
    """A message that ended and another that started in one read have different numbers."""
    proto = server()
    proto.receive_data(raw_frame(Opcode.BINARY, b"a", fin=False, mask=MASK))
    first = proto.message_in_progress
    assert first is not None
    proto.receive_data(
        raw_frame(Opcode.CONTINUATION, b"b", mask=MASK)
        + raw_frame(Opcode.TEXT, b"whole", mask=MASK)
        + raw_frame(Opcode.BINARY, b"c", fin=False, mask=MASK)
    )
    second = proto.message_in_progress
    assert second == MessageProgress(number=2, opcode=Opcode.BINARY, fragments=1, size=1)
    assert second.number != first.number


def test_unfragmented_messages_are_never_in_progress() -> None:
    proto = server()
    proto.receive_data(raw_frame(Opcode.BINARY, b"x", mask=MASK))
    assert proto.message_in_progress is None
    proto.receive_data(raw_frame(Opcode.BINARY, b"a", fin=False, mask=MASK))
    assert proto.message_in_progress is not None
    assert proto.message_in_progress.number == 1


def test_message_in_progress_ends_with_the_connection() -> None:
    proto = server()
    proto.receive_data(raw_frame(Opcode.BINARY, b"a", fin=False, mask=MASK))
    proto.receive_eof()
    assert proto.message_in_progress is None
    assert proto.events_received() == [Close(CloseCode.ABNORMAL_CLOSURE, "")]

    proto = server()
    proto.receive_data(raw_frame(Opcode.BINARY, b"a", fin=False, mask=MASK))
    proto.receive_data(raw_frame(Opcode.CLOSE, b"\x03\xe8", mask=MASK))
    assert proto.message_in_progress is None


# ---------------------------------------------------------------- joining keeps the order


@settings(max_examples=150, deadline=None)
@given(
    text=st.booleans(),
    sizes=st.lists(
        st.sampled_from([0, 1, 2, 3, 100, 511, 512, 513, 1500]), min_size=1, max_size=40
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_small_and_large_fragments_reassemble_in_order(
    text: bool, sizes: list[int], seed: int
) -> None:
    """Small fragments are joined before they are kept and large ones kept as they are:
    whatever the mix, the message is the fragments in order (text cut anywhere, even
    inside a character)."""
    rng = random.Random(seed)
    if text:
        alphabet = "aé€😀"
        payload = "".join(rng.choice(alphabet) for _ in range(sum(sizes))).encode()[: sum(sizes)]
        payload = payload.decode("utf-8", "ignore").encode()
    else:
        payload = rng.randbytes(sum(sizes))
    cuts = []
    start = 0
    for size in sizes:
        cuts.append(payload[start : start + size])
        start += size
    cuts[-1] += payload[start:]
    opcode = Opcode.TEXT if text else Opcode.BINARY
    data = b"".join(
        raw_frame(opcode if i == 0 else Opcode.CONTINUATION, cut, fin=i == len(cuts) - 1, mask=MASK)
        for i, cut in enumerate(cuts)
    )
    proto = server(max_fragments=None)
    proto.receive_data(data)
    expected = TextMessage(payload.decode()) if text else BytesMessage(payload)
    assert proto.events_received() == [expected]
