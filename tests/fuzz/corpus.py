"""Seed inputs for the fuzz targets, in the layout :mod:`tests.fuzz.targets` reads.

Valid requests, responses and frame streams, written by the core's own peer objects, so a
fuzzer starts from inputs that reach deep (compressed and fragmented messages, control
frames between fragments, the closing handshake) and mutates from there.
"""

from __future__ import annotations

from trio_ws.protocol import Role, WebSocketProtocol

from .targets import ACCEPT_PLACEHOLDER, make_deflate

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

REQUESTS = [
    b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, "
    b"permessage-deflate; server_max_window_bits=10; server_no_context_takeover\r\n"
    b'Cookie: a=b; c="d"\r\n\r\n',
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85abcd",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\nUpgrade: websocket\nConnection: Upgrade\n"
    b"Sec-WebSocket-Key: " + KEY + b"\nSec-WebSocket-Version: 8\n\n",
]

RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT_PLACEHOLDER + b"\r\n"
)


def frame_stream(sender: Role, deflate_code: int | None) -> bytes:
    """What a ``sender`` writes in a typical session, ending with its Close."""
    deflate = make_deflate(deflate_code) if deflate_code is not None else None
    peer = WebSocketProtocol(sender, deflate=deflate)
    peer.send_text("Hello, world")
    peer.send_bytes(b"\x00\x01\x02" * 50)
    peer.send_text("frag", final=False)
    peer.send_ping(b"ping")
    peer.send_text("mént", final=False)
    peer.send_text("ed")
    peer.send_bytes(b"", final=False)
    peer.send_bytes(b"", final=False)
    peer.send_bytes(b"x" * 300)
    peer.send_pong(b"")
    peer.send_close(1000, "done")
    return peer.data_to_send()


def seeds(target: str) -> list[bytes]:
    """Seed inputs for ``target`` (a key of :data:`tests.fuzz.targets.TARGETS`)."""
    if target == "server_handshake":
        return [bytes([code]) + request for code in (0x07, 0x00, 0xC3) for request in REQUESTS]
    if target == "client_handshake":
        frames = frame_stream(Role.SERVER, None)
        deflated = frame_stream(Role.SERVER, 0)
        return [
            b"\x07" + RESPONSE + b"\r\n" + frames,
            b"\xc7" + RESPONSE + b"Sec-WebSocket-Protocol: chat\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n" + deflated,
            b"\x80" + RESPONSE + b"Sec-WebSocket-Extensions: permessage-deflate; "
            b"server_no_context_takeover; client_max_window_bits=9\r\n\r\n",
            b"\x07HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
        ]
    role, deflate = {
        "connection_server": (Role.CLIENT, False),
        "connection_client": (Role.SERVER, False),
        "connection_server_deflate": (Role.CLIENT, True),
        "connection_client_deflate": (Role.SERVER, True),
    }[target]
    found = []
    for options in (0x03, 0x01, 0x0F):
        for deflate_code in (0x00, 0xC7, 0x3F) if deflate else (None,):
            header = bytes([options]) + (bytes([deflate_code]) if deflate_code is not None else b"")
            for chunk_code, action in ((7, 0), (0, 0x14), (4, 0x30)):
                found.append(
                    header + bytes([chunk_code, action]) + frame_stream(role, deflate_code)
                )
    return found
