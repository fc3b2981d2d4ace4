"""RFC 6455 §5 framing: opcodes, masking, encoding one frame, parsing a stream of frames.

Theory of operation: :class:`FrameParser` owns a receive buffer. ``feed()`` appends bytes;
``next_frame()`` returns the next complete frame or ``None`` when more bytes are needed. The
header is checked as soon as its first bytes arrive (reserved opcodes, RSV bits, masking,
control frame rules, the 64-bit length MSB), and the payload length is compared with the
size limit *before* the payload is buffered, so a peer announcing a huge frame is refused
without us holding its bytes. Payloads are unmasked with one whole-buffer operation.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Any

from ._errors import CloseCode, RemoteProtocolError


class Role(enum.Enum):
    """Which end of the connection this protocol object plays."""

    SERVER = "server"
    CLIENT = "client"


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2); every other value is reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_DATA_OPCODES = frozenset({0x0, 0x1, 0x2})
# A data frame this large that arrives in more than one chunk is collected as the chunks
# themselves (FrameParser): below it, copying into the receive buffer costs less than
# keeping the pieces.
LARGE_FRAME_SIZE = 16384
# While a large frame is collected, a piece smaller than this is copied onto a bytearray of
# small pieces instead of kept as an object of its own (FrameParser._keep).
_SMALL_PIECE_SIZE = 4096
_CONTROL_OPCODES = frozenset({0x8, 0x9, 0xA})
# RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
MAX_CONTROL_PAYLOAD = 125

_pack_2 = struct.Struct("!BB").pack
_pack_4 = struct.Struct("!BBH").pack
_pack_10 = struct.Struct("!BBQ").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from


# Below this size one big-integer XOR is the fastest pure-Python mask; above it, four
# bytes.translate() passes over the strided slices (one per key byte) win, 2x at 1 MiB.
_TRANSLATE_MIN_SIZE = 512
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated, without a per-byte Python loop."""
    n = len(data)
    if n == 0:
        return b""
    if n < _TRANSLATE_MIN_SIZE:
        reps, rest = divmod(n, 4)
        key = mask * reps + mask[:rest]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR_TABLES[mask[i]])
    return bytes(out)


class _MaskKeys:
    """Masking keys cut from a pool of system randomness, refilled when used up.

    RFC 6455 §5.3: "The masking key needs to be unpredictable; thus, the masking key MUST
    be derived from a strong source of entropy". The keys still come from ``os.urandom``;
    taking 4 KiB at a time saves a system call per frame.
    """

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._pool):
            self._pool = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


_mask_keys = _MaskKeys()
new_mask_key = _mask_keys.next


try:  # the optional compiled speedup, built by the standard build backend when a compiler exists
    from ._speedups import apply_mask as _apply_mask_c
    from ._speedups import parse_frame as _parse_frame_c
    from ._speedups import take_messages as _take_messages_c
    from ._speedups import unmask_join as _unmask_join_c
except ImportError:  # pragma: no cover - depends on the build
    _apply_mask_c = None
    _parse_frame_c = None
    _take_messages_c = None
    _unmask_join_c = None

apply_mask = _apply_mask_c if _apply_mask_c is not None else _apply_mask_python
"""``apply_mask(data, mask) -> bytes``: the compiled version when present, else pure Python."""

HAS_SPEEDUPS = _apply_mask_c is not None


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bool = False,
    length: int | None = None,
) -> bytes:
    """Serialise one frame (RFC 6455 §5.2).

    A client masks every frame with a fresh random key (§5.3: "the masking key MUST be
    derived from a strong source of entropy"); a server never masks. With ``length`` (an
    unmasked frame only) just the header of a frame of that many payload bytes is made,
    the payload to be written after it.
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if length is not None and (mask or payload):
        raise ValueError("length= makes the header of an unmasked frame, without payload")
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = _pack_2(b0, mbit | n)
    elif n < 0x10000:
        head = _pack_4(b0, mbit | 126, n)
    else:
        head = _pack_10(b0, mbit | 127, n)
    if mask:
        key = new_mask_key()
        return b"".join((head, key, apply_mask(payload, key)))
    return head + payload


class Frame:
    """One parsed frame. A plain slotted class: it is built for every frame received."""

    __slots__ = ("fin", "opcode", "payload", "rsv1")

    def __init__(self, opcode: int, payload: bytes, fin: bool, rsv1: bool) -> None:
        self.opcode = opcode
        self.payload = payload
        self.fin = fin
        self.rsv1 = rsv1

    def __repr__(self) -> str:
        n = len(self.payload)
        return f"Frame(opcode={self.opcode}, fin={self.fin}, rsv1={self.rsv1}, len={n})"


def _immutable(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` cannot change under us: ``bytes``, or a view of ``bytes``."""
    return type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)


