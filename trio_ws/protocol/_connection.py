"""The RFC 6455 connection after the opening handshake, as a sans-IO state machine.

Theory of operation
-------------------
A :class:`WebSocketProtocol` is fed bytes with :meth:`~WebSocketProtocol.receive_data` and
:meth:`~WebSocketProtocol.receive_eof`; it parses frames, reassembles and inflates messages,
checks UTF-8 and limits, and queues what the peer is owed (Pong for Ping, the Close reply)
itself. The caller collects complete :mod:`events <trio_ws.protocol._events>` with
:meth:`~WebSocketProtocol.events_received` and the bytes to write with
:meth:`~WebSocketProtocol.data_to_send`, which it should flush after every
``receive_data`` call, before acting on the events (STYLE.md rule 4).

Connection states (RFC 6455 §7) and what moves them::

    OPEN    --send_close()-------------------->  CLOSING   (our Close sent, theirs awaited)
    OPEN    --peer Close (we reply)----------->  CLOSED
    CLOSING --peer Close---------------------->  CLOSED
    any     --protocol error (we send Close)-->  CLOSED    (the connection is failed, §7.1.7)
    any     --receive_eof()------------------->  CLOSED

In CLOSED the transport should be closed: a server closes the TCP connection first
(§7.1.1), a client waits briefly for the server to do so. After our Close only Pongs
are sent (§5.5.2); nothing at all once CLOSED.

Reassembly (RFC 6455 §5.4) keeps a fragment's payload as it is when it is large and joins
small ones into larger pieces first (:class:`_Fragments`), so what a fragmented message
holds is its payload plus a few percent, however it is cut. Three bounds apply to it:
the size limit (checked against each frame header before its payload is read), a count of
fragments (``max_fragments``: a peer sending empty or 1-byte continuations forever hits it
without holding memory), and time, which the core cannot see: :attr:`message_in_progress`
tells the runtime when a message started, so it can enforce a deadline for finishing it.
"""

from __future__ import annotations

import codecs
import encodings.utf_8
import enum
import struct
import sys
import traceback
from typing import AnyStr, Generic

import attrs

from ._deflate import MessageCompressor, MessageDecompressor, PerMessageDeflate
from ._errors import CloseCode, LocalProtocolError, RemoteProtocolError, is_valid_close_code
from ._events import BytesMessage, Close, Event, Ping, Pong, TextMessage
from ._frames import MAX_CONTROL_PAYLOAD, FrameParser, Opcode, Role, encode_frame

__all__ = [
    "DEFAULT_MAX_FRAGMENTS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ConnectionState",
    "MessageProgress",
    "WebSocketProtocol",
]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB after reassembly and inflation (DESIGN.md limits)
# Frames one message may arrive in. Browsers and most libraries send one frame per message;
# the Autobahn suite's most fragmented case is 4 MiB in 64-byte fragments, 65,536 frames.
# Endless empty continuations (6 wire bytes each from a client) end after 384 KiB.
DEFAULT_MAX_FRAGMENTS = 1 << 16

_UNLIMITED = sys.maxsize
# Enum member lookups cost ~150 ns each on CPython 3.11; the per-message paths use these.
_TEXT = int(Opcode.TEXT)
_BINARY = int(Opcode.BINARY)
_utf8_incremental = encodings.utf_8.IncrementalDecoder
_pack_close = struct.Struct("!H").pack
_unpack_close = struct.Struct("!H").unpack_from
_pack_2 = struct.Struct("!BB").pack


# Reassembly keeps a piece of at least this many bytes (or characters) as one object of its
# own and joins smaller ones until they are this big. A kept object costs about 40 bytes,
# so a message holds at most ~10% more than its payload, plus one run of small pieces
# being joined. (One bytearray grown in place would hold no more, but measured 2-4x
# slower for 1 MiB in 16 KiB fragments: it is regrown, then copied once more at the end.)
_COALESCE_SIZE = 512
# A server frame's payload this large is queued apart from its header (and written with
# it in one vectored write) instead of being copied behind it.
_SEPARATE_PAYLOAD_SIZE = 16384


