"""Interoperability with wsproto, in memory: a peer whose framing and deflate nobody here wrote.

Two setups: frame level (``wsproto.connection.Connection`` put straight into the open
state, permessage-deflate enabled by hand), and the full opening handshake
(``wsproto.WSConnection`` against our ``_handshake`` and ``_deflate`` negotiation).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto import events as ws_events
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate
from wsproto.frame_protocol import CloseReason

from trio_ws.protocol._connection import ConnectionState as OurState
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._deflate import (
    PerMessageDeflate,
    client_offer,
    negotiate_client,
    negotiate_server,
)
from trio_ws.protocol._errors import RemoteProtocolError
from trio_ws.protocol._events import BytesMessage, Close, Ping, Pong, TextMessage
from trio_ws.protocol._frames import Role
from trio_ws.protocol._handshake import ClientHandshake, ServerHandshake

from .helpers import raw_frame

# (our parameters, the wsproto extension's offer/response string) for each configuration.
DEFLATE_SETUPS = {
    "plain": None,
    "deflate": (PerMessageDeflate(), "permessage-deflate"),
    "deflate-no-context-takeover": (
        PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ),
    "deflate-small-windows": (
        PerMessageDeflate(server_max_window_bits=10, client_max_window_bits=12),
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
    ),
}


class Peers:
    """Our protocol on one side, a wsproto ``Connection`` on the other."""

    def __init__(self, our_role: Role, setup: str) -> None:
        config = DEFLATE_SETUPS[setup]
        extensions = []
        ours: PerMessageDeflate | None = None
        if config is not None:
            ours, params = config
            ext = WsprotoDeflate()
            ext.finalize(params)  # enables it with the agreed parameters
            extensions.append(ext)
        their_type = ConnectionType.SERVER if our_role is Role.CLIENT else ConnectionType.CLIENT
        self.ours = WebSocketProtocol(our_role, deflate=ours)
        self.theirs = Connection(their_type, extensions=extensions)

    def to_them(self) -> list[ws_events.Event]:
        data = self.ours.data_to_send()
        if data:
            self.theirs.receive_data(data)
        return list(self.theirs.events())

    def to_us(self, *events: ws_events.Event) -> list[Any]:
        data = b"".join(self.theirs.send(event) for event in events)
        self.ours.receive_data(data)
        return self.ours.events_received()


def reassemble(events: list[ws_events.Event]) -> list[Any]:
    """Join wsproto's partial message events into (kind, data) tuples; keep the others."""
    out: list[Any] = []
    parts: list[Any] = []
    for event in events:
        if isinstance(event, ws_events.TextMessage | ws_events.BytesMessage):
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, ws_events.TextMessage):
                    out.append(("text", "".join(parts)))
                else:
                    out.append(("bytes", b"".join(parts)))
                parts = []
        else:
            out.append(event)
    assert not parts
    return out


ROLES = [pytest.param(Role.SERVER, id="our-server"), pytest.param(Role.CLIENT, id="our-client")]
SETUPS = list(DEFLATE_SETUPS)


@pytest.fixture(params=ROLES)
def our_role(request: pytest.FixtureRequest) -> Role:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=SETUPS)
def peers(request: pytest.FixtureRequest, our_role: Role) -> Peers:
    return Peers(our_role, request.param)


# ---------------------------------------------------------------- messages


def test_text_and_binary_to_us(peers: Peers) -> None:
    events = peers.to_us(
        ws_events.TextMessage("héllo wörld " * 20),
        ws_events.BytesMessage(b"\x00\x01\xff" * 100),
        ws_events.TextMessage(""),
        ws_events.BytesMessage(b""),
        ws_events.TextMessage("again " * 20),
    )
    assert events == [
        TextMessage("héllo wörld " * 20),
        BytesMessage(b"\x00\x01\xff" * 100),
        TextMessage(""),
        BytesMessage(b""),
        TextMessage("again " * 20),
    ]


def test_text_and_binary_to_them(peers: Peers) -> None:
    peers.ours.send_text("héllo wörld " * 20)
    peers.ours.send_bytes(b"\x00\x01\xff" * 100)
    peers.ours.send_text("")
    peers.ours.send_bytes(b"")
    peers.ours.send_text("again " * 20)
    assert reassemble(peers.to_them()) == [
        ("text", "héllo wörld " * 20),
        ("bytes", b"\x00\x01\xff" * 100),
        ("text", ""),
        ("bytes", b""),
        ("text", "again " * 20),
    ]


def test_large_message_both_ways(peers: Peers) -> None:
    payload = bytes(range(256)) * 1000  # 256 kB: the 64-bit length form
    assert peers.to_us(ws_events.BytesMessage(payload)) == [BytesMessage(payload)]
    peers.ours.send_bytes(payload)
    assert reassemble(peers.to_them()) == [("bytes", payload)]


