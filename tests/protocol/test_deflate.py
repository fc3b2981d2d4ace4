"""Tests for trio_ws.protocol._deflate: RFC 7692 examples, negotiation, limits, interop."""

from __future__ import annotations

import random
import time
import tracemalloc
import types
import zlib

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.extensions import permessage_deflate as ws_pmd
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from wsproto.extensions import PerMessageDeflate as WsprotoPMD
from wsproto.frame_protocol import Opcode as WsprotoOpcode
from wsproto.frame_protocol import RsvBits

from trio_ws.protocol import _deflate
from trio_ws.protocol._deflate import (
    EXTENSION_NAME,
    MessageCompressor,
    MessageDecompressor,
    PerMessageDeflate,
    client_offer,
    negotiate_client,
    negotiate_server,
)
from trio_ws.protocol._errors import CloseCode, RemoteProtocolError
from trio_ws.protocol._frames import Role
from trio_ws.protocol._headers import ExtensionOffer

HELLO = b"Hello"
HELLO_COMPRESSED = bytes.fromhex("f248cdc9c90700")
MiB = 1 << 20


def ext(value: str) -> ExtensionOffer:
    """A minimal parser for one extension element, independent of _headers's parser."""
    name, *raw = (part.strip() for part in value.split(";"))
    params: list[tuple[str, str | None]] = []
    for item in raw:
        key, sep, val = item.partition("=")
        params.append((key.strip(), val.strip().strip('"') if sep else None))
    return ExtensionOffer(name, tuple(params))


def pair(
    params: PerMessageDeflate, sender: Role = Role.SERVER
) -> tuple[MessageCompressor, MessageDecompressor]:
    receiver = Role.CLIENT if sender is Role.SERVER else Role.SERVER
    return params.make_compressor(sender), params.make_decompressor(receiver)


def inflate(d: MessageDecompressor, payload: bytes, max_size: int = MiB) -> bytes:
    return d.decompress(payload, final=True, max_size=max_size)


# ---------------------------------------------------------------------------------------
# RFC 7692 §7.2.3 examples, byte for byte


def test_rfc_7_2_3_1_one_compressed_block() -> None:
    c, d = pair(PerMessageDeflate())
    assert c.compress(HELLO) == HELLO_COMPRESSED
    assert inflate(d, HELLO_COMPRESSED) == HELLO


def test_rfc_7_2_3_1_fragmented() -> None:
    # The RFC's fragmented variant: "0xf2 0x48 0xcd" then "0xc9 0xc9 0x07 0x00".
    d = PerMessageDeflate().make_decompressor(Role.CLIENT)
    first = d.decompress(bytes.fromhex("f248cd"), final=False, max_size=100)
    second = d.decompress(bytes.fromhex("c9c90700"), final=True, max_size=100 - len(first))
    assert first + second == HELLO


def test_rfc_7_2_3_2_sharing_the_window() -> None:
    c, d = pair(PerMessageDeflate())
    assert c.compress(HELLO) == HELLO_COMPRESSED
    second = c.compress(HELLO)
    assert second == bytes.fromhex("f200110000")
    assert inflate(d, HELLO_COMPRESSED) == HELLO
    assert inflate(d, second) == HELLO


def test_rfc_7_2_3_2_without_context_takeover() -> None:
    c, d = pair(PerMessageDeflate(server_no_context_takeover=True))
    assert c.compress(HELLO) == HELLO_COMPRESSED
    assert c.compress(HELLO) == HELLO_COMPRESSED
    assert inflate(d, HELLO_COMPRESSED) == HELLO
    assert inflate(d, HELLO_COMPRESSED) == HELLO


def test_rfc_7_2_3_3_block_with_no_compression() -> None:
    d = PerMessageDeflate().make_decompressor(Role.SERVER)
    assert inflate(d, bytes.fromhex("0005 00fa ff48 656c 6c6f 00")) == HELLO


def test_rfc_7_2_3_4_bfinal_set() -> None:
    d = PerMessageDeflate().make_decompressor(Role.SERVER)
    assert inflate(d, bytes.fromhex("f348cdc9c9070000")) == HELLO
    # The DEFLATE stream ended; the next message starts a fresh one.
    assert inflate(d, HELLO_COMPRESSED) == HELLO


def test_rfc_7_2_3_5_two_blocks_in_one_message() -> None:
    d = PerMessageDeflate().make_decompressor(Role.SERVER)
    assert inflate(d, bytes.fromhex("f248050000 00ffff cac9c90700")) == HELLO


def test_rfc_7_2_3_6_empty_fragment() -> None:
    c, d = pair(PerMessageDeflate())
    assert c.compress(b"") == b"\x00"
    assert inflate(d, b"\x00") == b""
    # An empty final fragment after a flushed one is also 0x00.
    first = c.compress(HELLO, final=False)
    assert first.endswith(b"\x00\x00\xff\xff")
    last = c.compress(b"", final=True)
    assert last == b"\x00"
    out = d.decompress(first, final=False, max_size=100)
    out += d.decompress(last, final=True, max_size=100 - len(out))
    assert out == HELLO
    assert inflate(d, c.compress(HELLO)) == HELLO


