"""The real server against clients nobody here wrote: ``websockets`` (its Trio client, in the
same event loop), ``trio-websocket`` and a bare ``wsproto`` state machine.

Every test runs on real loopback sockets, port 0, under a hard ``trio.fail_after``.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket
import websockets.exceptions
import wsproto
import wsproto.events
from websockets.trio.client import connect as websockets_connect

import trio_ws

from ..conftest import (
    RawClient,
    assert_pinged_and_answered,
    assert_quiet,
    demo_app,
    logged_in,
    running,
    split_address,
    stoppable,
    wait_until,
)

PEERS = ["websockets", "trio-websocket"]


class Peer:
    """One client connection of either library, behind the few calls the tests need."""

    def __init__(self, kind: str, ws: Any) -> None:
        self.kind = kind
        self.ws = ws

    @property
    def extensions(self) -> str:
        if self.kind == "websockets":
            return self.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        return ""  # trio-websocket offers no extension

    async def send(self, message: str | bytes | dict[str, Any]) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        if self.kind == "websockets":
            await self.ws.send(message)
        else:
            await self.ws.send_message(message)

    async def recv(self) -> str | bytes:
        if self.kind == "websockets":
            return await self.ws.recv()
        return await self.ws.get_message()

    async def recv_json(self) -> dict[str, Any]:
        message = await self.recv()
        assert isinstance(message, str), message
        return json.loads(message)

    async def close_code(self) -> int | None:
        """Receive until the server closes; the code of its Close (None: no Close frame)."""
        try:
            message = await self.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code if exc.reason is not None else None
        raise AssertionError(f"expected a close, got {message!r}")

    async def login(self, name: str) -> None:
        await self.send({"type": "login", "name": name})
        assert await self.recv_json() == {"type": "welcome", "name": name}


@asynccontextmanager
async def open_peer(
    kind: str,
    address: str,
    path: str = "/ws",
    *,
    compression: bool = True,
    headers: dict[str, str] | None = None,
    max_size: int = 1 << 20,
    open_timeout: float = 5,
) -> AsyncIterator[Peer]:
    url = f"ws://{address}{path}"
    headers = headers or {}
    if kind == "websockets":
        origin = headers.pop("Origin", None)
        async with websockets_connect(
            url,
            compression="deflate" if compression else None,
            origin=origin,  # type: ignore[arg-type]
            additional_headers=headers,
            ping_interval=None,
            open_timeout=open_timeout,
            close_timeout=2,
            max_size=max_size,
            proxy=None,
        ) as ws:
            yield Peer(kind, ws)
    else:
        async with trio_websocket.open_websocket_url(
            url,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
            connect_timeout=open_timeout,
            disconnect_timeout=2,
            max_message_size=max_size,
        ) as ws:
            yield Peer(kind, ws)


async def refusal_status(kind: str, address: str, path: str = "/ws", **kwargs: Any) -> int:
    """The HTTP status with which the server refuses this peer's handshake."""
    try:
        async with open_peer(kind, address, path, **kwargs):
            pass
    except websockets.exceptions.InvalidStatus as exc:
        return exc.response.status_code
    except trio_websocket.ConnectionRejected as exc:
        return exc.status_code
    raise AssertionError("the handshake was not refused")