def test_fragmented_messages_to_us(peers: Peers) -> None:
    events = peers.to_us(
        ws_events.TextMessage("frag", message_finished=False),
        ws_events.TextMessage("mé", message_finished=False),
        ws_events.Ping(b"between"),
        ws_events.TextMessage("nted"),
        ws_events.BytesMessage(b"ab", message_finished=False),
        ws_events.BytesMessage(b"cd"),
    )
    assert events == [Ping(b"between"), TextMessage("fragménted"), BytesMessage(b"abcd")]
    assert peers.to_them() == [ws_events.Pong(b"between")]


def test_fragmented_messages_to_them(peers: Peers) -> None:
    peers.ours.send_text("frag", final=False)
    peers.ours.send_text("mé", final=False)
    peers.ours.send_text("nted")
    peers.ours.send_bytes(b"ab", final=False)
    peers.ours.send_bytes(b"", final=False)
    peers.ours.send_bytes(b"cd")
    assert reassemble(peers.to_them()) == [("text", "fragménted"), ("bytes", b"abcd")]


def test_ping_between_fragments_to_them(our_role: Role) -> None:
    # Uncompressed only: wsproto 1.3 forgets that a message is compressed when a control
    # frame arrives between its fragments (PerMessageDeflate.frame_inbound_complete resets
    # _inbound_compressed on the Ping), then fails the rest of the message with 1007.
    peers = Peers(our_role, "plain")
    peers.ours.send_text("frag", final=False)
    peers.ours.send_ping(b"between")
    peers.ours.send_text("ment")
    assert reassemble(peers.to_them()) == [ws_events.Ping(b"between"), ("text", "fragment")]


# ---------------------------------------------------------------- ping and pong


def test_their_ping_our_pong(peers: Peers) -> None:
    assert peers.to_us(ws_events.Ping(b"are you there")) == [Ping(b"are you there")]
    assert peers.to_them() == [ws_events.Pong(b"are you there")]


def test_our_ping_their_pong(peers: Peers) -> None:
    peers.ours.send_ping(b"\x00" * 125)
    (ping,) = peers.to_them()
    assert ping == ws_events.Ping(b"\x00" * 125)
    assert peers.to_us(ping.response()) == [Pong(b"\x00" * 125)]
    assert peers.to_us(ws_events.Pong(b"unsolicited")) == [Pong(b"unsolicited")]


# ---------------------------------------------------------------- closing


def test_they_close(peers: Peers) -> None:
    assert peers.to_us(ws_events.CloseConnection(4001, "custom réason")) == [
        Close(4001, "custom réason")
    ]
    assert peers.ours.state is OurState.CLOSED
    assert peers.to_them() == [ws_events.CloseConnection(4001, "")]
    assert peers.theirs.state is ConnectionState.CLOSED


def test_we_close(peers: Peers) -> None:
    peers.ours.send_close(1001, "going away")
    (close,) = peers.to_them()
    assert close == ws_events.CloseConnection(1001, "going away")
    assert peers.theirs.state is ConnectionState.REMOTE_CLOSING
    assert peers.to_us(close.response()) == [Close(1001, "going away")]
    assert peers.ours.state is OurState.CLOSED
    assert peers.theirs.state is ConnectionState.CLOSED


def test_they_close_without_status(peers: Peers) -> None:
    # wsproto sends an empty Close only for the enum member itself.
    data = peers.theirs.send(ws_events.CloseConnection(CloseReason.NO_STATUS_RCVD))
    assert peers.theirs.state is ConnectionState.LOCAL_CLOSING
    peers.ours.receive_data(data)
    assert peers.ours.events_received() == [Close(1005, "")]
    assert peers.to_them() == [ws_events.CloseConnection(1005, "")]


def test_we_fail_and_they_see_the_code(peers: Peers) -> None:
    # wsproto will not send invalid UTF-8, so write the frame by hand: a one-byte text
    # frame holding 0xff, masked or not as the direction requires.
    masked = peers.ours.role is Role.SERVER
    frame = bytes([0x81, (0x80 if masked else 0) | 1]) + (b"\0\0\0\0" if masked else b"") + b"\xff"
    with pytest.raises(RemoteProtocolError) as exc_info:
        peers.ours.receive_data(frame)
    assert exc_info.value.close_code == 1007
    events = peers.to_them()
    assert len(events) == 1
    assert isinstance(events[0], ws_events.CloseConnection)
    assert events[0].code == 1007


def test_they_fail_us_and_we_see_the_code(our_role: Role) -> None:
    """wsproto answers our protocol violation (here an invalid close code) with 1002."""
    peers = Peers(our_role, "plain")
    masked = our_role is Role.CLIENT
    payload = (999).to_bytes(2, "big")
    key = b"\x01\x02\x03\x04"
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload
    frame = bytes([0x88, (0x80 if masked else 0) | 2]) + (key if masked else b"") + body
    peers.theirs.receive_data(frame)
    (event,) = peers.theirs.events()
    assert isinstance(event, ws_events.CloseConnection)
    assert event.code == 1002
    peers.ours.receive_data(peers.theirs.send(event.response()))
    assert peers.ours.events_received() == [Close(1002, event.reason)]