class FrameParser:
    """Incremental frame parser for one direction of one connection.

    A large frame (:data:`LARGE_FRAME_SIZE` or more) whose header starts a chunk fed while
    nothing else is buffered is not copied into the receive buffer: the chunks are kept as
    they came and joined (and unmasked) once, when the last one arrives. :attr:`missing`
    says how many bytes that frame still needs, so that the reader can ask for them in one
    read instead of many.

    Args:
        expect_masked: True on the server side (client frames MUST be masked, §5.1), False
            on the client side (server frames MUST NOT be masked).
        allow_rsv1: whether an extension that uses RSV1 (permessage-deflate) was negotiated.
        max_frame_size: payload length above which a data frame is refused with 1009 before
            its payload is read.
    """

    __slots__ = (
        "_buf",
        "_chunks",
        "_chunks_size",
        "_expect_masked",
        "_large",
        "allow_rsv1",
        "max_frame_size",
        "missing",
    )

    def __init__(self, *, expect_masked: bool, allow_rsv1: bool, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._expect_masked = expect_masked
        self.allow_rsv1 = allow_rsv1
        self.max_frame_size = max_frame_size
        # The large frame being collected: (opcode, fin, rsv1, masking key or None).
        self._large: tuple[int, bool, bool, bytes | None] | None = None
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._chunks_size = 0
        self.missing = 0
        """Payload bytes the large frame being collected still needs (0: none is)."""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        missing = self.missing
        if missing:
            n = len(data)
            if n <= missing:
                self._keep(data)
                self._chunks_size += n
                self.missing = missing - n
                return
            self._keep(memoryview(data)[:missing])
            self._chunks_size += missing
            self.missing = 0
            self._buf += memoryview(data)[missing:]
        elif not self._buf and len(data) > LARGE_FRAME_SIZE and self._start_large(data):
            return
        else:
            self._buf += data

    def feed_messages(
        self, data: bytes | bytearray | memoryview, messages: list[Any], max_message_size: int
    ) -> bool:
        """:meth:`feed`, then (with the compiled speedup) take the frames at the front of
        the buffer that are whole messages on their own, onto ``messages``: each final,
        RSV-free text or binary frame of at most ``max_message_size`` bytes, as its payload
        (``str`` for text, ``bytes`` for binary). For a caller between messages, to which
        such a frame is that message and nothing else; whatever is left, the next one on,
        :meth:`next_parts` returns as before, errors included.

        Returns whether nothing is left buffered (then :meth:`next_parts` would return
        ``None``)."""
        buf = self._buf
        if self.missing or len(data) > LARGE_FRAME_SIZE:
            self.feed(data)
        else:
            buf += data  # feed(), inlined for the common case
        take = take_messages
        if take is None or self._large is not None:
            return False
        if buf:
            take(buf, messages, max_message_size, self._expect_masked)
        return not buf

    def _keep(self, data: bytes | bytearray | memoryview) -> None:
        """Add a piece to the large frame being collected. A small one is copied onto the
        end of a bytearray of small pieces: a peer sending a byte per read must not make
        us hold an object (and a list slot) per byte. A large piece of a bytes object is
        kept as it is; anything else is copied (a caller may reuse its buffer)."""
        chunks = self._chunks
        if len(data) < _SMALL_PIECE_SIZE:
            tail = chunks[-1]
            if type(tail) is bytearray:
                tail += data
            else:
                chunks.append(bytearray(data))
        elif _immutable(data):
            chunks.append(data)  # kept without a copy
        else:
            chunks.append(bytes(data))

    def _start_large(self, data: bytes | bytearray | memoryview) -> bool:
        """Begin collecting a large frame whose header starts ``data``; False (nothing
        done) unless ``data`` holds a whole, valid header of a data frame of at least
        :data:`LARGE_FRAME_SIZE` bytes and not the whole frame. A header that breaks a rule
        is left to the ordinary path, which raises the error."""
        b0 = data[0]
        b1 = data[1]
        opcode = b0 & 0x0F
        if b0 & 0x30 or opcode not in _DATA_OPCODES or (b0 & 0x40 and not self.allow_rsv1):
            return False
        masked = bool(b1 & 0x80)
        if masked != self._expect_masked:
            return False
        form = b1 & 0x7F
        if form == 126:
            (length,) = _unpack_h(data, 2)
            start = 4
        elif form == 127:
            (length,) = _unpack_q(data, 2)
            start = 10
        else:
            return False
        if length < LARGE_FRAME_SIZE or length > self.max_frame_size or length >> 63:
            return False
        key = None
        if masked:
            key = bytes(data[start : start + 4])
            start += 4
        have = len(data) - start
        if have >= length:
            return False
        if not _immutable(data):
            data = bytes(data)  # a caller may reuse its buffer
        self._large = (opcode, bool(b0 & 0x80), bool(b0 & 0x40), key)
        self._chunks = [memoryview(data)[start:]]
        self._chunks_size = have
        self.missing = length - have
        return True

    def discard(self) -> None:
        """Drop every buffered byte: the connection is over and reads no more frames."""
        self._buf = bytearray()
        self._large = None
        self._chunks = []
        self._chunks_size = 0
        self.missing = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) + self._chunks_size

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, ``None`` if incomplete; raise on a bad header."""
        parts = self.next_parts()
        return None if parts is None else Frame(*parts)

    def next_parts(self) -> FrameParts | None:
        """:meth:`next_frame` as a plain ``(opcode, payload, fin, rsv1)`` tuple: the
        per-frame path of the protocol, which builds no object for a frame."""
        large = self._large
        if large is not None:
            if self.missing:
                return None
            opcode, fin, rsv1, key = large
            chunks = self._chunks
            self._large = None
            self._chunks = []
            self._chunks_size = 0
            payload = unmask_join(chunks, key) if key is not None else b"".join(chunks)
            return opcode, payload, fin, rsv1
        buf = self._buf
        parts = parse_frame(buf, self._expect_masked, self.allow_rsv1, self.max_frame_size)
        if parts is NotImplemented:  # the compiled parser leaves every error to this one
            parts = _parse_frame_python(
                buf, self._expect_masked, self.allow_rsv1, self.max_frame_size
            )
        return parts  # type: ignore[no-any-return]


FrameParts = tuple[int, bytes, bool, bool]
"""One parsed frame as ``(opcode, payload, fin, rsv1)``."""


def _parse_frame_python(
    buf: bytearray, expect_masked: bool, allow_rsv1: bool, max_frame_size: int
) -> FrameParts | None:
    """Take the next complete frame out of ``buf``; ``None`` if it is not all there yet.

    Raises:
        RemoteProtocolError: the header breaks a rule of RFC 6455 §5, or announces more
            than ``max_frame_size`` bytes of data (1009).
    """
    avail = len(buf)
    if avail < 2:
        return None
    b0 = buf[0]
    b1 = buf[1]
    opcode = b0 & 0x0F
    fin = b0 & 0x80
    rsv1 = b0 & 0x40
    if b0 & 0x30 or (rsv1 and not allow_rsv1):
        raise RemoteProtocolError("reserved bits set without an extension that defines them")
    if opcode in _CONTROL_OPCODES:
        if not fin:
            raise RemoteProtocolError("fragmented control frame")  # §5.5
        if rsv1:
            raise RemoteProtocolError("RSV1 set on a control frame")  # RFC 7692 §6
    elif opcode not in _DATA_OPCODES:
        raise RemoteProtocolError(f"reserved opcode {opcode:#x}")
    masked = b1 & 0x80
    if bool(masked) != expect_masked:
        raise RemoteProtocolError(
            "client frame not masked" if expect_masked else "server frame masked"
        )
    length = b1 & 0x7F
    pos = 2
    if length >= 126:
        if opcode >= 0x8:
            raise RemoteProtocolError("control frame payload over 125 bytes")
        if length == 126:
            if avail < 4:
                return None
            (length,) = _unpack_h(buf, 2)
            pos = 4
        else:
            if avail < 10:
                return None
            (length,) = _unpack_q(buf, 2)
            if length >> 63:
                raise RemoteProtocolError("64-bit payload length with the most significant bit set")
            pos = 10
        if length > max_frame_size:
            raise RemoteProtocolError(
                f"frame of {length} bytes exceeds the {max_frame_size}-byte limit",
                close_code=CloseCode.MESSAGE_TOO_BIG,
            )
    elif length > max_frame_size and opcode < 0x8:
        raise RemoteProtocolError(
            f"frame of {length} bytes exceeds the {max_frame_size}-byte limit",
            close_code=CloseCode.MESSAGE_TOO_BIG,
        )
    if masked:
        end = pos + 4 + length
        if avail < end:
            return None
        key = bytes(buf[pos : pos + 4])
        payload = apply_mask(memoryview(buf)[pos + 4 : end], key)
    else:
        end = pos + length
        if avail < end:
            return None
        payload = bytes(buf[pos:end])
    del buf[:end]
    return opcode, payload, bool(fin), bool(rsv1)


parse_frame: Callable[[bytearray, bool, bool, int], Any] = (
    _parse_frame_c if _parse_frame_c is not None else _parse_frame_python
)
"""``parse_frame(buf, expect_masked, allow_rsv1, max_frame_size)``: the next frame's parts,
taken out of ``buf``, or ``None``. The compiled one returns ``NotImplemented`` for a header
it leaves to :func:`_parse_frame_python` (every refusal: it raises the error)."""


def _unmask_join_python(chunks: list[bytes | bytearray | memoryview], key: bytes) -> bytes:
    """The chunks of a masked payload, joined and unmasked."""
    return apply_mask(b"".join(chunks), key)


take_messages: Callable[[bytearray, list[Any], int, bool], int] | None = _take_messages_c
"""``take_messages(buf, messages, max_message_size, expect_masked)``, compiled only: the
frames at the front of ``buf`` that are whole messages on their own, taken out onto
``messages`` as payloads, up to the first frame that is anything else; returns how many.
Without the speedup (``None``) every frame takes the :func:`parse_frame` path."""


unmask_join: Callable[[list[bytes | bytearray | memoryview], bytes], bytes] = (
    _unmask_join_c if _unmask_join_c is not None else _unmask_join_python
)
"""``unmask_join(chunks, key)``: one masked payload received in pieces, joined and
unmasked in one pass (compiled), or joined then unmasked."""