class _Fragments(Generic[AnyStr]):
    """The payload of one fragmented message so far: bytes, or the text decoded so far."""

    __slots__ = ("_empty", "_parts", "_small", "_small_size")

    def __init__(self, empty: AnyStr) -> None:
        self._empty: AnyStr = empty
        self._parts: list[AnyStr] = []
        self._small: list[AnyStr] = []  # pieces under _COALESCE_SIZE, not yet joined
        self._small_size = 0

    def add(self, piece: AnyStr) -> None:
        n = len(piece)
        if n >= _COALESCE_SIZE:
            if self._small:
                self._join_small()
            self._parts.append(piece)
        elif n:  # an empty piece adds nothing, not even an entry
            self._small.append(piece)
            self._small_size += n
            if self._small_size >= _COALESCE_SIZE:
                self._join_small()

    def _join_small(self) -> None:
        self._parts.append(self._empty.join(self._small))
        self._small = []
        self._small_size = 0

    def finish(self, last: AnyStr) -> AnyStr:
        """The whole message, ``last`` being its final piece."""
        self.add(last)
        if self._small:
            self._join_small()
        parts = self._parts
        return parts[0] if len(parts) == 1 else self._empty.join(parts)


def _compressed_budget(raw_budget: int) -> int:
    """Largest compressed payload that can still inflate to at most ``raw_budget`` bytes.

    Deflate's worst case is stored blocks: 5 bytes of overhead per 65,535 bytes, plus a
    little for the sync-flush markers, so the bound stays tight and we never buffer a
    compressed frame much larger than the inflated limit.
    """
    return raw_budget + (raw_budget >> 10) + 64


def _truncate_reason(reason: str) -> bytes:
    """Encode a close reason to at most 123 bytes without splitting a UTF-8 sequence."""
    data = reason.encode()
    if len(data) <= MAX_CONTROL_PAYLOAD - 2:
        return data
    return data[: MAX_CONTROL_PAYLOAD - 2].decode(errors="ignore").encode()


@attrs.frozen(slots=True)
class MessageProgress:
    """A fragmented message being received: its first frame has arrived, its last not yet.

    The core has no clock; a runtime that bounds the time a message may take (a
    ``message_timeout``) starts its deadline when it first sees a new :attr:`number` and
    stops it when :attr:`WebSocketProtocol.message_in_progress` is ``None`` again.
    """

    number: int
    """Which fragmented message of the connection this is (1 for the first, and so on), so
    that a message that ended and another that started between two looks are told apart."""
    opcode: Opcode
    """:attr:`Opcode.TEXT` or :attr:`Opcode.BINARY`, from the first frame."""
    fragments: int
    """Data frames received for this message so far."""
    size: int
    """Payload bytes received so far, after inflation."""