# ---------------------------------------------------------------- property


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("our_role_", ROLES)
@settings(max_examples=15, deadline=None)
@given(
    messages=st.lists(
        st.one_of(
            st.lists(st.text(max_size=30), min_size=1, max_size=3),
            st.lists(st.binary(max_size=200), min_size=1, max_size=3),
        ),
        max_size=5,
    )
)
def test_random_messages_both_ways(
    setup: str, our_role_: Role, messages: list[list[str] | list[bytes]]
) -> None:
    peers = Peers(our_role_, setup)
    expected_ours: list[Any] = []
    expected_theirs: list[Any] = []
    their_events: list[ws_events.Event] = []
    for fragments in messages:
        last = len(fragments) - 1
        for i, fragment in enumerate(fragments):
            finished = i == last
            if isinstance(fragment, str):
                peers.ours.send_text(fragment, final=finished)
                their_events.append(ws_events.TextMessage(fragment, message_finished=finished))
            else:
                peers.ours.send_bytes(fragment, final=finished)
                their_events.append(ws_events.BytesMessage(fragment, message_finished=finished))
        if isinstance(fragments[0], str):
            joined_text = "".join(fragments)  # type: ignore[arg-type]
            expected_ours.append(TextMessage(joined_text))
            expected_theirs.append(("text", joined_text))
        else:
            joined = b"".join(fragments)  # type: ignore[arg-type]
            expected_ours.append(BytesMessage(joined))
            expected_theirs.append(("bytes", joined))
    assert reassemble(peers.to_them()) == expected_theirs
    assert peers.to_us(*their_events) == expected_ours


# ---------------------------------------------------------------- full handshake


def test_wsproto_client_to_our_server_with_handshake() -> None:
    their_client = WSConnection(ConnectionType.CLIENT)
    request_bytes = their_client.send(
        ws_events.Request(host="example.com", target="/chat", extensions=[WsprotoDeflate()])
    )
    handshake = ServerHandshake()
    # The client may pipeline a frame right behind its request (it may not, but we cope).
    early = raw_frame(0x1, b"early")
    request = handshake.receive_data(request_bytes + early)
    assert request is not None
    assert handshake.trailing_data == early
    deflate = negotiate_server(request.extensions)
    assert deflate is not None
    response = handshake.accept(extensions=[deflate.response_value()])
    their_client.receive_data(response)
    (accepted,) = their_client.events()
    assert isinstance(accepted, ws_events.AcceptConnection)
    assert [e.name for e in accepted.extensions] == ["permessage-deflate"]

    ours = WebSocketProtocol(Role.SERVER, deflate=deflate)
    ours.receive_data(handshake.trailing_data)
    ours.receive_data(their_client.send(ws_events.TextMessage("hello " * 50)))
    assert ours.events_received() == [TextMessage("early"), TextMessage("hello " * 50)]
    ours.send_text("welcome " * 50)
    ours.send_close(1000, "done")
    their_client.receive_data(ours.data_to_send())
    events = list(their_client.events())
    assert [type(e) for e in events] == [ws_events.TextMessage, ws_events.CloseConnection]
    assert events[0].data == "welcome " * 50
    assert (events[1].code, events[1].reason) == (1000, "done")
    ours.receive_data(their_client.send(events[1].response()))
    assert ours.events_received() == [Close(1000, "done")]
    assert ours.state is OurState.CLOSED


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_our_client_to_wsproto_server_with_handshake(no_context_takeover: bool) -> None:
    options: dict[str, Any] = {"client_no_context_takeover": no_context_takeover}
    handshake = ClientHandshake("example.com", "/chat", extensions=[client_offer(**options)])
    their_server = WSConnection(ConnectionType.SERVER)
    their_server.receive_data(handshake.data_to_send())
    (request,) = their_server.events()
    assert isinstance(request, ws_events.Request)
    response_bytes = their_server.send(ws_events.AcceptConnection(extensions=[WsprotoDeflate()]))
    response = handshake.receive_data(response_bytes)
    assert response is not None
    (element,) = response.extensions
    deflate = negotiate_client(element, **options)

    ours = WebSocketProtocol(Role.CLIENT, deflate=deflate)
    for i in range(3):
        ours.send_text(f"message {i} " * 30)
    ours.send_bytes(b"\x00" * 1000, final=False)
    ours.send_bytes(b"\x01" * 1000)
    their_server.receive_data(ours.data_to_send())
    assert reassemble(list(their_server.events())) == [
        *(("text", f"message {i} " * 30) for i in range(3)),
        ("bytes", b"\x00" * 1000 + b"\x01" * 1000),
    ]
    data = b"".join(their_server.send(ws_events.TextMessage(f"reply {i} " * 30)) for i in range(3))
    ours.receive_data(data)
    assert ours.events_received() == [TextMessage(f"reply {i} " * 30) for i in range(3)]
    ours.send_close(3000, "bye")
    their_server.receive_data(ours.data_to_send())
    (close,) = their_server.events()
    assert isinstance(close, ws_events.CloseConnection)
    assert (close.code, close.reason) == (3000, "bye")
    ours.receive_data(their_server.send(close.response()))
    assert ours.events_received() == [Close(3000, "bye")]