def test_empty_final_payload_does_not_break_the_stream() -> None:
    c, d = pair(PerMessageDeflate())
    assert inflate(d, b"") == b""
    assert d.decompress(c.compress(HELLO, final=False), final=False, max_size=10) == HELLO
    assert inflate(d, b"") == b""
    assert inflate(d, c.compress(HELLO * 3)) == HELLO * 3


# ---------------------------------------------------------------------------------------
# Context takeover


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_context_takeover_follows_the_sending_role(role: Role) -> None:
    message = b"the quick brown fox jumps over the lazy dog " * 4
    shared = PerMessageDeflate()
    if role is Role.SERVER:
        reset = PerMessageDeflate(server_no_context_takeover=True)
        other = PerMessageDeflate(client_no_context_takeover=True)
    else:
        reset = PerMessageDeflate(client_no_context_takeover=True)
        other = PerMessageDeflate(server_no_context_takeover=True)

    c = shared.make_compressor(role)
    first, second = c.compress(message), c.compress(message)
    assert len(second) < len(first)

    c = reset.make_compressor(role)
    assert c.compress(message) == first
    assert c.compress(message) == first

    c = other.make_compressor(role)  # the other side's flag does not affect us
    assert c.compress(message) == first
    assert c.compress(message) == second


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_decompressor_resets_when_agreed(no_context_takeover: bool) -> None:
    params = PerMessageDeflate(client_no_context_takeover=no_context_takeover)
    c, d = pair(params, sender=Role.CLIENT)
    for _ in range(3):
        assert inflate(d, c.compress(HELLO)) == HELLO
    # A message referring to the previous window only decodes with context takeover.
    if no_context_takeover:
        with pytest.raises(RemoteProtocolError):
            inflate(d, bytes.fromhex("f200110000"))
    else:
        assert inflate(d, bytes.fromhex("f200110000")) == HELLO


# zlib checks a distance against the window only when it reaches into an earlier
# decompress() call's output, so these tests compare across messages.
WINDOW_PROBE = [bytes(range(256)) + b"xyz", bytes(range(256)) * 2 + b"xyz", bytes(range(256))]


def test_window_bits_limit_back_references() -> None:
    for bits in range(8, 16):
        c = PerMessageDeflate(server_max_window_bits=bits).make_compressor(Role.SERVER)
        # The strictest decoder for this window: exactly ``bits``, no more.
        ref = zlib.decompressobj(-bits)
        for message in WINDOW_PROBE:
            assert ref.decompress(c.compress(message) + b"\x00\x00\xff\xff") == message


def test_reference_decoder_catches_far_references() -> None:
    # The check above is real: a decoder with an 8-bit window refuses a 10-bit stream.
    co = zlib.compressobj(9, zlib.DEFLATED, -10)
    ref = zlib.decompressobj(-8)
    first, second = (co.compress(m) + co.flush(zlib.Z_SYNC_FLUSH) for m in WINDOW_PROBE[:2])
    assert ref.decompress(first) == WINDOW_PROBE[0]
    with pytest.raises(zlib.error, match="too far back"):
        ref.decompress(second)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="window"):
        PerMessageDeflate(server_max_window_bits=7)
    with pytest.raises(ValueError, match="window"):
        MessageCompressor(window_bits=16, no_context_takeover=False)
    with pytest.raises(ValueError, match="level"):
        MessageCompressor(window_bits=15, no_context_takeover=False, level=10)
    with pytest.raises(ValueError, match="window"):
        MessageDecompressor(window_bits=7, no_context_takeover=False)


def test_constructor_limits_are_inclusive() -> None:
    for bits in (8, 15):
        PerMessageDeflate(server_max_window_bits=bits, client_max_window_bits=bits)
        MessageCompressor(window_bits=bits, no_context_takeover=False)
        MessageDecompressor(window_bits=bits, no_context_takeover=False)
    for level in (-1, 0, 9):
        MessageCompressor(window_bits=15, no_context_takeover=False, level=level)
    with pytest.raises(ValueError, match=r"^window bits must be between 8 and 15, not 16$"):
        PerMessageDeflate(client_max_window_bits=16)
    with pytest.raises(ValueError, match=r"^window_bits must be between 8 and 15, not 16$"):
        MessageDecompressor(window_bits=16, no_context_takeover=False)
    with pytest.raises(ValueError, match=r"^level must be between -1 and 9, not -2$"):
        MessageCompressor(window_bits=15, no_context_takeover=False, level=-2)


# ---------------------------------------------------------------------------------------
# Limits and errors