def without_message(reply: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(reply.pop("message"), str)
    return reply


def error(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


# ---------------------------------------------------------------------------------------
# The workflows


@pytest.mark.parametrize("kind", PEERS)
async def test_login_echo_text_and_binary(kind: str, demo: tuple[trio_ws.App, str]) -> None:
    app, address = demo
    with trio.fail_after(10):
        async with open_peer(kind, address) as peer:
            await peer.login("Alice")
            assert app.clients.names() == ["Alice"]
            await peer.send({"type": "echo", "text": "héllo ✓"})
            assert await peer.recv_json() == {"type": "echo", "text": "héllo ✓"}
            await peer.send(b"\x00\x01\xfe\xff")
            assert await peer.recv() == b"\x00\x01\xfe\xff"
            await peer.send({"type": "ping"})
            assert await peer.recv_json() == {"type": "pong"}
        await wait_until(lambda: len(app.clients) == 0)


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
async def test_echo_compressed_and_not(compression: bool, demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    big_text = "compressible " * 20_000  # 260 kB of text, a few kB deflated
    big_bytes = bytes(range(256)) * 1000
    with trio.fail_after(10):
        async with open_peer("websockets", address, compression=compression) as peer:
            if compression:
                assert peer.extensions.startswith("permessage-deflate")
            else:
                assert peer.extensions == ""
            await peer.login("zip" if compression else "plain")
            await peer.send({"type": "echo", "text": big_text})
            assert await peer.recv_json() == {"type": "echo", "text": big_text}
            await peer.send(big_bytes)
            assert await peer.recv() == big_bytes
            for i in range(20):  # several messages in a row through the same contexts
                await peer.send({"type": "echo", "text": f"{i}" * i})
                assert (await peer.recv_json())["text"] == f"{i}" * i


async def test_routed_between_two_libraries(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        async with (
            open_peer("websockets", address) as alice,
            open_peer("trio-websocket", address) as bob,
        ):
            await alice.login("Alice")
            await bob.login("bob")
            await alice.send({"type": "routed", "to": "BOB", "text": "hi bob"})
            assert await bob.recv_json() == {"type": "routed", "from": "Alice", "text": "hi bob"}
            await bob.send({"type": "routed", "to": "alice", "text": "hi alice"})
            assert await alice.recv_json() == {
                "type": "routed",
                "from": "bob",
                "text": "hi alice",
            }


# ---------------------------------------------------------------------------------------
# Every error code of PROTOCOL.md


@pytest.mark.parametrize("kind", PEERS)
async def test_every_error_code(kind: str, demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        async with open_peer(kind, address) as alice, open_peer(kind, address) as other:
            # Before login.
            await alice.send({"type": "echo", "text": "hi"})
            assert without_message(await alice.recv_json()) == error("login_required")
            await alice.send(b"binary")
            assert without_message(await alice.recv_json()) == error("login_required")
            await alice.send("{not json")
            assert without_message(await alice.recv_json()) == error("bad_message")
            await alice.send({"type": "login", "name": "no spaces"})
            assert without_message(await alice.recv_json()) == error("bad_name")
            await alice.send({"type": "login"})
            assert without_message(await alice.recv_json()) == error("bad_name")
            await alice.login("Alice")
            await other.send({"type": "login", "name": "alice"})
            assert without_message(await other.recv_json()) == error("name_taken")
            await other.send({"type": "login", "name": "Alice"})
            assert without_message(await other.recv_json()) == error("name_taken")
            # After login.
            for bad in (
                "not json",
                json.dumps({"text": "no type"}),
                json.dumps({"type": "unknown"}),
                json.dumps({"type": "echo", "text": 42}),
                json.dumps({"type": "routed", "to": ["x"], "text": "x"}),
            ):
                await alice.send(bad)
                assert without_message(await alice.recv_json()) == error("bad_message")
            await alice.send({"type": "routed", "to": "nobody", "text": "?"})
            assert without_message(await alice.recv_json()) == error("unknown_recipient")
            # The connection lived through all of it.
            await alice.send({"type": "ping"})
            assert await alice.recv_json() == {"type": "pong"}


@pytest.mark.parametrize("kind", PEERS)
async def test_fifth_failed_login_closes_1008(kind: str, demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        async with open_peer(kind, address) as peer:
            for _ in range(5):
                await peer.send({"type": "login", "name": ""})
                assert without_message(await peer.recv_json()) == error("bad_name")
            assert await peer.close_code() == 1008


# ---------------------------------------------------------------------------------------
# Every limit of DESIGN.md


@pytest.mark.parametrize("kind", PEERS)
async def test_login_time_limit_1008(kind: str) -> None:
    with trio.fail_after(10):
        async with running(demo_app(login_timeout=0.2)) as address:
            async with open_peer(kind, address) as peer:
                assert await peer.close_code() == 1008


@pytest.mark.parametrize("kind", PEERS)
async def test_message_size_limit_1009(kind: str) -> None:
    with trio.fail_after(10):
        async with running(demo_app(max_message_size=1000)) as address:
            async with open_peer(kind, address, compression=False) as peer:
                await peer.login("big")
                await peer.send({"type": "echo", "text": "x" * 900})
                assert len((await peer.recv_json())["text"]) == 900
                await peer.send("x" * 1001)
                assert await peer.close_code() == 1009


async def test_message_size_limit_applies_after_inflation() -> None:
    with trio.fail_after(10):
        async with running(demo_app(max_message_size=100_000)) as address:
            async with open_peer("websockets", address) as peer:
                assert peer.extensions.startswith("permessage-deflate")
                await peer.login("bomb")
                text = "a" * 200_000
                assert len(zlib.compress(text.encode())) < 1000  # tiny on the wire
                await peer.send(text)
                assert await peer.close_code() == 1009


async def test_default_message_size_is_1_mib(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        async with open_peer("websockets", address, max_size=4 << 20) as peer:
            await peer.login("mib")
            fits = {"type": "echo", "text": "y" * ((1 << 20) - 100)}
            await peer.send(fits)
            assert await peer.recv_json() == fits
            await peer.send(b"z" * ((1 << 20) + 1))
            assert await peer.close_code() == 1009


@pytest.mark.parametrize("kind", PEERS)
async def test_head_size_limit_431(kind: str, demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        status = await refusal_status(kind, address, headers={"X-Filler": "f" * 9000})
    assert status == 431


@pytest.mark.parametrize("kind", PEERS)
async def test_origin_allow_list_403(kind: str) -> None:
    app = demo_app(allowed_origins=["https://trusted.example"])
    with trio.fail_after(10):
        async with running(app) as address:
            for origin in (None, f"http://{address}", "https://trusted.example"):
                headers = {"Origin": origin} if origin else {}
                async with open_peer(kind, address, headers=headers) as peer:
                    await peer.login("origin")
                await wait_until(lambda: len(app.clients) == 0)
            status = await refusal_status(kind, address, headers={"Origin": "https://evil.example"})
    assert status == 403


@pytest.mark.parametrize("kind", PEERS)
async def test_max_connections_503(kind: str) -> None:
    app = demo_app(max_connections=1)
    with trio.fail_after(10):
        async with running(app) as address:
            async with open_peer(kind, address) as first:
                await first.login("first")
                assert await refusal_status(kind, address) == 503
            await wait_until(lambda: app.server.statistics().connections == 0)
            async with open_peer(kind, address) as again:
                await again.login("again")


@pytest.mark.parametrize("kind", PEERS)
async def test_wrong_path_404(kind: str, demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        assert await refusal_status(kind, address, "/not-here") == 404


async def test_keepalive_timeout_1011_for_a_client_that_never_answers_pings() -> None:
    app = demo_app(ping_interval=0.1, ping_timeout=0.2)
    with trio.fail_after(10):
        async with running(app) as address:
            host, port = split_address(address)
            stream = await trio.open_tcp_stream(host, port)
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            # auto-pong is a wsproto *connection* feature we bypass: we just never send.
            await stream.send_all(client.send(wsproto.events.Request(host=address, target="/ws")))
            events: list[Any] = []
            pings = 0
            code = None
            start = trio.current_time()
            while code is None:
                data = await stream.receive_some(65536)
                if not data:
                    break
                client.receive_data(data)
                for event in client.events():
                    events.append(event)
                    if isinstance(event, wsproto.events.AcceptConnection):
                        await stream.send_all(
                            client.send(
                                wsproto.events.TextMessage(
                                    json.dumps({"type": "login", "name": "mute"})
                                )
                            )
                        )
                    elif isinstance(event, wsproto.events.Ping):
                        pings += 1  # and no Pong goes back
                    elif isinstance(event, wsproto.events.CloseConnection):
                        code = event.code
            elapsed = trio.current_time() - start
            await stream.aclose()
            await wait_until(lambda: len(app.clients) == 0)
    assert any(isinstance(e, wsproto.events.TextMessage) for e in events)  # welcome
    assert pings >= 1
    assert code == 1011
    assert elapsed < 2
    assert app.server.statistics().close_codes == {1011: 1}


@pytest.mark.parametrize("kind", PEERS)
async def test_keepalive_spares_clients_that_answer(kind: str) -> None:
    app = demo_app(ping_interval=0.05, ping_timeout=0.1)
    with trio.fail_after(10):
        async with running(app) as address, open_peer(kind, address) as peer:
            await peer.login("alive")
            before = app.server.statistics()
            with trio.move_on_after(0.5):
                await peer.recv()  # the libraries answer pings while reading
            assert_pinged_and_answered(before, app.server.statistics())
            await peer.send({"type": "ping"})
            assert await peer.recv_json() == {"type": "pong"}


async def test_handshake_time_limit_with_a_peer_that_stalls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = demo_app(handshake_timeout=0.2)
    with trio.fail_after(10):
        async with running(app) as address:
            async with RawClient.open(address) as raw:
                request = wsproto.WSConnection(wsproto.ConnectionType.CLIENT).send(
                    wsproto.events.Request(host=address, target="/ws")
                )
                await raw.send(request[:-2])  # all but the final CRLF
                assert await raw.read_until_eof() == b""
            # A peer that completes the handshake in time is served.
            async with open_peer("websockets", address) as peer:
                await peer.login("in-time")
    assert_quiet(caplog)


# ---------------------------------------------------------------------------------------
# Refused before the handshake, paused, shut down


@pytest.mark.parametrize("kind", PEERS)
async def test_ip_deny_refuses_peers_before_the_handshake(kind: str) -> None:
    app = demo_app(ip_deny=["127.0.0.1/32"])
    with trio.fail_after(10):
        async with running(app) as address:
            with pytest.raises(
                (
                    websockets.exceptions.InvalidMessage,
                    trio_websocket.HandshakeError,
                    trio_websocket.ConnectionClosed,
                    OSError,
                    EOFError,
                )
            ) as info:
                # trio-websocket only notices when its connect timeout expires.
                async with open_peer(kind, address, open_timeout=0.5):
                    pass
    assert not isinstance(
        info.value, websockets.exceptions.InvalidStatus | trio_websocket.ConnectionRejected
    )
    assert app.server.statistics().connections_total == 0


async def test_pause_and_resume_with_peers() -> None:
    app = demo_app()
    with trio.fail_after(10):
        async with running(app) as address, open_peer("trio-websocket", address) as old:
            await old.login("old")
            app.server.pause_accepting()
            with pytest.raises(TimeoutError):
                async with websockets_connect(f"ws://{address}/ws", open_timeout=0.3, proxy=None):
                    pass
            await old.send({"type": "echo", "text": "served"})
            assert (await old.recv_json())["text"] == "served"
            app.server.resume_accepting()
            async with open_peer("websockets", address) as new:
                await new.login("new")
                await new.send({"type": "routed", "to": "old", "text": "back"})
                assert await old.recv_json() == {"type": "routed", "from": "new", "text": "back"}


async def test_shutdown_closes_peers_with_1001() -> None:
    app = demo_app(close_timeout=2)
    codes: dict[str, int | None] = {}
    with trio.fail_after(10):
        async with stoppable(app) as (address, stop), trio.open_nursery() as clients:
            ready = trio.Semaphore(0)

            async def client(kind: str, name: str) -> None:
                async with open_peer(kind, address) as peer:
                    await peer.login(name)
                    ready.release()
                    codes[name] = await peer.close_code()

            for i, kind in enumerate(PEERS * 3):
                clients.start_soon(client, kind, f"{kind}-{i}")
            for _ in range(6):
                await ready.acquire()
            await stop()
    assert list(codes.values()) == [1001] * 6


async def test_server_handler_that_raises_1011_for_websockets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        if await conn.receive() == "raise":
            raise RuntimeError("bug in a handler")
        await conn.send("ok")

    with trio.fail_after(10):
        async with running(trio_ws.Server(handler)) as address:
            async with open_peer("websockets", address, "/") as peer:
                await peer.send("raise")
                assert await peer.close_code() == 1011
            async with open_peer("trio-websocket", address, "/") as peer:
                await peer.send("fine")
                assert await peer.recv() == "ok"
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError]


async def test_our_client_and_a_peer_together(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(10):
        async with logged_in(address, "ours") as ours, open_peer("websockets", address) as peer:
            await peer.login("theirs")
            await peer.send({"type": "routed", "to": "ours", "text": "hello"})
            message = json.loads(await ours.receive())
            assert message == {"type": "routed", "from": "theirs", "text": "hello"}
