"""The permessage-deflate extension (RFC 7692): negotiation and per-message (de)compression.

Theory of operation: the opening handshake calls :func:`negotiate_server` (or
:func:`client_offer` then :func:`negotiate_client`) and gets a frozen
:class:`PerMessageDeflate` holding the agreed parameters, or ``None`` when the extension is
not in use. The connection then asks it for one :class:`MessageCompressor` for what it sends
and one :class:`MessageDecompressor` for what it receives. Both keep the LZ77 window of the
previous messages ("context takeover", RFC 7692 §7.2.1 and §7.2.2) unless the matching
``*_no_context_takeover`` parameter was agreed, in which case they start afresh after each
final fragment.

Memory. A zlib deflate state costs ``2**(wbits + 2) + 2**(memLevel + 9)`` bytes (256 KiB
at zlib's defaults), an inflate state about 7 KiB plus its ``2**wbits`` window, so what a
connection keeps between messages decides what an idle deflate connection costs. Nothing
is allocated before the first compressed message. A compressor without context takeover
keeps nothing between messages either: every such compressor with the same
parameters uses one shared zlib object, which a full flush (``Z_FULL_FLUSH`` forgets every
earlier string, so the next message refers to none of them) leaves clean for the next
message of any connection; only a message sent in fragments gets a zlib object of its own,
until its final fragment. Compressing is synchronous, and a shared object is out of the
pool while it compresses a message, so threads never use one at the same time. A
decompressor without context takeover makes a zlib object per message and drops it at the
final frame; it is never shared, because what a peer sends may leave an inflater in any
state. Compressors use ``memLevel=5`` (``websockets`` does too): 8 KiB of hash table and 8
KiB of pending buffer instead of 64 KiB each, and a shorter hash table for a full flush to
clear; on chat-sized messages the output is the same size (a 1 KiB JSON message: 163
bytes either way).

Decompression is bounded: :meth:`MessageDecompressor.decompress` never produces (nor
allocates) more than one byte past the room the message has left, so a deflate bomb fails
with close code 1009 after inflating at most ``max_size + 1`` bytes.

Window sizes. zlib cannot *compress* raw DEFLATE with an 8-bit window (``deflateInit2``
rejects ``wbits=-8`` since zlib 1.2.9; older versions silently used 9, producing streams a
256-byte window cannot decode; see https://github.com/madler/zlib/issues/171). websockets
declines such offers and wsproto refuses 8 altogether. We accept 8 and honour it exactly:
the compressor then runs with a 9-bit window and the ``Z_RLE`` strategy, whose only
back-references have distance 1, so every stream it writes decodes with a 256-byte window
(RFC 7692 §7.1.2.1 only bounds the window the *decoder* must keep). zlib's ordinary 9-bit
deflate happens to keep its distances under 251 too (``MAX_DIST`` in deflate.c), but that
is an implementation detail; distance 1 is what ``Z_RLE`` means. Inflating, we always
allow at least 9 bits, which costs 256 bytes and accepts the output of old zlib versions.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence

import attrs

from ._errors import CloseCode, RemoteProtocolError
from ._frames import Role
from ._headers import ExtensionOffer

__all__ = [
    "EXTENSION_NAME",
    "MessageCompressor",
    "MessageDecompressor",
    "PerMessageDeflate",
    "client_offer",
    "negotiate_client",
    "negotiate_server",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 §7.2.1: a sync flush ends with an empty stored block, whose last 4 octets the
# sender removes from the final fragment and the receiver appends back (§7.2.2).
_TAIL = b"\x00\x00\xff\xff"

# RFC 7692 §7.1.2: window bits are "a decimal integer value without leading zeroes between
# 8 to 15, inclusive". Matching the exact strings rejects "08", "+9", " 9" and "9.0".
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}
_DEFAULT_WINDOW_BITS = 15

# Below this size, appending the tail (a copy) is cheaper than a second decompress() call;
# above it the copy would double the memory a large frame costs.
_TAIL_COPY_THRESHOLD = 2048

# zlib's memLevel for our compressors (its default is 8); see the module docstring.
DEFAULT_MEM_LEVEL = 5

_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"


@attrs.frozen
class PerMessageDeflate:
    """Negotiated parameters of one connection (RFC 7692 §7.1).

    The server compresses with the ``server_*`` parameters and the client with the
    ``client_*`` ones; each side decompresses with its peer's.
    """

    server_no_context_takeover: bool = False
    """The server resets its compression context after each message (§7.1.1.1)."""
    client_no_context_takeover: bool = False
    """The client resets its compression context after each message (§7.1.1.2)."""
    server_max_window_bits: int = _DEFAULT_WINDOW_BITS
    """Base-2 logarithm of the server's LZ77 window, 8 to 15 (§7.1.2.1)."""
    client_max_window_bits: int = _DEFAULT_WINDOW_BITS
    """Base-2 logarithm of the client's LZ77 window, 8 to 15 (§7.1.2.2)."""
    echo_server_max_window_bits: bool = False
    """The client offered ``server_max_window_bits``, so the response must carry it even
    when its value is the default: "A server accepts an extension negotiation offer with
    this parameter by including the "server_max_window_bits" extension parameter in the
    extension negotiation response" (§7.1.2.1)."""

    def __attrs_post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if not 8 <= bits <= 15:
                raise ValueError(f"window bits must be between 8 and 15, not {bits}")

    def response_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value a server puts in its 101 response.

        Only parameters that differ from their defaults, or that accepting the offer requires
        echoing, are included (RFC 7692 §7.1).
        """
        params = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            params.append(_SERVER_NO_CONTEXT_TAKEOVER)
        if self.client_no_context_takeover:
            params.append(_CLIENT_NO_CONTEXT_TAKEOVER)
        if self.echo_server_max_window_bits or self.server_max_window_bits != 15:
            params.append(f"{_SERVER_MAX_WINDOW_BITS}={self.server_max_window_bits}")
        if self.client_max_window_bits != _DEFAULT_WINDOW_BITS:
            # Only ever below 15 when the client offered client_max_window_bits, the one
            # case where the response may carry it (§7.1.2.2).
            params.append(f"{_CLIENT_MAX_WINDOW_BITS}={self.client_max_window_bits}")
        return "; ".join(params)

    def make_compressor(
        self, role: Role, *, level: int = 6, mem_level: int = DEFAULT_MEM_LEVEL
    ) -> MessageCompressor:
        """A compressor for the messages that ``role`` sends.

        Args:
            role: the end that sends; a server uses the ``server_*`` parameters.
            level: zlib compression level, 0 (none) to 9 (best), or -1 for zlib's default.
            mem_level: zlib memory level, 1 to 9.
        """
        if role is Role.SERVER:
            return MessageCompressor(
                window_bits=self.server_max_window_bits,
                no_context_takeover=self.server_no_context_takeover,
                level=level,
                mem_level=mem_level,
            )
        return MessageCompressor(
            window_bits=self.client_max_window_bits,
            no_context_takeover=self.client_no_context_takeover,
            level=level,
            mem_level=mem_level,
        )

    def make_decompressor(self, role: Role) -> MessageDecompressor:
        """A decompressor for the messages that ``role`` receives.

        Args:
            role: the end that receives; a server uses the ``client_*`` parameters.
        """
        if role is Role.SERVER:
            return MessageDecompressor(
                window_bits=self.client_max_window_bits,
                no_context_takeover=self.client_no_context_takeover,
            )
        return MessageDecompressor(
            window_bits=self.server_max_window_bits,
            no_context_takeover=self.server_no_context_takeover,
        )


# The zlib compressors shared by every MessageCompressor without context takeover, one per
# (level, wbits, memLevel, strategy); see the module docstring.
_SHARED: dict[tuple[int, int, int, int], zlib._Compress] = {}


def _compress_alone(params: tuple[int, int, int, int], data: bytes) -> bytes:
    """Compress one whole message that refers to no earlier one, on a shared compressor.

    The object is taken out of the pool while in use (``dict.pop`` is atomic), so another
    thread compressing at the same time makes its own instead of sharing it, and an object
    left in an unknown state by an exception is dropped.
    """
    compressor = _SHARED.pop(params, None)
    if compressor is None:
        level, wbits, mem_level, strategy = params
        compressor = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level, strategy)
    out = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    _SHARED[params] = compressor
    return out


class MessageCompressor:
    """Compresses the messages one endpoint sends (RFC 7692 §7.2.1).

    Args:
        window_bits: the negotiated maximum LZ77 window, 8 to 15.
        no_context_takeover: start every message with an empty window.
        level: zlib compression level.
        mem_level: zlib memory level, 1 to 9 (see the module docstring).
    """

    __slots__ = ("_compressor", "_no_context_takeover", "_params")

    def __init__(
        self,
        *,
        window_bits: int,
        no_context_takeover: bool,
        level: int = 6,
        mem_level: int = DEFAULT_MEM_LEVEL,
    ) -> None:
        if not 8 <= window_bits <= 15:
            raise ValueError(f"window_bits must be between 8 and 15, not {window_bits}")
        if not -1 <= level <= 9:
            raise ValueError(f"level must be between -1 and 9, not {level}")
        if not 1 <= mem_level <= 9:
            raise ValueError(f"mem_level must be between 1 and 9, not {mem_level}")
        self._no_context_takeover = no_context_takeover
        if window_bits == 8:
            # See the module docstring: distance-1 matches only, valid for any window.
            wbits, strategy = -9, zlib.Z_RLE
        else:
            wbits, strategy = -window_bits, zlib.Z_DEFAULT_STRATEGY
        self._params = (level, wbits, mem_level, strategy)
        # Our own zlib object: with context takeover from the first message on, without it
        # only while a fragmented message is being sent. None until then.
        self._compressor: zlib._Compress | None = None

    def _new(self) -> zlib._Compress:
        level, wbits, mem_level, strategy = self._params
        return zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level, strategy)

    def compress(self, data: bytes, *, final: bool = True) -> bytes:
        """Compress one fragment of a message into a frame payload.

        Each call ends with a sync flush, so the payload can go on the wire at once. On the
        final fragment the trailing ``00 00 ff ff`` is removed: "Remove 4 octets (that are
        0x00 0x00 0xff 0xff) from the tail end" (RFC 7692 §7.2.1). An empty message thus
        becomes the single octet ``00`` (§7.2.3.6).

        Args:
            data: the fragment's uncompressed bytes.
            final: whether this is the last fragment of the message.

        Returns:
            The payload of the frame carrying this fragment.
        """
        compressor = self._compressor
        if compressor is None:
            if final and self._no_context_takeover:
                out = _compress_alone(self._params, data)
                # A full flush ends with the same empty stored block as a sync flush.
                assert out.endswith(_TAIL)
                return out[:-4]
            compressor = self._compressor = self._new()
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not final:
            return out
        # zlib's sync flush always ends with an empty stored block, so the tail is there.
        assert out.endswith(_TAIL)
        if self._no_context_takeover:
            self._compressor = None
        return out[:-4]


class MessageDecompressor:
    """Decompresses the messages one endpoint receives (RFC 7692 §7.2.2).

    Args:
        window_bits: the peer's negotiated maximum LZ77 window, 8 to 15.
        no_context_takeover: the peer starts every message with an empty window.
    """

    __slots__ = ("_decompressor", "_no_context_takeover", "_wbits")

    def __init__(self, *, window_bits: int, no_context_takeover: bool) -> None:
        if not 8 <= window_bits <= 15:
            raise ValueError(f"window_bits must be between 8 and 15, not {window_bits}")
        self._no_context_takeover = no_context_takeover
        # A bigger inflate window is always safe; 9 also accepts old zlib's "8" streams.
        self._wbits = -max(window_bits, 9)
        # Made by the first compressed frame; dropped after each message without context
        # takeover, so that a connection keeps no inflate state between such messages.
        self._decompressor: zlib._Decompress | None = None

    def decompress(self, data: bytes, *, final: bool, max_size: int) -> bytes:
        """Inflate the payload of one frame of a compressed message.

        On the final frame, "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the
        payload of the message" (RFC 7692 §7.2.2) before inflating. Bytes after a DEFLATE
        block with BFINAL set (§7.2.3.4) are ignored, and the next message starts a new
        stream. An empty final payload is taken to end the message as is: it carries no
        block to complete, and appending the tail to it would start a bogus stored block.

        Args:
            data: the frame's payload.
            final: whether the frame has the FIN bit set.
            max_size: how many more bytes the message may still inflate to.

        Returns:
            The inflated bytes.

        Raises:
            RemoteProtocolError: with close code 1009 when the message would inflate to more
                than ``max_size`` more bytes (found after inflating at most ``max_size + 1``),
                or with close code 1007 when the payload is not valid DEFLATE data: a message
                marked compressed whose payload does not decompress is "data within a
                message that was not consistent with the type of the message" (RFC 6455
                §7.4.1). RFC 7692 names no code; wsproto makes the same choice. After
                either error the connection fails, and this object must not be used again.
        """
        limit = min(max(max_size, 0) + 1, sys.maxsize)  # 0 would mean "no limit" to zlib
        append_tail = final and bool(data)
        if append_tail and len(data) < _TAIL_COPY_THRESHOLD:
            data = bytes(data) + _TAIL  # never extend a caller's bytearray in place
            append_tail = False
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(self._wbits)
        try:
            out = decompressor.decompress(data, limit)
            if append_tail and not decompressor.unconsumed_tail and len(out) < limit:
                out += decompressor.decompress(_TAIL, limit - len(out))
        except zlib.error as exc:
            raise RemoteProtocolError(
                "invalid compressed data", close_code=CloseCode.INVALID_DATA
            ) from exc
        # Output stops at ``limit`` bytes; if it stopped short, all input was consumed.
        if len(out) > max_size or decompressor.unconsumed_tail:
            raise RemoteProtocolError(
                "message too big after decompression", close_code=CloseCode.MESSAGE_TOO_BIG
            )
        if final and (self._no_context_takeover or decompressor.eof):
            self._decompressor = None
        return out


# ---------------------------------------------------------------------------------------
# Negotiation (RFC 7692 §5 and §7.1)


class _Unacceptable(Exception):
    """An offer to decline or a response to fail on; the message says why."""


def _check_window_bits(name: str, bits: int | None) -> None:
    if bits is not None and not 8 <= bits <= 15:
        raise ValueError(f"{name} must be between 8 and 15, not {bits}")


def _parse_params(
    element: ExtensionOffer, *, value_required: frozenset[str], value_optional: frozenset[str]
) -> dict[str, int | None]:
    """Check one element's parameters and return them by name.

    Window-bit values become ints; parameters without a value map to ``None``. Parameters
    not named in either set must have no value (the two ``*_no_context_takeover`` ones).

    Raises:
        _Unacceptable: an unknown, duplicate or invalid parameter (RFC 7692 §7).
    """
    known = {_SERVER_NO_CONTEXT_TAKEOVER, _CLIENT_NO_CONTEXT_TAKEOVER}
    known |= value_required | value_optional
    params: dict[str, int | None] = {}
    for name, value in element.params:
        if name not in known:
            raise _Unacceptable(f"unknown parameter {name!r}")
        if name in params:
            raise _Unacceptable(f"duplicate parameter {name!r}")
        if name in value_required or name in value_optional:
            if value is None:
                if name in value_required:
                    raise _Unacceptable(f"{name} needs a value")
                params[name] = None
            elif value in _WINDOW_BITS:
                params[name] = _WINDOW_BITS[value]
            else:
                raise _Unacceptable(f"invalid value for {name}: {value!r}")
        elif value is not None:
            raise _Unacceptable(f"{name} takes no value")
        else:
            params[name] = None
    return params


# In an offer, client_max_window_bits may come bare ("I support it", §7.1.2.2); in a
# response both window parameters need a value.
_OFFER_VALUE_REQUIRED = frozenset({_SERVER_MAX_WINDOW_BITS})
_OFFER_VALUE_OPTIONAL = frozenset({_CLIENT_MAX_WINDOW_BITS})
_RESPONSE_VALUE_REQUIRED = frozenset({_SERVER_MAX_WINDOW_BITS, _CLIENT_MAX_WINDOW_BITS})


def _accept_offer(
    params: dict[str, int | None],
    *,
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: int | None,
    client_max_window_bits: int | None,
) -> PerMessageDeflate:
    # §7.1.1.1: accepting an offer with server_no_context_takeover means including it; the
    # server "MAY include" it on its own.
    server_nct = _SERVER_NO_CONTEXT_TAKEOVER in params or server_no_context_takeover
    # §7.1.1.2: the offer's client_no_context_takeover is a hint the client will honour
    # anyway; echoing it lets us drop our inflate window between messages.
    client_nct = _CLIENT_NO_CONTEXT_TAKEOVER in params or client_no_context_takeover

    # §7.1.2.1: answer an offered server_max_window_bits "with the same or smaller value";
    # the server MAY include it even when not offered.
    offered_server_bits = params.get(_SERVER_MAX_WINDOW_BITS)
    server_bits = _DEFAULT_WINDOW_BITS if offered_server_bits is None else offered_server_bits
    if server_max_window_bits is not None:
        server_bits = min(server_bits, server_max_window_bits)

    # §7.1.2.2: "If a received extension negotiation offer doesn't have the
    # "client_max_window_bits" extension parameter, the corresponding extension negotiation
    # response to the offer MUST NOT include" it, so our wish only applies when offered. An
    # offered value is the most the client will use even if we do not answer it.
    client_bits = _DEFAULT_WINDOW_BITS
    if _CLIENT_MAX_WINDOW_BITS in params:
        hint = params[_CLIENT_MAX_WINDOW_BITS]
        if hint is not None:
            client_bits = hint
        if client_max_window_bits is not None:
            client_bits = min(client_bits, client_max_window_bits)

    return PerMessageDeflate(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        echo_server_max_window_bits=offered_server_bits is not None,
    )


def negotiate_server(
    offers: Sequence[ExtensionOffer],
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: int | None = None,
    client_max_window_bits: int | None = None,
) -> PerMessageDeflate | None:
    """Pick the first acceptable permessage-deflate offer of a client (RFC 7692 §5, §7.1).

    Offers of other extensions are skipped. "A server MUST decline an extension negotiation
    offer for this extension if any of the following conditions are met: the negotiation
    offer contains an extension parameter not defined for use in an offer; ... an extension
    parameter with an invalid value; ... multiple extension parameters with the same name"
    (§7); such offers are skipped too. Every valid offer is acceptable: we support every
    parameter and every window size, 8 included (see the module docstring).

    The keyword arguments are the server's own wishes. ``server_no_context_takeover`` lets
    one compressed message be shared by every subscriber of a broadcast.
    ``client_max_window_bits`` can only be asked of a client that offered the parameter;
    other clients keep a 15-bit window.

    Args:
        offers: the ``Sec-WebSocket-Extensions`` elements of the request, in order.
        server_no_context_takeover: always reset our compression context (§7.1.1.1).
        client_no_context_takeover: ask the client to reset its context (§7.1.1.2).
        server_max_window_bits: the largest window we compress with, 8 to 15 (§7.1.2.1).
        client_max_window_bits: the largest window we want the client to use (§7.1.2.2).

    Returns:
        The agreed parameters (see :meth:`PerMessageDeflate.response_value`), or ``None``
        when no offer is acceptable.

    Raises:
        ValueError: a window size outside 8 to 15.
    """
    _check_window_bits("server_max_window_bits", server_max_window_bits)
    _check_window_bits("client_max_window_bits", client_max_window_bits)
    for offer in offers:
        if offer.name != EXTENSION_NAME:
            continue
        try:
            params = _parse_params(
                offer, value_required=_OFFER_VALUE_REQUIRED, value_optional=_OFFER_VALUE_OPTIONAL
            )
        except _Unacceptable:
            continue
        return _accept_offer(
            params,
            server_no_context_takeover=server_no_context_takeover,
            client_no_context_takeover=client_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
            client_max_window_bits=client_max_window_bits,
        )
    return None


def _check_client_options(
    client_max_window_bits: int | bool, server_max_window_bits: int | None
) -> None:
    if not isinstance(client_max_window_bits, bool):
        _check_window_bits("client_max_window_bits", client_max_window_bits)
    _check_window_bits("server_max_window_bits", server_max_window_bits)


def client_offer(
    *,
    client_no_context_takeover: bool = False,
    server_no_context_takeover: bool = False,
    client_max_window_bits: int | bool = True,
    server_max_window_bits: int | None = None,
) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client offers (RFC 7692 §7.1).

    Args:
        client_no_context_takeover: we will reset our compression context (§7.1.1.2).
        server_no_context_takeover: ask the server to reset its context (§7.1.1.1).
        client_max_window_bits: ``True`` sends the bare parameter, meaning we support it in
            the response; an int also promises to use at most that window; ``False`` leaves
            it out (§7.1.2.2).
        server_max_window_bits: the largest window the server may use, 8 to 15 (§7.1.2.1).

    Raises:
        ValueError: a window size outside 8 to 15.
    """
    _check_client_options(client_max_window_bits, server_max_window_bits)
    params = [EXTENSION_NAME]
    if client_no_context_takeover:
        params.append(_CLIENT_NO_CONTEXT_TAKEOVER)
    if server_no_context_takeover:
        params.append(_SERVER_NO_CONTEXT_TAKEOVER)
    if client_max_window_bits is True:
        params.append(_CLIENT_MAX_WINDOW_BITS)
    elif client_max_window_bits is not False:
        params.append(f"{_CLIENT_MAX_WINDOW_BITS}={client_max_window_bits}")
    if server_max_window_bits is not None:
        params.append(f"{_SERVER_MAX_WINDOW_BITS}={server_max_window_bits}")
    return "; ".join(params)