def test_exact_size_limit() -> None:
    for size in (5, 10_000, 300_000):  # below and above the tail-copy threshold
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        c, d = pair(PerMessageDeflate())
        payload = c.compress(data)
        assert inflate(d, payload, max_size=size) == data
        c, d = pair(PerMessageDeflate())
        with pytest.raises(RemoteProtocolError) as info:
            inflate(d, c.compress(data), max_size=size - 1)
        assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_limit_across_fragments() -> None:
    c, d = pair(PerMessageDeflate())
    parts = [c.compress(bytes(1000), final=False), c.compress(bytes(1000), final=True)]
    got = d.decompress(parts[0], final=False, max_size=1500)
    assert len(got) == 1000
    with pytest.raises(RemoteProtocolError) as info:
        d.decompress(parts[1], final=True, max_size=1500 - len(got))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_zero_and_negative_max_size() -> None:
    c, d = pair(PerMessageDeflate())
    assert inflate(d, c.compress(b""), max_size=0) == b""
    with pytest.raises(RemoteProtocolError):
        inflate(d, c.compress(b"x"), max_size=0)
    c, d = pair(PerMessageDeflate())
    with pytest.raises(RemoteProtocolError):
        inflate(d, c.compress(b"x"), max_size=-5)


def _bomb(gib: int = 1) -> bytes:
    # One 1 MiB block of zeros, flushed with Z_FULL_FLUSH so it refers to nothing before it
    # and ends on a byte boundary; repeated 1024 times it is a valid stream inflating to
    # 1 GiB, built in microseconds instead of deflating a gigabyte.
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(MiB)) + co.flush(zlib.Z_FULL_FLUSH)
    return block * (1024 * gib)


def test_bomb_is_what_it_claims() -> None:
    block = _bomb()[: len(_bomb()) // 1024]
    assert zlib.decompressobj(-15).decompress(block * 4) == bytes(4 * MiB)


@pytest.mark.parametrize("final", [True, False])
def test_deflate_bomb_fails_fast_with_bounded_memory(final: bool) -> None:
    bomb = _bomb()
    assert len(bomb) < 2 * MiB
    d = PerMessageDeflate().make_decompressor(Role.SERVER)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            d.decompress(bomb, final=final, max_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert time.perf_counter() - start < 1.0
    # The output (1 MiB + 1, briefly twice while zlib joins its buffers) and zlib's copy
    # of the unread input (about 1 MiB); nothing near the 1 GiB the bomb inflates to.
    assert peak < 4 * MiB


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",
        bytes.fromhex("0005 00fb ff48 656c 6c6f"),  # stored block, NLEN not ~LEN
        b"\x07",  # reserved block type 11
        bytes.fromhex("f248cdc9c907") + b"\xff" * 20,
    ],
)
def test_corrupt_data(payload: bytes) -> None:
    d = PerMessageDeflate().make_decompressor(Role.CLIENT)
    with pytest.raises(RemoteProtocolError) as info:
        inflate(d, payload)
    assert info.value.close_code == CloseCode.INVALID_DATA


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4), st.booleans())
def test_garbage_only_raises_remote_protocol_error(chunks: list[bytes], reset: bool) -> None:
    d = PerMessageDeflate(server_no_context_takeover=reset).make_decompressor(Role.CLIENT)
    codes = []
    for i, chunk in enumerate(chunks):
        try:
            d.decompress(chunk, final=i % 2 == 1, max_size=10_000)
        except RemoteProtocolError as exc:
            codes.append(exc.close_code)
            break
    assert set(codes) <= {CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG}


# ---------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=200, deadline=None)
@given(
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    server_bits=st.integers(8, 15),
    client_bits=st.integers(8, 15),
    sender=st.sampled_from([Role.SERVER, Role.CLIENT]),
    messages=st.lists(
        st.lists(st.binary(max_size=600) | st.just(b"abcabc" * 50), min_size=1, max_size=3),
        min_size=1,
        max_size=5,
    ),
)
def test_round_trip(
    server_nct: bool,
    client_nct: bool,
    server_bits: int,
    client_bits: int,
    sender: Role,
    messages: list[list[bytes]],
) -> None:
    params = PerMessageDeflate(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    c, d = pair(params, sender)
    bits = server_bits if sender is Role.SERVER else client_bits
    nct = server_nct if sender is Role.SERVER else client_nct
    # Reference decoder: plain zlib with exactly the agreed window.
    ref = zlib.decompressobj(-bits)
    for fragments in messages:
        got = b""
        ref_got = b""
        for i, fragment in enumerate(fragments):
            final = i == len(fragments) - 1
            payload = c.compress(fragment, final=final)
            got += d.decompress(payload, final=final, max_size=MiB - len(got))
            ref_got += ref.decompress(payload + (b"\x00\x00\xff\xff" if final else b""))
        assert got == b"".join(fragments)
        assert ref_got == got
        if nct:
            ref = zlib.decompressobj(-bits)


# ---------------------------------------------------------------------------------------
# Server negotiation


def server(*values: str, **wishes: bool | int | None) -> PerMessageDeflate | None:
    return negotiate_server([ext(v) for v in values], **wishes)  # type: ignore[arg-type]


def test_plain_offer() -> None:
    params = server("permessage-deflate")
    assert params == PerMessageDeflate()
    assert params.response_value() == "permessage-deflate"


def test_every_parameter_of_an_offer() -> None:
    params = server(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=11"
    )
    assert params == PerMessageDeflate(True, True, 10, 11, echo_server_max_window_bits=True)
    assert params.response_value() == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=11"
    )


