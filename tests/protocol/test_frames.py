"""RFC 6455 §5 framing: the §5.7 vectors byte for byte, header checks, masking."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol import _frames
from trio_ws.protocol._errors import CloseCode, RemoteProtocolError
from trio_ws.protocol._frames import (
    HAS_SPEEDUPS,
    Frame,
    FrameParser,
    Opcode,
    _apply_mask_python,
    apply_mask,
    encode_frame,
)

from .helpers import RFC_MASK, naive_mask, raw_frame

# ---------------------------------------------------------------- RFC 6455 §5.7 examples

HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HELLO_FRAGMENT_1 = bytes.fromhex("010348656c")
HELLO_FRAGMENT_2 = bytes.fromhex("80026c6f")
PING_UNMASKED = bytes.fromhex("890548656c6c6f")
PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")
BINARY_256_HEADER = bytes.fromhex("827e0100")
BINARY_64K_HEADER = bytes.fromhex("827f0000000000010000")


def parse_all(data: bytes, *, expect_masked: bool, max_frame_size: int = 1 << 30) -> list[Frame]:
    parser = FrameParser(
        expect_masked=expect_masked, allow_rsv1=False, max_frame_size=max_frame_size
    )
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0
    return frames


def only_frame(data: bytes, *, expect_masked: bool) -> Frame:
    (frame,) = parse_all(data, expect_masked=expect_masked)
    return frame


def test_rfc_single_frame_unmasked_text() -> None:
    assert encode_frame(Opcode.TEXT, b"Hello") == HELLO_UNMASKED
    frame = only_frame(HELLO_UNMASKED, expect_masked=False)
    assert (frame.opcode, frame.fin, frame.rsv1, frame.payload) == (
        Opcode.TEXT,
        True,
        False,
        b"Hello",
    )


def test_rfc_single_frame_masked_text() -> None:
    assert raw_frame(Opcode.TEXT, b"Hello", mask=RFC_MASK) == HELLO_MASKED
    frame = only_frame(HELLO_MASKED, expect_masked=True)
    assert (frame.opcode, frame.fin, frame.payload) == (Opcode.TEXT, True, b"Hello")


def test_rfc_fragmented_unmasked_text() -> None:
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == HELLO_FRAGMENT_1
    assert encode_frame(Opcode.CONTINUATION, b"lo") == HELLO_FRAGMENT_2
    first, second = parse_all(HELLO_FRAGMENT_1 + HELLO_FRAGMENT_2, expect_masked=False)
    assert (first.opcode, first.fin, first.payload) == (Opcode.TEXT, False, b"Hel")
    assert (second.opcode, second.fin, second.payload) == (Opcode.CONTINUATION, True, b"lo")


def test_rfc_unmasked_ping_and_masked_pong() -> None:
    assert encode_frame(Opcode.PING, b"Hello") == PING_UNMASKED
    assert raw_frame(Opcode.PONG, b"Hello", mask=RFC_MASK) == PONG_MASKED
    ping = only_frame(PING_UNMASKED, expect_masked=False)
    assert (ping.opcode, ping.payload) == (Opcode.PING, b"Hello")
    pong = only_frame(PONG_MASKED, expect_masked=True)
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"Hello")


def test_rfc_256_byte_binary_uses_16_bit_length() -> None:
    payload = bytes(range(256))
    encoded = encode_frame(Opcode.BINARY, payload)
    assert encoded == BINARY_256_HEADER + payload
    frame = only_frame(encoded, expect_masked=False)
    assert (frame.opcode, frame.payload) == (Opcode.BINARY, payload)


def test_rfc_64k_binary_uses_64_bit_length() -> None:
    payload = os.urandom(65536)
    encoded = encode_frame(Opcode.BINARY, payload)
    assert encoded == BINARY_64K_HEADER + payload
    frame = only_frame(encoded, expect_masked=False)
    assert (frame.opcode, frame.payload) == (Opcode.BINARY, payload)


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (0xFFFF, "827effff"),
        (0x10000, "827f0000000000010000"),
    ],
)
def test_length_form_boundaries(length: int, header: str) -> None:
    payload = b"x" * length
    assert encode_frame(Opcode.BINARY, payload) == bytes.fromhex(header) + payload


def test_encode_rsv1_and_fin_bits() -> None:
    assert encode_frame(Opcode.TEXT, b"", fin=False, rsv1=True)[0] == 0x41
    assert encode_frame(Opcode.CONTINUATION, b"", fin=True)[0] == 0x80


@pytest.mark.parametrize("length", [0, 5, 125, 126, 300, 0x10000])
def test_encode_masked_round_trips(length: int) -> None:
    payload = os.urandom(length)
    encoded = encode_frame(Opcode.BINARY, payload, mask=True)
    assert encoded[1] & 0x80
    frame = only_frame(encoded, expect_masked=True)
    assert frame.payload == payload


def test_encode_masked_uses_a_fresh_key_each_time() -> None:
    keys = {encode_frame(Opcode.TEXT, b"Hello", mask=True)[2:6] for _ in range(8)}
    assert len(keys) > 1


def test_parser_waits_for_complete_frames() -> None:
    data = HELLO_MASKED + raw_frame(Opcode.BINARY, b"y" * 300)
    parser = FrameParser(expect_masked=True, allow_rsv1=False, max_frame_size=1000)
    frames = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while (frame := parser.next_frame()) is not None:
            frames.append((i, frame.payload))
    assert frames == [(len(HELLO_MASKED) - 1, b"Hello"), (len(data) - 1, b"y" * 300)]
    assert parser.buffered == 0


# ---------------------------------------------------------------- header checks


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw_frame(Opcode.TEXT, b"a", rsv2=True), id="rsv2"),
        pytest.param(raw_frame(Opcode.TEXT, b"a", rsv3=True), id="rsv3"),
        pytest.param(raw_frame(Opcode.TEXT, b"a", rsv1=True), id="rsv1-without-extension"),
        *(pytest.param(raw_frame(op, b""), id=f"opcode-{op:#x}") for op in (3, 4, 5, 6, 7)),
        *(pytest.param(raw_frame(op, b""), id=f"opcode-{op:#x}") for op in range(0xB, 0x10)),
        pytest.param(raw_frame(Opcode.TEXT, b"a", mask=None), id="unmasked"),
        pytest.param(raw_frame(Opcode.PING, b"", fin=False), id="fragmented-control"),
        pytest.param(raw_frame(Opcode.PING, b"p" * 126), id="control-126"),
        pytest.param(raw_frame(Opcode.PONG, b"", length=0, length_form=127)[:2], id="control-127"),
        pytest.param(raw_frame(Opcode.BINARY, length=1 << 63)[:10], id="64-bit-msb"),
    ],
)
def test_parser_rejects_bad_headers_from_the_header_alone(data: bytes) -> None:
    parser = FrameParser(expect_masked=True, allow_rsv1=False, max_frame_size=1 << 62)
    parser.feed(data[:10])  # never more than a header: the checks need no payload
    with pytest.raises(RemoteProtocolError) as exc_info:
        parser.next_frame()
    assert exc_info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_parser_rejects_masked_frame_on_client_side() -> None:
    parser = FrameParser(expect_masked=False, allow_rsv1=False, max_frame_size=100)
    parser.feed(HELLO_MASKED)
    with pytest.raises(RemoteProtocolError) as exc_info:
        parser.next_frame()
    assert exc_info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_parser_rejects_rsv1_on_control_frame_even_with_extension() -> None:
    parser = FrameParser(expect_masked=True, allow_rsv1=True, max_frame_size=100)
    parser.feed(raw_frame(Opcode.PING, b"", rsv1=True))
    with pytest.raises(RemoteProtocolError) as exc_info:
        parser.next_frame()
    assert exc_info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("length", [101, 126, 70000])
def test_parser_rejects_oversized_frame_before_its_payload(length: int) -> None:
    parser = FrameParser(expect_masked=True, allow_rsv1=False, max_frame_size=100)
    header = raw_frame(Opcode.BINARY, b"", length=length)[:-4]  # no key, no payload
    parser.feed(header)
    with pytest.raises(RemoteProtocolError) as exc_info:
        parser.next_frame()
    assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_parser_size_limit_does_not_apply_to_control_frames() -> None:
    parser = FrameParser(expect_masked=True, allow_rsv1=False, max_frame_size=0)
    parser.feed(raw_frame(Opcode.PING, b"p" * 125))
    frame = parser.next_frame()
    assert frame is not None
    assert frame.payload == b"p" * 125


# ---------------------------------------------------------------- masking

MASK_KEYS = st.binary(min_size=4, max_size=4)
MASK_INPUTS = st.one_of(
    st.binary(max_size=70),
    st.integers(min_value=71, max_value=70000).map(os.urandom),
)


@pytest.mark.parametrize("length", range(71))
def test_python_mask_every_short_length(length: int) -> None:
    data = os.urandom(length)
    key = os.urandom(4)
    assert _apply_mask_python(data, key) == naive_mask(data, key)
    if HAS_SPEEDUPS:
        assert _frames._apply_mask_c(data, key) == naive_mask(data, key)


@settings(max_examples=200, deadline=None)
@given(data=MASK_INPUTS, key=MASK_KEYS)
def test_python_mask_matches_reference(data: bytes, key: bytes) -> None:
    assert _apply_mask_python(data, key) == naive_mask(data, key)


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")
@settings(max_examples=200, deadline=None)
@given(data=MASK_INPUTS, key=MASK_KEYS)
def test_compiled_mask_matches_reference(data: bytes, key: bytes) -> None:
    assert apply_mask is _frames._apply_mask_c
    assert apply_mask(data, key) == naive_mask(data, key)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=70), key=MASK_KEYS, start=st.integers(0, 7))
def test_mask_accepts_buffers(data: bytes, key: bytes, start: int) -> None:
    """The parser hands a memoryview slice of its bytearray to the mask function."""
    view = memoryview(bytearray(b"\0" * start + data))[start:]
    assert _apply_mask_python(view, key) == naive_mask(data, key)
    assert apply_mask(view, key) == naive_mask(data, key)


def test_mask_is_an_involution() -> None:
    data = os.urandom(1000)
    assert apply_mask(apply_mask(data, RFC_MASK), RFC_MASK) == data
    assert _apply_mask_python(_apply_mask_python(data, RFC_MASK), RFC_MASK) == data


def test_rfc_mask_example() -> None:
    assert _apply_mask_python(b"Hello", RFC_MASK) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(b"Hello", RFC_MASK) == bytes.fromhex("7f9f4d5158")


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")
def test_compiled_mask_rejects_bad_key() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"data", b"abc")


# ---------------------------------------------------------------- the compiled parser


def _parse_both(
    data: bytes, *, expect_masked: bool, allow_rsv1: bool, max_frame_size: int
) -> tuple[object, bytes, object, bytes]:
    """Parse one frame out of ``data`` with each parser: (result, what is left) for each,
    a result being the parts, ``None``, or the refusal's (close code, reason)."""
    out: list[object] = []
    for parse in (_frames._parse_frame_c, _frames._parse_frame_python):
        buf = bytearray(data)
        try:
            got: object = parse(buf, expect_masked, allow_rsv1, max_frame_size)
        except RemoteProtocolError as exc:
            got = (exc.close_code, exc.reason)
        out += [got, bytes(buf)]
    return out[0], out[1], out[2], out[3]  # type: ignore[return-value]


