"""``trio_ws.connect``: URLs, refusals and failures, subprotocols, headers, compression,
pings, iteration and closing, against our server and against hand-made misbehaving ones."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

import trio_ws
from trio_ws import ConnectionClosed, HandshakeFailed, Server, ServerConfig

from .conftest import expect_closed, running, wait_until


@asynccontextmanager
async def fake_server(
    behaviour: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server that runs ``behaviour`` on every connection instead of speaking HTTP."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, behaviour, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("url", ["http://example.com/", "example.com", "ws:///path", "wss://"])
async def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|host"):
        async with trio_ws.connect(url):
            pass


async def test_connection_refused_is_oserror() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
    with trio.fail_after(5), pytest.raises(OSError, match="connect"):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass


async def test_refusal_carries_the_status() -> None:
    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        await conn.receive()

    server = Server(handler, ws_path="/ws", config=ServerConfig(max_connections=1))
    with trio.fail_after(5):
        async with running(server) as address:
            with pytest.raises(HandshakeFailed) as missing:
                async with trio_ws.connect(f"ws://{address}/other"):
                    pass
            with pytest.raises(HandshakeFailed) as origin:
                async with trio_ws.connect(f"ws://{address}/ws", origin="https://elsewhere"):
                    pass
            async with trio_ws.connect(f"ws://{address}/ws"):
                with pytest.raises(HandshakeFailed) as full:
                    async with trio_ws.connect(f"ws://{address}/ws"):
                        pass
    assert (missing.value.status, origin.value.status, full.value.status) == (404, 403, 503)


async def test_open_timeout_when_the_server_never_answers() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with fake_server(silent) as address:
            start = trio.current_time()
            with pytest.raises(HandshakeFailed, match="timed out") as info:
                async with trio_ws.connect(f"ws://{address}/", open_timeout=0.2):
                    pass
            assert trio.current_time() - start < 1
    assert info.value.status is None


async def test_server_that_hangs_up_during_the_handshake() -> None:
    async def rude(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.aclose()

    with trio.fail_after(5):
        async with fake_server(rude) as address:
            with pytest.raises(HandshakeFailed, match="closed the connection"):
                async with trio_ws.connect(f"ws://{address}/"):
                    pass


async def test_server_that_answers_garbage() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await trio.sleep_forever()

    async def wrong_accept(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
        )
        await trio.sleep_forever()

    with trio.fail_after(5):
        for behaviour in (garbage, wrong_accept):
            async with fake_server(behaviour) as address:
                with pytest.raises(HandshakeFailed):
                    async with trio_ws.connect(f"ws://{address}/", open_timeout=2):
                        pass


async def test_subprotocol_negotiation() -> None:
    server_side: list[str | None] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        server_side.append(conn.subprotocol)
        await conn.send("ready")
        await conn.receive()

    server = Server(handler, select_subprotocol=lambda offered: "v2" if "v2" in offered else None)
    with trio.fail_after(5):
        async with running(server) as address:
            async with trio_ws.connect(f"ws://{address}/", subprotocols=["v3", "v2"]) as conn:
                assert conn.subprotocol == "v2"
                assert await conn.receive() == "ready"
            async with trio_ws.connect(f"ws://{address}/", subprotocols=["v9"]) as conn:
                assert conn.subprotocol is None
                assert await conn.receive() == "ready"
    assert server_side == ["v2", None]


async def test_request_details_reach_the_server() -> None:
    requests: list[tuple[str, str | None, dict[str, str]]] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        assert conn.request is not None
        requests.append((conn.request.target, conn.request.get("x-token"), conn.request.cookies))

    with trio.fail_after(5):
        async with running(Server(handler)) as address:
            async with trio_ws.connect(
                f"ws://{address}/path?room=1",
                headers=[("X-Token", "abc"), ("Cookie", "session=xyz; theme=dark")],
            ) as conn:
                await expect_closed(conn)
    assert requests == [("/path?room=1", "abc", {"session": "xyz", "theme": "dark"})]


@pytest.mark.parametrize(
    ("client_offers", "server_accepts", "negotiated"),
    [(True, True, True), (False, True, False), (True, False, False)],
)
async def test_compression_negotiation(
    client_offers: bool, server_accepts: bool, negotiated: bool
) -> None:
    server_side: list[bool] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        server_side.append(conn.protocol.deflate is not None)
        async for message in conn:
            await conn.send(message)

    server = Server(handler, config=ServerConfig(compression=server_accepts))
    text = "the same words again and again " * 5000
    with trio.fail_after(5):
        async with running(server) as address:
            async with trio_ws.connect(f"ws://{address}/", compression=client_offers) as conn:
                assert (conn.protocol.deflate is not None) == negotiated
                for _ in range(3):
                    await conn.send(text)
                    assert await conn.receive() == text
                await conn.send(b"\x00" * 70_000)
                assert await conn.receive() == b"\x00" * 70_000
    assert server_side == [negotiated]


async def test_ping_and_iteration_until_the_server_closes() -> None:
    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        await conn.receive()  # answers the client's ping on the way
        for i in range(3):
            await conn.send(f"m{i}")

    with trio.fail_after(5):
        async with running(Server(handler)) as address:
            async with trio_ws.connect(f"ws://{address}/") as conn:
                received = []
                async with trio.open_nursery() as nursery:

                    async def collect() -> None:
                        async for message in conn:
                            received.append(message)

                    nursery.start_soon(collect)
                    pong = await conn.ping(b"are you there")
                    with trio.fail_after(2):
                        await pong.wait()
                    await conn.send("go")
                assert received == ["m0", "m1", "m2"]
                assert conn.closed is not None
                assert conn.closed.code == 1000


async def test_client_message_size_limit() -> None:
    codes: list[int] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        await conn.send("x" * 2000)
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            codes.append(exc.code)
            raise

    with trio.fail_after(5):
        async with running(Server(handler)) as address:
            async with trio_ws.connect(f"ws://{address}/", max_message_size=1000) as conn:
                assert (await expect_closed(conn)).code == 1009
            await trio.sleep(0.05)
    assert codes == [1009]


async def test_leaving_the_block_closes_with_1000() -> None:
    codes: list[int] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            codes.append(exc.code)

    with trio.fail_after(5):
        server = Server(handler)
        async with running(server) as address:
            async with trio_ws.connect(f"ws://{address}/") as conn:
                pass
            assert conn.closed is not None
            assert conn.closed.code == 1000
            await wait_until(lambda: server.statistics().sockets == 0)
    assert codes == [1000]


async def test_cancelling_the_block_still_closes() -> None:
    server_saw: list[int] = []

    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            server_saw.append(exc.code)

    with trio.fail_after(5):
        server = Server(handler)
        async with running(server) as address:
            with trio.move_on_after(0.1):
                async with trio_ws.connect(f"ws://{address}/") as conn:
                    await conn.receive()  # cancelled here
            await wait_until(lambda: server.statistics().sockets == 0)
    # The client's close is shielded from the cancellation: the server gets a real Close.
    assert server_saw == [1000]