def test_offered_server_max_window_bits_is_echoed_even_at_15() -> None:
    params = server("permessage-deflate; server_max_window_bits=15")
    assert params is not None
    assert params.server_max_window_bits == 15
    assert params.response_value() == "permessage-deflate; server_max_window_bits=15"


def test_bare_client_max_window_bits_without_a_wish() -> None:
    params = server("permessage-deflate; client_max_window_bits")
    assert params == PerMessageDeflate()
    assert params.response_value() == "permessage-deflate"


def test_quoted_value() -> None:
    params = server('permessage-deflate; client_max_window_bits="10"')
    assert params is not None
    assert params.client_max_window_bits == 10


@pytest.mark.parametrize(
    "value",
    [
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; server_max_window_bits",
        *(f"permessage-deflate; server_max_window_bits={v}" for v in ("0", "7", "16", "abc")),
        *(f"permessage-deflate; client_max_window_bits={v}" for v in ("0", "7", "16", "abc")),
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; client_max_window_bits=+9",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=9; server_max_window_bits=9",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
        "permessage-deflate; mux",
        "permessage-deflate; Server_No_Context_Takeover",
    ],
)
def test_invalid_offers_are_declined(value: str) -> None:
    assert server(value) is None


def test_first_acceptable_offer_wins() -> None:
    params = server(
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=12",
        "permessage-deflate; server_no_context_takeover",
    )
    assert params == PerMessageDeflate(client_max_window_bits=12)


def test_no_acceptable_offer() -> None:
    assert server() is None
    assert server("x-webkit-deflate-frame", "permessage-deflate; bogus") is None


def test_server_adds_no_context_takeover_on_its_own() -> None:
    params = server("permessage-deflate", server_no_context_takeover=True)
    assert params == PerMessageDeflate(server_no_context_takeover=True)
    assert params.response_value() == "permessage-deflate; server_no_context_takeover"
    params = server("permessage-deflate", client_no_context_takeover=True)
    assert params is not None
    assert params.response_value() == "permessage-deflate; client_no_context_takeover"


def test_server_max_window_bits_wish() -> None:
    params = server("permessage-deflate", server_max_window_bits=10)
    assert params is not None
    assert params.server_max_window_bits == 10
    assert params.response_value() == "permessage-deflate; server_max_window_bits=10"
    params = server("permessage-deflate; server_max_window_bits=9", server_max_window_bits=12)
    assert params is not None
    assert params.server_max_window_bits == 9
    params = server("permessage-deflate; server_max_window_bits=13", server_max_window_bits=12)
    assert params is not None
    assert params.server_max_window_bits == 12
    assert params.response_value() == "permessage-deflate; server_max_window_bits=12"


def test_server_max_window_bits_8_is_honoured() -> None:
    params = server("permessage-deflate; server_max_window_bits=8")
    assert params is not None
    assert params.server_max_window_bits == 8
    assert params.response_value() == "permessage-deflate; server_max_window_bits=8"


def test_client_max_window_bits_wish() -> None:
    # Not offered: the response must not include it.
    params = server("permessage-deflate", client_max_window_bits=10)
    assert params == PerMessageDeflate()
    # Offered bare: the server picks.
    params = server("permessage-deflate; client_max_window_bits", client_max_window_bits=10)
    assert params is not None
    assert params.client_max_window_bits == 10
    assert params.response_value() == "permessage-deflate; client_max_window_bits=10"
    # Offered with a value: the smaller one.
    params = server("permessage-deflate; client_max_window_bits=9", client_max_window_bits=10)
    assert params is not None
    assert params.client_max_window_bits == 9
    params = server("permessage-deflate; client_max_window_bits=12", client_max_window_bits=10)
    assert params is not None
    assert params.client_max_window_bits == 10


@pytest.mark.parametrize("bits", [0, 7, 16])
def test_server_wishes_are_checked(bits: int) -> None:
    with pytest.raises(ValueError, match=rf"^server_max_window_bits .* 15, not {bits}$"):
        server("permessage-deflate", server_max_window_bits=bits)
    with pytest.raises(ValueError, match=rf"^client_max_window_bits .* 15, not {bits}$"):
        server("permessage-deflate", client_max_window_bits=bits)
    assert server("permessage-deflate", server_max_window_bits=15) is not None


# ---------------------------------------------------------------------------------------
# Client offer and negotiation