def negotiate_client(
    response: ExtensionOffer,
    *,
    client_no_context_takeover: bool = False,
    server_no_context_takeover: bool = False,
    client_max_window_bits: int | bool = True,
    server_max_window_bits: int | None = None,
) -> PerMessageDeflate:
    """Check the server's acceptance of our offer (RFC 7692 §7.1).

    Pass the same keyword arguments as to :func:`client_offer`. "A client MUST _Fail the
    WebSocket Connection_ if the peer server accepted an extension negotiation offer for
    this extension with an extension negotiation response meeting any of the following
    conditions": an unknown, duplicate or invalid parameter, or "the client does not
    support the configuration that the response represents" (§7). Here that means:
    ``server_no_context_takeover`` or ``server_max_window_bits`` asked for and missing from
    the response, a ``server_max_window_bits`` larger than asked, or a
    ``client_max_window_bits`` we did not offer. A ``client_max_window_bits`` larger than
    the value we offered is accepted: we keep to our own, smaller, promise (§7.1.2.2).

    Args:
        response: the element of the server's ``Sec-WebSocket-Extensions`` header.
        client_no_context_takeover: as offered.
        server_no_context_takeover: as offered.
        client_max_window_bits: as offered.
        server_max_window_bits: as offered.

    Returns:
        The agreed parameters.

    Raises:
        RemoteProtocolError: the response is not acceptable (close code 1002).
        ValueError: a window size outside 8 to 15.
    """
    _check_client_options(client_max_window_bits, server_max_window_bits)
    try:
        if response.name != EXTENSION_NAME:
            raise _Unacceptable(f"not {EXTENSION_NAME}: {response.name!r}")
        params = _parse_params(
            response, value_required=_RESPONSE_VALUE_REQUIRED, value_optional=frozenset()
        )

        server_nct = _SERVER_NO_CONTEXT_TAKEOVER in params
        if server_no_context_takeover and not server_nct:
            raise _Unacceptable(f"{_SERVER_NO_CONTEXT_TAKEOVER} offered but not accepted")
        client_nct = _CLIENT_NO_CONTEXT_TAKEOVER in params or client_no_context_takeover

        server_bits = params.get(_SERVER_MAX_WINDOW_BITS)
        if server_max_window_bits is not None:
            if server_bits is None:
                raise _Unacceptable(f"{_SERVER_MAX_WINDOW_BITS} offered but not accepted")
            if server_bits > server_max_window_bits:
                raise _Unacceptable(f"{_SERVER_MAX_WINDOW_BITS}={server_bits} exceeds the offer")

        client_bits = params.get(_CLIENT_MAX_WINDOW_BITS)
        if client_max_window_bits is False:
            if client_bits is not None:
                raise _Unacceptable(f"{_CLIENT_MAX_WINDOW_BITS} not offered")
        elif client_max_window_bits is not True:
            client_bits = min(client_bits or 15, client_max_window_bits)
    except _Unacceptable as exc:
        raise RemoteProtocolError(f"{EXTENSION_NAME} response rejected: {exc}") from None

    return PerMessageDeflate(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=_DEFAULT_WINDOW_BITS if server_bits is None else server_bits,
        client_max_window_bits=_DEFAULT_WINDOW_BITS if client_bits is None else client_bits,
    )