frame_bytes = st.builds(
    raw_frame,
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=300),
    fin=st.booleans(),
    rsv1=st.booleans(),
    rsv2=st.booleans(),
    rsv3=st.booleans(),
    mask=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    length_form=st.one_of(st.none(), st.sampled_from([0, 125, 126, 127])),
)


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")
@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(frame_bytes, st.binary(max_size=40)),
    cut=st.integers(0, 400),
    expect_masked=st.booleans(),
    allow_rsv1=st.booleans(),
    max_frame_size=st.sampled_from([0, 1, 125, 126, 200, 1 << 20, 2**63, 2**70]),
)
def test_compiled_parser_takes_the_python_parsers_frames(
    data: bytes, cut: int, expect_masked: bool, allow_rsv1: bool, max_frame_size: int
) -> None:
    """On any bytes (frames legal or not, cut anywhere) the compiled parser returns what the
    Python one does and leaves the same bytes behind, or hands the header back
    (NotImplemented, nothing consumed) exactly where the Python one refuses it."""
    data = data[:cut] if cut < len(data) else data
    c_got, c_left, py_got, py_left = _parse_both(
        data, expect_masked=expect_masked, allow_rsv1=allow_rsv1, max_frame_size=max_frame_size
    )
    if c_got is NotImplemented:
        assert isinstance(py_got, tuple)
        assert isinstance(py_got[1], str)  # the Python parser refused it: (code, reason)
        assert c_left == data
    else:
        assert c_got == py_got
        assert c_left == py_left


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")
def test_compiled_parser_releases_large_masked_payloads_intact() -> None:
    """Above 64 KiB the compiled parser unmasks without the GIL; the payload is the same."""
    payload = os.urandom(200_000)
    key = os.urandom(4)
    buf = bytearray(raw_frame(Opcode.BINARY, payload, mask=key) + b"\x89")
    parts = _frames._parse_frame_c(buf, True, False, 1 << 20)
    assert parts == (Opcode.BINARY, payload, True, False)
    assert buf == b"\x89"


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")
def test_compiled_parser_refuses_what_is_not_a_bytearray() -> None:
    with pytest.raises(TypeError, match="bytearray"):
        _frames._parse_frame_c(b"\x81\x00", False, False, 10)  # type: ignore[arg-type]