def test_client_offer() -> None:
    assert client_offer() == "permessage-deflate; client_max_window_bits"
    assert client_offer(client_max_window_bits=False) == "permessage-deflate"
    assert client_offer(
        client_no_context_takeover=True,
        server_no_context_takeover=True,
        client_max_window_bits=10,
        server_max_window_bits=9,
    ) == (
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover;"
        " client_max_window_bits=10; server_max_window_bits=9"
    )
    with pytest.raises(ValueError, match="between 8 and 15"):
        client_offer(client_max_window_bits=16)
    with pytest.raises(ValueError, match="between 8 and 15"):
        client_offer(server_max_window_bits=7)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"client_no_context_takeover": True, "server_no_context_takeover": True},
        {"client_max_window_bits": 9, "server_max_window_bits": 8},
        {"client_max_window_bits": False},
    ],
)
@pytest.mark.parametrize(
    "wishes",
    [
        {},
        {"server_no_context_takeover": True, "client_no_context_takeover": True},
        {"server_max_window_bits": 10, "client_max_window_bits": 12},
    ],
)
def test_our_client_accepts_our_server(
    options: dict[str, bool | int], wishes: dict[str, bool | int]
) -> None:
    offer = client_offer(**options)  # type: ignore[arg-type]
    agreed = server(offer, **wishes)
    assert agreed is not None
    seen = negotiate_client(ext(agreed.response_value()), **options)  # type: ignore[arg-type]
    assert seen == attrs.evolve(agreed, echo_server_max_window_bits=False)
    # Each direction works with what each side believes was agreed.
    down = agreed.make_compressor(Role.SERVER), seen.make_decompressor(Role.CLIENT)
    up = seen.make_compressor(Role.CLIENT), agreed.make_decompressor(Role.SERVER)
    for compressor, decompressor in (down, up):
        for message in (HELLO, HELLO * 9, HELLO):
            assert inflate(decompressor, compressor.compress(message)) == message


def client(value: str, **options: bool | int | None) -> PerMessageDeflate:
    return negotiate_client(ext(value), **options)  # type: ignore[arg-type]


def test_client_reads_every_parameter() -> None:
    params = client(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=8"
    )
    assert params == PerMessageDeflate(True, True, 10, 8)


def test_client_keeps_its_own_promises() -> None:
    # We said we would not use context takeover, or more than 10 bits: we keep to it.
    params = client(
        "permessage-deflate; client_max_window_bits=12",
        client_no_context_takeover=True,
        client_max_window_bits=10,
    )
    assert params == PerMessageDeflate(client_no_context_takeover=True, client_max_window_bits=10)
    params = client("permessage-deflate", client_max_window_bits=10)
    assert params.client_max_window_bits == 10
    params = client("permessage-deflate; client_max_window_bits=9", client_max_window_bits=10)
    assert params.client_max_window_bits == 9


@pytest.mark.parametrize(
    ("value", "options"),
    [
        ("permessage-deflate; mux", {}),
        ("x-webkit-deflate-frame", {}),
        ("permessage-deflate; server_no_context_takeover=x", {}),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", {}),
        ("permessage-deflate; server_max_window_bits", {}),
        ("permessage-deflate; client_max_window_bits", {}),
        ("permessage-deflate; server_max_window_bits=7", {}),
        ("permessage-deflate; client_max_window_bits=16", {}),
        ("permessage-deflate; client_max_window_bits=abc", {}),
        ("permessage-deflate; server_max_window_bits=9; server_max_window_bits=9", {}),
        # Asked for and not granted.
        ("permessage-deflate", {"server_no_context_takeover": True}),
        ("permessage-deflate", {"server_max_window_bits": 10}),
        ("permessage-deflate; server_max_window_bits=11", {"server_max_window_bits": 10}),
        # Not offered.
        ("permessage-deflate; client_max_window_bits=10", {"client_max_window_bits": False}),
    ],
)
def test_client_rejects(value: str, options: dict[str, bool | int]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        client(value, **options)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert info.value.http_status is None


def test_extension_name_constant() -> None:
    assert EXTENSION_NAME == "permessage-deflate"


# ---------------------------------------------------------------------------------------
# Interoperability with websockets and wsproto


def _ws_extension(params: PerMessageDeflate, local: Role) -> ws_pmd.PerMessageDeflate:
    if local is Role.SERVER:
        return ws_pmd.PerMessageDeflate(
            params.client_no_context_takeover,
            params.server_no_context_takeover,
            params.client_max_window_bits,
            params.server_max_window_bits,
        )
    return ws_pmd.PerMessageDeflate(
        params.server_no_context_takeover,
        params.client_no_context_takeover,
        params.server_max_window_bits,
        params.client_max_window_bits,
    )


INTEROP_PARAMS = [
    PerMessageDeflate(),
    PerMessageDeflate(True, True, 9, 10),
    PerMessageDeflate(False, True, 12, 9),
    PerMessageDeflate(server_max_window_bits=8),  # websockets inflates with exactly 8
]
MESSAGES = [HELLO, b"", HELLO, b"abc" * 3000, bytes(range(256)) * 40, HELLO]


@pytest.mark.parametrize("params", INTEROP_PARAMS)
def test_websockets_decodes_ours(params: PerMessageDeflate) -> None:
    ours = params.make_compressor(Role.SERVER)
    theirs = _ws_extension(params, Role.CLIENT)
    for message in MESSAGES:
        frame = WsFrame(WsOpcode.BINARY, ours.compress(message), fin=True, rsv1=True)
        assert theirs.decode(frame, max_size=MiB).data == message
    # Fragmented: first frame carries RSV1, continuation frames do not.
    parts = [ours.compress(b"abc" * 100, final=False), ours.compress(b"def" * 100)]
    first = theirs.decode(WsFrame(WsOpcode.TEXT, parts[0], fin=False, rsv1=True))
    last = theirs.decode(WsFrame(WsOpcode.CONT, parts[1], fin=True))
    assert bytes(first.data) + bytes(last.data) == b"abc" * 100 + b"def" * 100


@pytest.mark.parametrize("params", [p for p in INTEROP_PARAMS if p.client_max_window_bits > 8])
def test_we_decode_websockets(params: PerMessageDeflate) -> None:
    theirs = _ws_extension(params, Role.CLIENT)
    ours = params.make_decompressor(Role.SERVER)
    for message in MESSAGES:
        frame = theirs.encode(WsFrame(WsOpcode.BINARY, message))
        assert frame.rsv1
        assert inflate(ours, bytes(frame.data)) == message


def test_websockets_negotiation_interop() -> None:
    # Their client's offer, our server's answer, their client's check of it.
    factory = ws_pmd.ClientPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=True, server_no_context_takeover=True
    )
    offer = ExtensionOffer(EXTENSION_NAME, tuple(factory.get_request_params()))
    agreed = negotiate_server([offer], client_max_window_bits=10)
    assert agreed == PerMessageDeflate(True, False, 12, 10, echo_server_max_window_bits=True)
    response = ext(agreed.response_value())
    factory.process_response_params(list(response.params), [])
    # Their server's answer to our client's offer.
    server_factory = ws_pmd.ServerPerMessageDeflateFactory(
        server_max_window_bits=11, client_max_window_bits=9
    )
    response_params, _ = server_factory.process_request_params(
        list(ext(client_offer(server_no_context_takeover=True)).params), []
    )
    seen = negotiate_client(
        ExtensionOffer(EXTENSION_NAME, tuple(response_params)), server_no_context_takeover=True
    )
    assert seen == PerMessageDeflate(True, False, 11, 9)


