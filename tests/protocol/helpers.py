"""Shared helpers for the sans-IO tests: a wired client/server pair and a raw frame builder.

:class:`ProtocolPair` plays the role of h11's ``ConnectionPair``: two
:class:`WebSocketProtocol` objects, one per role, whose outgoing bytes are handed to each
other on request, so a test reads as "the client does X, the server sees Y".

:func:`raw_frame` is a deliberately independent encoder: it builds frames bit by bit
(including illegal ones) without going through the code under test.
"""

from __future__ import annotations

import struct
from typing import Any

from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._events import Event
from trio_ws.protocol._frames import Frame, FrameParser, Role

# The masking key of the RFC 6455 §5.7 examples; a fixed key keeps expected bytes readable.
RFC_MASK = bytes.fromhex("37fa213d")


def naive_mask(data: bytes, key: bytes) -> bytes:
    """The reference masking algorithm of RFC 6455 §5.3, one octet at a time."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = RFC_MASK,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """Encode one frame by hand, legal or not.

    Args:
        mask: the 4-byte masking key, or ``None`` for an unmasked frame.
        length: the payload length to announce (defaults to ``len(payload)``).
        length_form: force the 7-bit length field to this value (126 or 127 to choose the
            16- or 64-bit form, or 0..125 meaning "the 7-bit form").
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    b0 |= (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0)
    n = len(payload) if length is None else length
    if length_form is None:
        length_form = n if n < 126 else (126 if n < 0x10000 else 127)
    mbit = 0x80 if mask is not None else 0
    if length_form < 126:
        head = bytes([b0, mbit | n])
    elif length_form == 126:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + naive_mask(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def parse_frames(data: bytes, *, masked: bool) -> list[Frame]:
    """Split bytes written by one side into frames (``masked``: written by a client)."""
    parser = FrameParser(expect_masked=masked, allow_rsv1=True, max_frame_size=1 << 62)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0, "trailing bytes after the last complete frame"
    return frames


def parse_close(frame: Frame) -> tuple[int | None, bytes]:
    """(code, reason bytes) of a Close frame; code is None for an empty payload."""
    assert frame.opcode == 0x8
    if not frame.payload:
        return None, b""
    return struct.unpack("!H", frame.payload[:2])[0], frame.payload[2:]


def sent_frames(proto: WebSocketProtocol) -> list[Frame]:
    """Drain and parse everything ``proto`` has queued for the transport."""
    return parse_frames(proto.data_to_send(), masked=proto.role is Role.CLIENT)


class ProtocolPair:
    """A client and a server protocol, wired back to back in memory.

    Keyword arguments apply to both sides; ``client_kwargs``/``server_kwargs`` override them
    per side.
    """

    def __init__(
        self,
        *,
        client_kwargs: dict[str, Any] | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.client = WebSocketProtocol(Role.CLIENT, **{**kwargs, **(client_kwargs or {})})
        self.server = WebSocketProtocol(Role.SERVER, **{**kwargs, **(server_kwargs or {})})

    def peer(self, proto: WebSocketProtocol) -> WebSocketProtocol:
        return self.server if proto is self.client else self.client

    def transfer(self, sender: WebSocketProtocol) -> list[Event]:
        """Hand ``sender``'s queued bytes to its peer and return the peer's new events."""
        receiver = self.peer(sender)
        data = sender.data_to_send()
        if data:
            receiver.receive_data(data)
        return receiver.events_received()

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until neither side has anything queued.

        Returns:
            (events seen by the client, events seen by the server).
        """
        client_events: list[Event] = []
        server_events: list[Event] = []
        while True:
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                break
            if to_server:
                self.server.receive_data(to_server)
            if to_client:
                self.client.receive_data(to_client)
            server_events += self.server.events_received()
            client_events += self.client.events_received()
        return client_events, server_events