class ConnectionState(enum.Enum):
    """RFC 6455 connection states once the opening handshake is done."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN = ConnectionState.OPEN


class WebSocketProtocol:
    """One end of an open WebSocket connection, without I/O.

    Args:
        role: :attr:`Role.SERVER` expects masked frames and sends unmasked ones; a client the
            reverse (RFC 6455 §5.1).
        deflate: negotiated permessage-deflate parameters, or ``None``.
        max_message_size: largest message accepted, in bytes after reassembly and inflation;
            ``None`` disables the limit. A larger message fails the connection with 1009,
            detected from frame headers before the payload is buffered.
        max_fragments: most data frames one message may arrive in; ``None`` disables the
            limit. One more fails the connection with 1009.
        auto_pong: answer every Ping with a Pong carrying the same payload (§5.5.2).
        compress: whether messages we send are compressed when deflate was negotiated.
    """

    def __init__(
        self,
        role: Role,
        *,
        deflate: PerMessageDeflate | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_fragments: int | None = DEFAULT_MAX_FRAGMENTS,
        auto_pong: bool = True,
        compress: bool = True,
    ) -> None:
        if max_fragments is not None and max_fragments < 1:
            raise ValueError(f"max_fragments must be at least 1, not {max_fragments}")
        self.role = role
        self.deflate = deflate
        self.max_message_size = _UNLIMITED if max_message_size is None else max_message_size
        self.max_fragments = _UNLIMITED if max_fragments is None else max_fragments
        self.auto_pong = auto_pong
        self.state = ConnectionState.OPEN
        self._client = role is Role.CLIENT
        self._parser = FrameParser(
            expect_masked=role is Role.SERVER,
            allow_rsv1=deflate is not None,
            max_frame_size=_compressed_budget(self.max_message_size)
            if deflate is not None
            else self.max_message_size,
        )
        self._compressor: MessageCompressor | None = None
        self._decompressor: MessageDecompressor | None = None
        if deflate is not None:
            self._decompressor = deflate.make_decompressor(role)
            if compress:
                self._compressor = deflate.make_compressor(role)
        # Data messages are kept as their payloads (str, bytes); see take_received().
        self._events: list[Event | str | bytes] = []
        self._out: list[bytes] = []
        self._error: RemoteProtocolError | None = None
        # The message being reassembled from fragments (None when between messages): its
        # payload so far, and for text the incremental decoder that checks it (§8.1).
        self._msg_opcode: int | None = None
        self._msg_compressed = False
        self._msg_bytes: _Fragments[bytes] | None = None
        self._msg_text: _Fragments[str] | None = None
        self._msg_size = 0
        self._msg_fragments = 0
        self._msg_number = 0
        self._msg_decoder: codecs.IncrementalDecoder | None = None
        # The message we are sending in fragments, if any.
        self._send_opcode: int | None = None
        #: The Close we received (code, reason), once received.
        self.close_received: Close | None = None
        #: The Close we sent, once sent.
        self.close_sent: Close | None = None

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the transport.

        Raises:
            RemoteProtocolError: the peer broke the protocol. The Close frame with the error's
                code is already queued in :meth:`data_to_send` and the state is CLOSED; events
                parsed before the error are still returned by :meth:`events_received`. The
                error is sticky: later calls raise it again.
        """
        if self._error is not None:
            # A fresh traceback each time: re-raising the instance would extend its old
            # one by a frame per call, for as long as a caller keeps feeding us.
            raise self._error.with_traceback(None)
        if self.state is ConnectionState.CLOSED:
            return  # RFC 6455 §7.1.1: nothing more is expected; late bytes are ignored
        parser = self._parser
        events = self._events
        if self._msg_opcode is None:
            # Between messages a frame that is a whole message is just that message: the
            # parser takes those at once (compiled), and the loop below the rest.
            if parser.feed_messages(data, events, self.max_message_size):
                return
        else:
            parser.feed(data)
        next_parts = parser.next_parts
        try:
            while True:
                parts = next_parts()
                if parts is None:
                    return
                opcode, payload, fin, rsv1 = parts
                if (
                    opcode == _TEXT
                    and fin
                    and self._msg_opcode is None
                    and not rsv1
                    # With deflate negotiated the parser admits frames up to the compressed
                    # budget, a little above the limit; larger ones take the checked path.
                    and len(payload) <= self.max_message_size
                ):
                    # The common case, kept short: one unfragmented, uncompressed text frame.
                    try:
                        events.append(payload.decode())
                    except UnicodeDecodeError:
                        raise RemoteProtocolError(
                            "invalid UTF-8 in a text message", close_code=CloseCode.INVALID_DATA
                        ) from None
                elif opcode >= 0x8:
                    if self._control_frame(opcode, payload):
                        return  # a Close ended the connection
                else:
                    self._data_frame(opcode, payload, fin, rsv1)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def receive_eof(self) -> None:
        """The transport ended. Reports ``Close(1006)`` unless the close handshake finished."""
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSED
            self._events.append(Close(CloseCode.ABNORMAL_CLOSURE, ""))
        self._drop_message()

    @property
    def frame_parser(self) -> FrameParser:
        """The parser of received frames, one for the life of the connection. Its
        ``missing`` is :attr:`receive_size_hint`: a reader may keep the parser rather than
        look the hint up per read."""
        return self._parser

    @property
    def receive_size_hint(self) -> int:
        """Bytes the frame being received still needs when that is known (a large frame
        collected in pieces), else 0: a reader may ask its transport for that much in one
        read rather than in many small ones."""
        return self._parser.missing

    @property
    def message_in_progress(self) -> MessageProgress | None:
        """The fragmented message being received, or ``None`` between messages.

        ``None`` again once the message is complete, or the connection closed or failed.
        """
        opcode = self._msg_opcode
        if opcode is None or self._msg_fragments == 0:
            return None
        return MessageProgress(
            number=self._msg_number,
            opcode=Opcode(opcode),
            fragments=self._msg_fragments,
            size=self._msg_size,
        )

    def events_received(self) -> list[Event]:
        """Return the events parsed since the last call, oldest first."""
        return [
            TextMessage(e) if isinstance(e, str) else BytesMessage(e) if isinstance(e, bytes) else e
            for e in self.take_received()
        ]

    def take_received(self) -> list[Event | str | bytes]:
        """:meth:`events_received` with each data message as its bare payload (``str``
        for text, ``bytes`` for binary) instead of a :class:`TextMessage` or
        :class:`BytesMessage`: the runtime's per-message path, which builds no event
        object for a message. Every other event is as :meth:`events_received` has it."""
        events = self._events
        self._events = []
        return events

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7): send Close with the code, stop."""
        # The error is kept (sticky); its finished frames would keep their locals, the
        # parser's whole receive buffer among them, alive with it.
        traceback.clear_frames(exc.__traceback__)
        self._error = exc
        if self.state is ConnectionState.OPEN:
            self._queue_close(exc.close_code, exc.reason)
        self.state = ConnectionState.CLOSED
        self._drop_message()

    def _drop_message(self) -> None:
        """Forget the message being reassembled and any bytes after the last frame read.

        Called once the connection is CLOSED: nothing more is parsed (§7.1.1), so what
        arrived after the Close, or after the error, is not kept either.
        """
        self._parser.discard()
        self._msg_opcode = None
        self._msg_bytes = None
        self._msg_text = None
        self._msg_decoder = None
        self._msg_fragments = 0
        self._msg_size = 0

    def _data_frame(self, opcode: int, payload: bytes, fin: bool, rsv1: bool) -> None:
        if opcode == Opcode.CONTINUATION:
            if self._msg_opcode is None:
                raise RemoteProtocolError("continuation frame without a message to continue")
            if rsv1:
                # RFC 7692 §6.1: RSV1 is set only on the first frame of a message.
                raise RemoteProtocolError("RSV1 set on a continuation frame")
            fragments = self._msg_fragments + 1
            if fragments > self.max_fragments:
                raise RemoteProtocolError(
                    f"message in more than {self.max_fragments} fragments",
                    close_code=CloseCode.MESSAGE_TOO_BIG,
                )
            self._msg_fragments = fragments
        else:
            if self._msg_opcode is not None:
                raise RemoteProtocolError("new data frame before the previous message ended")
            self._msg_opcode = opcode
            self._msg_compressed = rsv1
            self._msg_size = 0
            if not fin:
                self._msg_fragments = 1
                self._msg_number += 1
                if opcode == Opcode.TEXT:
                    self._msg_decoder = _utf8_incremental()
                    self._msg_text = _Fragments("")
                else:
                    self._msg_bytes = _Fragments(b"")
        if self._msg_compressed:
            assert self._decompressor is not None  # RSV1 is refused by the parser otherwise
            payload = self._decompressor.decompress(
                payload, final=fin, max_size=self.max_message_size - self._msg_size
            )
        size = self._msg_size + len(payload)
        if size > self.max_message_size:
            raise RemoteProtocolError(
                f"message exceeds the {self.max_message_size}-byte limit",
                close_code=CloseCode.MESSAGE_TOO_BIG,
            )
        self._msg_size = size
        if fin:
            self._finish_message(payload)
        else:
            if self._msg_text is not None:
                self._msg_text.add(self._decode_part(payload))
            else:
                assert self._msg_bytes is not None
                self._msg_bytes.add(payload)
            remaining = self.max_message_size - size
            self._parser.max_frame_size = (
                _compressed_budget(remaining) if self._msg_compressed else remaining
            )

    def _decode_part(self, payload: bytes, *, final: bool = False) -> str:
        """Decode one fragment of a text message, failing at the one that is invalid.

        §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the
        byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the
        WebSocket Connection_".
        """
        decoder = self._msg_decoder
        assert decoder is not None
        try:
            text: str = decoder.decode(payload, final)
            if final:
                return text
            # The decoder holds an incomplete sequence back without judging it, and a few
            # prefixes (ED A0: a surrogate, F4 90: beyond U+10FFFF) can already never be
            # valid. Complete the held bytes with the smallest continuation byte: if even
            # that fails, fail now, not one fragment later.
            held = decoder.getstate()[0]
            if len(held) >= 2:
                need = (2 if held[0] < 0xE0 else 3 if held[0] < 0xF0 else 4) - len(held)
                (held + b"\x80" * need).decode()
        except UnicodeDecodeError:
            # Fails as soon as an invalid sequence arrives, even mid-message (§8.1).
            raise RemoteProtocolError(
                "invalid UTF-8 in a text message", close_code=CloseCode.INVALID_DATA
            ) from None
        return text

    def _finish_message(self, payload: bytes) -> None:
        opcode = self._msg_opcode
        message: str | bytes
        if self._msg_text is not None:
            message = self._msg_text.finish(self._decode_part(payload, final=True))
            self._msg_text = None
            self._msg_decoder = None
            self._msg_fragments = 0
        elif self._msg_bytes is not None:
            message = self._msg_bytes.finish(payload)
            self._msg_bytes = None
            self._msg_fragments = 0
        elif opcode == _TEXT:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                raise RemoteProtocolError(
                    "invalid UTF-8 in a text message", close_code=CloseCode.INVALID_DATA
                ) from None
        else:
            message = payload
        self._msg_opcode = None
        self._msg_compressed = False
        self._msg_size = 0
        self._parser.max_frame_size = (
            _compressed_budget(self.max_message_size)
            if self.deflate is not None
            else self.max_message_size
        )
        self._events.append(message)

    def _control_frame(self, opcode: int, payload: bytes) -> bool:
        """Handle a control frame; return True when it closed the connection."""
        if opcode == Opcode.PING:
            self._events.append(Ping(payload))
            # §5.5.2: "an endpoint MUST send a Pong frame in response, unless it already
            # received a Close frame": also in CLOSING, where only our Close has been sent
            # (§5.5.1 forbids data frames after it, not control frames).
            if self.auto_pong:
                self._out.append(self._frame(Opcode.PONG, payload))
        elif opcode == Opcode.PONG:
            self._events.append(Pong(payload))
        else:
            self._receive_close(payload)
            return True
        return False

    def _receive_close(self, payload: bytes) -> None:
        close = self._parse_close(payload)
        self.close_received = close
        if self.state is ConnectionState.OPEN:
            # §5.5.1: "the endpoint MUST send a Close frame in response", typically
            # echoing the status code it received.
            if close.code == CloseCode.NO_STATUS_RCVD:
                self._out.append(self._frame(Opcode.CLOSE, b""))
                self.close_sent = Close(CloseCode.NO_STATUS_RCVD, "")
            else:
                self._queue_close(close.code, "")
        self.state = ConnectionState.CLOSED
        self._drop_message()
        self._events.append(close)

    @staticmethod
    def _parse_close(payload: bytes) -> Close:
        n = len(payload)
        if n == 0:
            return Close(CloseCode.NO_STATUS_RCVD, "")
        if n == 1:
            raise RemoteProtocolError("close frame with a 1-byte payload")
        (code,) = _unpack_close(payload)
        if not is_valid_close_code(code):
            raise RemoteProtocolError(f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError(
                "invalid UTF-8 in the close reason", close_code=CloseCode.INVALID_DATA
            ) from None
        return Close(code, reason)

    # ------------------------------------------------------------------ sending

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the transport."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def data_to_send_vectored(self) -> list[bytes]:
        """:meth:`data_to_send` as the list of buffers to write in order, not joined: a
        large payload is queued apart from its header, so that a transport with vectored
        writes (``sendmsg``) sends it without a copy."""
        out = self._out
        self._out = []
        return out

    def _frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
        if not self._client and not rsv1 and fin and len(payload) < 126:
            return _pack_2(0x80 | opcode, len(payload)) + payload  # the small server frame
        return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=self._client)

    def _check_open(self, what: str) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot {what} in state {self.state.name}")

    def _send_data(self, opcode: int, payload: bytes, final: bool) -> None:
        if self.state is not _OPEN:
            self._check_open("send a message")
        if self._send_opcode is None:
            first = True
            if not final:
                self._send_opcode = opcode
        else:
            if opcode != self._send_opcode:
                raise LocalProtocolError(
                    "cannot switch message type in the middle of a fragmented message"
                )
            first = False
            opcode = Opcode.CONTINUATION
            if final:
                self._send_opcode = None
        compressor = self._compressor
        if compressor is not None:
            payload = compressor.compress(payload, final=final)
            self._out.append(self._frame(opcode, payload, final, first))
        elif len(payload) >= _SEPARATE_PAYLOAD_SIZE and not self._client:
            # The header and the payload queued apart: joining them would copy the payload
            # (see data_to_send_vectored()).
            head = encode_frame(opcode, b"", fin=final, length=len(payload))
            self._out += (head, payload)
        else:
            self._out.append(self._frame(opcode, payload, final))

    def send_text(self, data: str, *, final: bool = True) -> None:
        """Queue a text message, or a fragment of one when ``final`` is False."""
        payload = data.encode()
        if (
            len(payload) < 126
            and final
            and self._send_opcode is None
            and self._compressor is None
            and self.state is _OPEN
            and not self._client
        ):
            # The common case, kept short: one small, unfragmented, uncompressed frame.
            self._out.append(_pack_2(0x81, len(payload)) + payload)
            return
        self._send_data(_TEXT, payload, final)

    def send_bytes(self, data: bytes | bytearray | memoryview, *, final: bool = True) -> None:
        """Queue a binary message, or a fragment of one when ``final`` is False."""
        self._send_data(_BINARY, bytes(data), final)

    def send_encoded(self, frame: bytes) -> None:
        """Queue a complete frame encoded elsewhere (a broadcast frame shared by many).

        The caller guarantees it is one unmasked server frame, compressed only if this
        connection's compressor may accept a shared frame.
        """
        if self.state is not ConnectionState.OPEN:
            self._check_open("send a message")
        if self._client or self._send_opcode is not None:
            raise LocalProtocolError("pre-encoded frames are for servers between messages")
        self._out.append(frame)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a Ping (at most 125 bytes of payload, §5.5)."""
        self._check_open("send a ping")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError("control frame payload over 125 bytes")
        self._out.append(self._frame(Opcode.PING, bytes(payload)))

    def send_pong(self, payload: bytes = b"") -> None:
        """Queue an unsolicited Pong, or the reply to a Ping when auto-pong is off."""
        self._check_open("send a pong")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError("control frame payload over 125 bytes")
        self._out.append(self._frame(Opcode.PONG, bytes(payload)))

    def send_close(self, code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (§7.1.2); ``code=None`` sends a Close without status.

        Raises:
            LocalProtocolError: not OPEN, a code that may not be sent (§7.4), or a reason
                without a code.
        """
        self._check_open("send a close")
        if code is None:
            if reason:
                raise LocalProtocolError("a close reason needs a close code")
            self._out.append(self._frame(Opcode.CLOSE, b""))
            self.close_sent = Close(CloseCode.NO_STATUS_RCVD, "")
        else:
            if not is_valid_close_code(code):
                raise LocalProtocolError(f"close code {code} may not be sent")
            self._queue_close(code, reason)
        self.state = ConnectionState.CLOSING

    def _queue_close(self, code: int, reason: str) -> None:
        data = _truncate_reason(reason)
        self._out.append(self._frame(Opcode.CLOSE, _pack_close(code) + data))
        self.close_sent = Close(code, data.decode())