class _WsprotoPeer:
    """Drives wsproto's PerMessageDeflate through its frame hooks, as its FrameProtocol does."""

    def __init__(self, params: PerMessageDeflate, *, client: bool) -> None:
        self.ext = WsprotoPMD(
            client_no_context_takeover=params.client_no_context_takeover,
            client_max_window_bits=params.client_max_window_bits,
            server_no_context_takeover=params.server_no_context_takeover,
            server_max_window_bits=params.server_max_window_bits,
        )
        self.proto = types.SimpleNamespace(client=client)

    def send(self, message: bytes) -> bytes:
        rsv, data = self.ext.frame_outbound(
            self.proto,  # type: ignore[arg-type]
            WsprotoOpcode.BINARY,
            RsvBits(False, False, False),
            message,
            True,
        )
        assert rsv.rsv1
        return data

    def receive(self, payload: bytes) -> bytes:
        proto = self.proto
        self.ext.frame_inbound_header(
            proto,  # type: ignore[arg-type]
            WsprotoOpcode.BINARY,
            RsvBits(True, False, False),
            len(payload),
        )
        data = self.ext.frame_inbound_payload_data(proto, payload)  # type: ignore[arg-type]
        tail = self.ext.frame_inbound_complete(proto, True)  # type: ignore[arg-type]
        assert isinstance(data, bytes)
        assert isinstance(tail, bytes)
        return data + tail


WSPROTO_PARAMS = [
    p for p in INTEROP_PARAMS if min(p.server_max_window_bits, p.client_max_window_bits) > 8
]


@pytest.mark.parametrize("params", WSPROTO_PARAMS)
def test_wsproto_interop(params: PerMessageDeflate) -> None:
    peer = _WsprotoPeer(params, client=True)
    to_peer = params.make_compressor(Role.SERVER)
    from_peer = params.make_decompressor(Role.SERVER)
    for message in MESSAGES:
        assert peer.receive(to_peer.compress(message)) == message
        assert inflate(from_peer, peer.send(message)) == message


# ---------------------------------------------------------------------------------------
# Memory: lazy zlib objects, one shared compressor without context takeover


def fresh_inflate(payload: bytes, bits: int = 15) -> bytes:
    """Inflate one message with a new decoder, as a peer that keeps no context does."""
    return zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")


def test_no_zlib_object_before_the_first_message() -> None:
    for nct in (False, True):
        c, d = pair(PerMessageDeflate(server_no_context_takeover=nct))
        assert c._compressor is None
        assert d._decompressor is None


def test_shared_compressor_output_equals_a_fresh_compressors() -> None:
    messages = [b"the quick brown fox jumps over the lazy dog " * 4, HELLO, bytes(range(256)) * 3]
    many = [PerMessageDeflate(server_no_context_takeover=True).make_compressor(Role.SERVER)]
    many += [MessageCompressor(window_bits=15, no_context_takeover=True) for _ in range(3)]
    for message in messages:
        reference = zlib.compressobj(6, zlib.DEFLATED, -15, 5)
        expected = reference.compress(message) + reference.flush(zlib.Z_SYNC_FLUSH)
        for c in many:  # each compresses after the others used the shared object
            assert c.compress(message) == expected[:-4]
            assert c._compressor is None  # nothing kept between messages
            assert fresh_inflate(c.compress(message)) == message


