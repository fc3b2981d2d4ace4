"""What a permessage-deflate connection keeps in memory, measured with tracemalloc.

The server side is set up as the server sets it up (``negotiate_server`` with the
:class:`~trio_ws.ServerConfig` defaults, against the offer of the ``websockets`` client) and
every zlib allocation is traced (CPython's zlib allocates through ``PyMem_RawMalloc``). The
bounds are far from the measured values (about 0.3 and 12 KiB a connection) and far below
what zlib's defaults cost (a deflate state alone is 256 KiB), so they do not depend on the
allocator or the zlib build.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from trio_ws import ServerConfig
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._deflate import PerMessageDeflate, negotiate_client, negotiate_server
from trio_ws.protocol._events import TextMessage
from trio_ws.protocol._frames import Role
from trio_ws.protocol._headers import ExtensionOffer

N = 200
KIB = 1024
MESSAGE = '{"id": 1, "user": "someone", "text": "hello there", "ok": true} ' * 16
# What the websockets client offers by default.
OFFER = ExtensionOffer("permessage-deflate", (("client_max_window_bits", None),))


def server_params() -> PerMessageDeflate:
    config = ServerConfig()
    params = negotiate_server(
        [OFFER],
        server_no_context_takeover=config.server_no_context_takeover,
        client_max_window_bits=config.client_max_window_bits,
    )
    assert params is not None
    return params


def client_params(server: PerMessageDeflate) -> PerMessageDeflate:
    name, *params = (p.strip() for p in server.response_value().split(";"))
    pairs = tuple((k, v or None) for k, _, v in (p.partition("=") for p in params))
    return negotiate_client(ExtensionOffer(name, pairs))


def per_connection(deflate: bool, messages: int) -> float:
    """Traced bytes a server connection holds, averaged over N, after ``messages`` each way."""
    params = server_params() if deflate else None
    peer = client_params(params) if params is not None else None
    clients = [WebSocketProtocol(Role.CLIENT, deflate=peer) for _ in range(N)]
    frames = []
    for client in clients:  # the clients' frames are made before the measurement starts
        for _ in range(messages):
            client.send_text(MESSAGE)
        frames.append(client.data_to_send())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        servers = [WebSocketProtocol(Role.SERVER, deflate=params) for _ in range(N)]
        for server, data in zip(servers, frames, strict=True):
            server.receive_data(data)
            assert server.events_received() == [TextMessage(MESSAGE)] * messages
            for _ in range(messages):
                server.send_text(MESSAGE)
            server.data_to_send()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(servers) == N
    return (after - before) / N


def test_the_server_asks_for_a_small_client_window() -> None:
    assert server_params().client_max_window_bits == 12
    assert server_params().server_no_context_takeover


def test_an_idle_deflate_connection_holds_no_zlib_state() -> None:
    extra = per_connection(True, 0) - per_connection(False, 0)
    assert extra < 2 * KIB


def test_after_messages_only_the_inflate_window_is_kept() -> None:
    # Our compressor is shared; what stays is the inflater of the client's context:
    # about 7 KiB of state and a 4 KiB window, not 256 + 39 KiB.
    extra = per_connection(True, 3) - per_connection(False, 3)
    assert extra < 24 * KIB


def test_config_checks_the_client_window() -> None:
    assert ServerConfig(client_max_window_bits=None).client_max_window_bits is None
    for bad in (7, 16):
        with pytest.raises(ValueError, match="client_max_window_bits"):
            ServerConfig(client_max_window_bits=bad)