needs_speedups = pytest.mark.skipif(not HAS_SPEEDUPS, reason="the compiled speedup was not built")


def _take(
    data: bytes, limit: int = 1 << 20, *, expect_masked: bool = True
) -> tuple[int, list[object], bytes]:
    """take_messages() on ``data``: (how many, the messages, the bytes left)."""
    assert _frames._take_messages_c is not None
    buf = bytearray(data)
    messages: list[object] = []
    count = _frames._take_messages_c(buf, messages, limit, expect_masked)
    return count, messages, bytes(buf)


@needs_speedups
def test_take_messages_takes_whole_messages_up_to_the_first_other_frame() -> None:
    """Text as str, binary as bytes, in order; a Ping stops it, with what follows it."""
    key = os.urandom(4)
    after = raw_frame(Opcode.PING, b"p", mask=key) + raw_frame(Opcode.TEXT, b"late", mask=key)
    data = (
        raw_frame(Opcode.TEXT, "h\u00e9".encode(), mask=key)
        + raw_frame(Opcode.BINARY, b"\x00\xff", mask=key)
        + raw_frame(Opcode.TEXT, b"", mask=key)
        + after
    )
    assert _take(data) == (3, ["h\u00e9", b"\x00\xff", ""], after)


@needs_speedups
@pytest.mark.parametrize("size", [125, 126, 65_535, 65_536, 200_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_take_messages_reads_every_length_form(opcode: int, size: int) -> None:
    """7-, 16- and 64-bit lengths; above 64 KiB binary is unmasked without the GIL."""
    payload = os.urandom(size) if opcode == Opcode.BINARY else b"a" * size
    message = payload if opcode == Opcode.BINARY else payload.decode()
    data = raw_frame(opcode, payload, mask=os.urandom(4)) + b"\x81"
    assert _take(data) == (1, [message], b"\x81")
    forced = raw_frame(opcode, payload, mask=os.urandom(4), length_form=127)
    assert _take(forced) == (1, [message], b"")


@needs_speedups
def test_take_messages_leaves_an_incomplete_frame_and_its_header() -> None:
    whole = raw_frame(Opcode.TEXT, b"hello", mask=os.urandom(4))
    for cut in range(len(whole)):
        assert _take(whole + whole[:cut]) == (1, ["hello"], whole[:cut])


@needs_speedups
@pytest.mark.parametrize(
    "frame",
    [
        raw_frame(Opcode.TEXT, b"part", fin=False),  # a fragment
        raw_frame(Opcode.CONTINUATION, b"rest"),
        raw_frame(Opcode.TEXT, b"x", rsv1=True),  # compressed, or refused: not ours
        raw_frame(Opcode.TEXT, b"x", rsv2=True),
        raw_frame(Opcode.BINARY, b"x", rsv3=True),
        raw_frame(Opcode.TEXT, b"x", mask=None),  # a client frame must be masked
        raw_frame(0x3, b"x"),  # reserved opcode
        raw_frame(Opcode.CLOSE, b"\x03\xe8"),
        raw_frame(Opcode.PONG, b""),
        raw_frame(Opcode.TEXT, b"x" * 11),  # over the limit of 10
        raw_frame(Opcode.BINARY, b"", length=2**63 + 1, length_form=127),
    ],
)
def test_take_messages_leaves_every_other_frame_untouched(frame: bytes) -> None:
    before = raw_frame(Opcode.TEXT, b"ok")
    assert _take(before + frame, limit=10) == (1, ["ok"], frame)


@needs_speedups
def test_take_messages_leaves_invalid_utf8_masked_as_it_came() -> None:
    """It unmasks text in place to decode it; on invalid UTF-8 the frame is put back as it
    came, for the frame-by-frame path to refuse (1007)."""
    bad = raw_frame(Opcode.TEXT, b"ok \xff\xfe bad", mask=os.urandom(4))
    assert _take(bad) == (0, [], bad)
    truncated = raw_frame(Opcode.TEXT, "\u00e9".encode()[:1], mask=os.urandom(4))
    assert _take(raw_frame(Opcode.TEXT, b"a") + truncated) == (1, ["a"], truncated)


@needs_speedups
def test_take_messages_on_the_client_side_takes_unmasked_frames_only() -> None:
    plain = raw_frame(Opcode.TEXT, b"hi", mask=None) + raw_frame(Opcode.BINARY, b"\x01", mask=None)
    assert _take(plain, expect_masked=False) == (2, ["hi", b"\x01"], b"")
    masked = raw_frame(Opcode.TEXT, b"hi")
    assert _take(masked, expect_masked=False) == (0, [], masked)


@needs_speedups
def test_take_messages_refuses_the_wrong_arguments() -> None:
    with pytest.raises(TypeError, match="bytearray"):
        _frames._take_messages_c(b"\x81\x00", [], 10, True)  # type: ignore[arg-type, misc]
    with pytest.raises(TypeError, match="take_messages"):
        _frames._take_messages_c(bytearray(), (), 10, True)  # type: ignore[arg-type, misc]
    buf = bytearray(raw_frame(Opcode.TEXT, b"x"))
    assert _frames._take_messages_c(buf, [], 2**70, True) == 1  # type: ignore[misc]


def test_frame_repr_shows_the_header_and_the_length() -> None:
    frame = Frame(Opcode.TEXT, b"hello", True, False)
    assert repr(frame) == "Frame(opcode=1, fin=True, rsv1=False, len=5)"


def test_mask_keys_are_cut_from_4_kib_of_system_randomness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = [bytes([n]) * 4092 + b"last" for n in range(2)]
    calls: list[int] = []

    def urandom(size: int) -> bytes:
        calls.append(size)
        return pools[len(calls) - 1]

    monkeypatch.setattr(_frames.os, "urandom", urandom)
    keys = _frames._MaskKeys()
    got = [keys.next() for _ in range(1025)]
    assert calls == [4096, 4096]  # 1,024 keys per pool, then a fresh one
    assert got[:2] == [b"\x00" * 4, b"\x00" * 4]
    assert got[1023] == b"last"
    assert got[1024] == b"\x01" * 4


# ---------------------------------------------------------------- either parser, any form


@pytest.fixture(params=["python", "compiled"])
def parser_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the pure-Python frame parser and masking, then with the compiled
    ones (when built): the Python parser is the reference and must stay right by itself."""
    if request.param == "compiled":
        if not HAS_SPEEDUPS:
            pytest.skip("the compiled speedup was not built")
        yield "compiled"
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_frames, "apply_mask", _frames._apply_mask_python)
        mp.setattr(_frames, "parse_frame", _frames._parse_frame_python)
        mp.setattr(_frames, "unmask_join", _frames._unmask_join_python)
        mp.setattr(_frames, "take_messages", None)
        yield "python"


def parser(max_frame_size: int = 1 << 30, *, allow_rsv1: bool = False) -> FrameParser:
    return FrameParser(expect_masked=True, allow_rsv1=allow_rsv1, max_frame_size=max_frame_size)


@pytest.mark.parametrize("size", [0, 5, 125, 300, 70_000])
def test_a_whole_frame_in_the_64_bit_form_parses(parser_impl: str, size: int) -> None:
    """The 64-bit length form is legal for any length (§5.2 asks for the minimal form only
    of senders); its key and payload start 10 bytes in."""
    payload = os.urandom(size)
    p = parser()
    p.feed(raw_frame(Opcode.BINARY, payload, mask=os.urandom(4), length_form=127) + b"\x89")
    assert p.next_parts() == (Opcode.BINARY, payload, True, False)
    assert p.buffered == 1  # the next frame's first byte, left behind


@pytest.mark.parametrize("limit", [100, 1000, 70_000])
def test_a_frame_of_exactly_the_limit_passes_in_every_length_form(
    parser_impl: str, limit: int
) -> None:
    """max_frame_size is the largest payload admitted: one byte more is refused (1009),
    whichever length form announces it."""
    payload = os.urandom(limit)
    p = parser(limit)
    p.feed(raw_frame(Opcode.BINARY, payload))
    assert p.next_parts() == (Opcode.BINARY, payload, True, False)
    over = parser(limit)
    over.feed(raw_frame(Opcode.BINARY, payload + b"x"))
    with pytest.raises(RemoteProtocolError) as exc_info:
        over.next_parts()
    assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_a_close_frame_longer_than_a_small_limit_passes(parser_impl: str) -> None:
    """The data frame limit does not apply to control frames, the Close (0x8) included."""
    payload = b"\x03\xe8" + b"r" * 100
    p = parser(10)
    p.feed(raw_frame(Opcode.CLOSE, payload))
    assert p.next_parts() == (Opcode.CLOSE, payload, True, False)


# ---------------------------------------------------------------- large frames in pieces

LARGE = _frames.LARGE_FRAME_SIZE
HEADER_16 = 8  # 2 bytes, the 16-bit length, the key


@pytest.mark.parametrize(
    ("opcode", "fin", "rsv1", "deflate"),
    [
        (Opcode.TEXT, True, False, False),
        (Opcode.BINARY, True, False, False),
        (Opcode.CONTINUATION, True, False, False),
        (Opcode.TEXT, True, False, True),
        (Opcode.CONTINUATION, False, False, True),
        (Opcode.TEXT, False, True, True),
        (Opcode.BINARY, True, True, True),
    ],
)
def test_a_large_data_frame_is_collected_with_its_header_bits(
    parser_impl: str, opcode: int, fin: bool, rsv1: bool, deflate: bool
) -> None:
    """Every data opcode, FIN and RSV1 (with deflate negotiated), take the large-frame
    path (the reader is told what is missing) and come out as they were sent."""
    payload = os.urandom(30_000)
    frame = raw_frame(opcode, payload, fin=fin, rsv1=rsv1)
    p = parser(allow_rsv1=deflate)
    p.feed(frame[:20_000])
    assert p.missing == len(frame) - 20_000
    assert p.next_parts() is None
    p.feed(frame[20_000:])
    assert p.missing == 0
    assert p.next_parts() == (opcode, payload, fin, rsv1)


@pytest.mark.parametrize(
    ("length", "limit"),
    [(LARGE, 1 << 20), (40_000, 40_000)],
    ids=["the large-frame size", "the frame limit"],
)
def test_a_frame_at_a_boundary_is_collected_in_pieces(
    parser_impl: str, length: int, limit: int
) -> None:
    payload = os.urandom(length)
    frame = raw_frame(Opcode.BINARY, payload)
    first = LARGE + 2 if length == LARGE else 20_000  # a whole header, not the whole frame
    p = parser(limit)
    p.feed(frame[:first])
    assert p.missing == len(frame) - first
    p.feed(frame[first:])
    assert p.next_parts() == (Opcode.BINARY, payload, True, False)


def test_a_64_bit_length_with_its_top_bit_set_is_refused_under_any_limit(
    parser_impl: str,
) -> None:
    """§5.2: "the most significant bit MUST be 0", even when the limit would admit it."""
    header = b"\x82\xff" + (1 << 63 | 50_000).to_bytes(8, "big") + RFC_MASK
    p = parser(2**70)
    p.feed(header + b"x" * 20_000)
    assert p.missing == 0
    with pytest.raises(RemoteProtocolError) as exc_info:
        p.next_parts()
    assert exc_info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_bytes_buffered_count_a_large_frame_and_what_follows_it(parser_impl: str) -> None:
    payload = os.urandom(30_000)
    frame = raw_frame(Opcode.BINARY, payload)
    following = raw_frame(Opcode.TEXT, b"next")
    p = parser()
    p.feed(frame[:20_000])
    assert p.buffered == 20_000 - HEADER_16
    p.feed(frame[20_000:] + following[:3])
    assert p.buffered == len(payload) + 3
    assert p.next_parts() == (Opcode.BINARY, payload, True, False)
    assert p.buffered == 3


def test_a_large_frame_copies_a_memoryview_of_a_buffer_the_caller_reuses(
    parser_impl: str,
) -> None:
    payload = os.urandom(60_000)
    frame = raw_frame(Opcode.BINARY, payload)
    reused = bytearray(frame[20_000:40_000])
    p = parser()
    p.feed(frame[:20_000])
    p.feed(memoryview(reused))
    reused[:] = b"\xff" * len(reused)
    p.feed(frame[40_000:])
    assert p.next_parts() == (Opcode.BINARY, payload, True, False)


@pytest.mark.parametrize("form", ["bytes", "memoryview of bytes"])
def test_a_large_frame_keeps_immutable_pieces_without_copying_them(
    parser_impl: str, form: str
) -> None:
    """Pieces of immutable bytes (the first one included) are kept as they came: feeding
    them allocates a few small objects, not their size again."""
    frame = raw_frame(Opcode.BINARY, os.urandom(90_000))
    first, middle, last = frame[:30_000], frame[30_000:60_000], frame[60_000:]
    p = parser()
    tracemalloc.start()
    try:
        for piece in (first, middle):
            before, _ = tracemalloc.get_traced_memory()
            p.feed(piece if form == "bytes" else memoryview(piece))
            after, _ = tracemalloc.get_traced_memory()
            assert after - before < 2_000, f"{after - before} bytes allocated for a piece"
    finally:
        tracemalloc.stop()
    p.feed(last)
    parts = p.next_parts()
    assert parts is not None
    assert len(parts[1]) == 90_000


def test_a_parser_reads_nothing_more_once_discarded(parser_impl: str) -> None:
    frame = raw_frame(Opcode.BINARY, os.urandom(30_000))
    p = parser()
    p.feed(frame[:20_000])
    p.discard()
    assert (p.buffered, p.missing) == (0, 0)
    assert p.next_parts() is None


def test_a_new_parser_expects_nothing() -> None:
    p = parser()
    assert (p.buffered, p.missing) == (0, 0)
    assert p.next_parts() is None