def test_fragmented_message_does_not_disturb_the_shared_compressor() -> None:
    text = b"abcdefgh" * 64
    a = MessageCompressor(window_bits=15, no_context_takeover=True)
    b = MessageCompressor(window_bits=15, no_context_takeover=True)
    parts = [a.compress(text, final=False)]
    assert a._compressor is not None  # its own zlib object for the fragmented message
    whole = b.compress(text)  # another connection's message in between
    parts.append(a.compress(text))
    assert a._compressor is None
    assert fresh_inflate(whole) == text
    assert fresh_inflate(b"".join(parts)) == text * 2
    # The next whole message of either refers to nothing sent before.
    assert fresh_inflate(a.compress(text)) == text
    assert fresh_inflate(b.compress(text)) == text


def test_shared_compressor_survives_an_exception() -> None:
    a = MessageCompressor(window_bits=15, no_context_takeover=True)
    with pytest.raises(TypeError):
        a.compress("not bytes")  # type: ignore[arg-type]
    assert fresh_inflate(a.compress(HELLO)) == HELLO


def test_shared_compressor_per_window_and_strategy() -> None:
    for bits in range(8, 16):
        c = MessageCompressor(window_bits=bits, no_context_takeover=True)
        ref = zlib.decompressobj(-bits)  # the strictest decoder, kept across messages
        for message in WINDOW_PROBE:
            assert ref.decompress(c.compress(message) + b"\x00\x00\xff\xff") == message


@pytest.mark.parametrize("nct", [False, True])
def test_decompressor_keeps_zlib_state_only_with_context_takeover(nct: bool) -> None:
    c, d = pair(PerMessageDeflate(client_no_context_takeover=nct), sender=Role.CLIENT)
    assert inflate(d, c.compress(HELLO)) == HELLO
    assert (d._decompressor is None) is nct
    first = c.compress(HELLO * 10, final=False)
    assert d.decompress(first, final=False, max_size=MiB) + inflate(d, c.compress(b"!")) == (
        HELLO * 10 + b"!"
    )
    assert (d._decompressor is None) is nct


def test_mem_level_is_checked_and_used() -> None:
    with pytest.raises(ValueError, match="mem_level"):
        MessageCompressor(window_bits=15, no_context_takeover=False, mem_level=10)
    c = PerMessageDeflate().make_compressor(Role.SERVER, mem_level=9)
    assert fresh_inflate(c.compress(HELLO * 100)) == HELLO * 100


# ---------------------------------------------------------------------------------------
# Exact texts and bytes


@pytest.mark.parametrize(
    ("value", "options", "why"),
    [
        ("x-deflate", {}, "not permessage-deflate: 'x-deflate'"),
        ("permessage-deflate; foo", {}, "unknown parameter 'foo'"),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            {},
            "duplicate parameter 'server_no_context_takeover'",
        ),
        ("permessage-deflate; server_max_window_bits", {}, "server_max_window_bits needs a value"),
        (
            "permessage-deflate; client_max_window_bits=16",
            {},
            "invalid value for client_max_window_bits: '16'",
        ),
        (
            "permessage-deflate; server_no_context_takeover=1",
            {},
            "server_no_context_takeover takes no value",
        ),
        (
            "permessage-deflate",
            {"server_no_context_takeover": True},
            "server_no_context_takeover offered but not accepted",
        ),
        (
            "permessage-deflate",
            {"server_max_window_bits": 12},
            "server_max_window_bits offered but not accepted",
        ),
        (
            "permessage-deflate; server_max_window_bits=13",
            {"server_max_window_bits": 12},
            "server_max_window_bits=13 exceeds the offer",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            {"client_max_window_bits": False},
            "client_max_window_bits not offered",
        ),
    ],
)
def test_client_rejection_texts(value: str, options: dict[str, object], why: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        negotiate_client(ext(value), **options)  # type: ignore[arg-type]
    assert info.value.reason == f"permessage-deflate response rejected: {why}"
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("function", [client_offer, negotiate_client])
def test_client_options_are_checked(function: object) -> None:
    args = (ext("permessage-deflate"),) if function is negotiate_client else ()
    for name, bits in [("client_max_window_bits", 16), ("server_max_window_bits", 7)]:
        with pytest.raises(ValueError, match=f"^{name} must be between 8 and 15, not {bits}$"):
            function(*args, **{name: bits})  # type: ignore[operator]


@pytest.mark.parametrize("nct", [False, True])
def test_compressor_bytes_per_window(nct: bool) -> None:
    # Long-distance repeats: Z_RLE (window 8) cannot use them, the default strategy can.
    message = bytes(range(200)) * 4
    _deflate._SHARED.clear()  # a pooled compressor from an earlier test would hide ours
    for bits, wbits, strategy in [(8, -9, zlib.Z_RLE), (9, -9, zlib.Z_DEFAULT_STRATEGY)]:
        reference = zlib.compressobj(6, zlib.DEFLATED, wbits, 5, strategy)
        expected = reference.compress(message) + reference.flush(zlib.Z_SYNC_FLUSH)
        c = MessageCompressor(window_bits=bits, no_context_takeover=nct)
        assert c.compress(message) == expected[:-4]
    rle = MessageCompressor(window_bits=8, no_context_takeover=nct).compress(message)
    assert rle != MessageCompressor(window_bits=9, no_context_takeover=nct).compress(message)


def test_shared_compressor_is_pooled() -> None:
    c = MessageCompressor(window_bits=11, no_context_takeover=True, level=3)
    c.compress(HELLO)
    shared = _deflate._SHARED[c._params]
    assert shared is not None
    c.compress(HELLO)
    MessageCompressor(window_bits=11, no_context_takeover=True, level=3).compress(HELLO)
    assert _deflate._SHARED[c._params] is shared


# Chat-like JSON on which zlib's levels 6 and 7 give different bytes.
CHAT = b"".join(
    b'{"user": "u%d", "text": "message number %d of the chat"}' % (i % 17, i * 7919 % 1000)
    for i in range(2000)
)


def deflated(message: bytes, *, level: int = 6, mem_level: int = 5, wbits: int = -15) -> bytes:
    reference = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
    return (reference.compress(message) + reference.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("nct", [False, True])
def test_compressor_level_and_mem_level(role: Role, nct: bool) -> None:
    assert deflated(CHAT) != deflated(CHAT, level=7)
    params = PerMessageDeflate(server_no_context_takeover=nct, client_no_context_takeover=nct)
    assert params.make_compressor(role).compress(CHAT) == deflated(CHAT)
    assert MessageCompressor(window_bits=15, no_context_takeover=nct).compress(CHAT) == (
        deflated(CHAT)
    )
    for level, mem_level in [(1, 9), (9, 1)]:
        c = params.make_compressor(role, level=level, mem_level=mem_level)
        assert c.compress(CHAT) == deflated(CHAT, level=level, mem_level=mem_level)
    with pytest.raises(ValueError, match=r"^mem_level must be between 1 and 9, not 0$"):
        MessageCompressor(window_bits=15, no_context_takeover=nct, mem_level=0)


@pytest.mark.parametrize("bits", [8, 9])
def test_inflate_refuses_distances_beyond_its_window(bits: int) -> None:
    # A 9-bit window (also for 8, see the module docstring) keeps 512 bytes between
    # messages: a second message that refers 600 bytes back is not one the peer may send.
    first = bytes(range(256)) + bytes(range(255, -1, -1)) + b"x" * 88
    second = bytes(range(256))
    reference = zlib.compressobj(6, zlib.DEFLATED, -15, 5)
    payloads = [
        (reference.compress(m) + reference.flush(zlib.Z_SYNC_FLUSH))[:-4] for m in (first, second)
    ]
    wide = MessageDecompressor(window_bits=10, no_context_takeover=False)
    assert [inflate(wide, p) for p in payloads] == [first, second]
    d = MessageDecompressor(window_bits=bits, no_context_takeover=False)
    assert inflate(d, payloads[0]) == first
    with pytest.raises(RemoteProtocolError) as info:
        inflate(d, payloads[1])
    assert info.value.close_code == CloseCode.INVALID_DATA


def test_large_final_frame_keeps_the_context() -> None:
    # A final payload over the copy threshold gets its tail inflated separately; the next
    # message, with context takeover, must continue from a complete stream.
    big = bytes(range(256)) * 4 + random.Random(0).randbytes(4000)
    c, d = pair(PerMessageDeflate(), sender=Role.SERVER)
    first = c.compress(big)
    assert len(first) >= 2048
    assert inflate(d, first) == big
    assert inflate(d, c.compress(big[:300])) == big[:300]


def test_bomb_inflates_only_to_the_limit() -> None:
    bomb = deflated(b"\0" * (32 * MiB))
    assert len(bomb) >= 2048  # takes the path where the tail is inflated separately
    d = MessageDecompressor(window_bits=15, no_context_takeover=False)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            d.decompress(bomb, final=True, max_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert peak < MiB


def test_client_decompressor_follows_server_no_context_takeover() -> None:
    c, d = pair(PerMessageDeflate(server_no_context_takeover=True), sender=Role.SERVER)
    assert inflate(d, c.compress(HELLO)) == HELLO
    assert d._decompressor is None
    c, d = pair(PerMessageDeflate(), sender=Role.SERVER)
    assert inflate(d, c.compress(HELLO)) == HELLO
    assert d._decompressor is not None


def test_parse_params_maps_bare_parameters_to_none() -> None:
    offer = ext("permessage-deflate; server_no_context_takeover; client_max_window_bits")
    params = _deflate._parse_params(
        offer, value_required=frozenset(), value_optional=frozenset({"client_max_window_bits"})
    )
    assert params == {"server_no_context_takeover": None, "client_max_window_bits": None}
