"""wss:// with certificates made by trustme: our client, websockets, trio-websocket, and plain
HTTPS on the same port."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trio_websocket
import trustme
from websockets.trio.client import connect as websockets_connect

import trio_ws

from ..conftest import (
    assert_pinged_and_answered,
    count_fds,
    demo_app,
    expect_closed,
    running,
    split_address,
    stoppable,
    wait_until,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_demo(server_context: ssl.SSLContext) -> AsyncIterator[tuple[trio_ws.App, str]]:
    app = demo_app(close_timeout=1)
    async with running(app, ssl_context=server_context) as address:
        yield app, address


async def test_our_client_over_wss(
    tls_demo: tuple[trio_ws.App, str], client_context: ssl.SSLContext
) -> None:
    app, address = tls_demo
    with trio.fail_after(10):
        async with trio_ws.connect(f"wss://{address}/ws", ssl_context=client_context) as conn:
            await conn.send({"type": "login", "name": "secure"})
            assert json.loads(await conn.receive()) == {"type": "welcome", "name": "secure"}
            await conn.send({"type": "echo", "text": "over tls " * 1000})
            assert json.loads(await conn.receive())["text"] == "over tls " * 1000
            await conn.send(b"\x00" * 100_000)
            assert await conn.receive() == b"\x00" * 100_000
        await wait_until(lambda: app.server.statistics().sockets == 0)
    assert len(app.clients) == 0
    assert app.server.statistics().close_codes == {1000: 1}


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websockets_over_wss(
    tls_demo: tuple[trio_ws.App, str], client_context: ssl.SSLContext, compression: str | None
) -> None:
    _app, address = tls_demo
    with trio.fail_after(10):
        async with websockets_connect(
            f"wss://{address}/ws", ssl=client_context, compression=compression, proxy=None
        ) as ws:
            await ws.send(json.dumps({"type": "login", "name": "w"}))
            assert json.loads(await ws.recv()) == {"type": "welcome", "name": "w"}
            await ws.send(b"bin" * 1000)
            assert await ws.recv() == b"bin" * 1000
        assert ws.close_code == 1000  # the server answered our Close


async def test_trio_websocket_over_wss_and_routing_across_tls(
    tls_demo: tuple[trio_ws.App, str], client_context: ssl.SSLContext
) -> None:
    _app, address = tls_demo
    with trio.fail_after(10):
        async with (
            trio_websocket.open_websocket_url(f"wss://{address}/ws", client_context) as bob,
            trio_ws.connect(f"wss://{address}/ws", ssl_context=client_context) as alice,
        ):
            await bob.send_message(json.dumps({"type": "login", "name": "bob"}))
            assert json.loads(await bob.get_message())["type"] == "welcome"
            await alice.send({"type": "login", "name": "alice"})
            assert json.loads(await alice.receive())["type"] == "welcome"
            await alice.send({"type": "routed", "to": "bob", "text": "psst"})
            assert json.loads(await bob.get_message()) == {
                "type": "routed",
                "from": "alice",
                "text": "psst",
            }


async def test_https_healthz_on_the_same_port(
    tls_demo: tuple[trio_ws.App, str], client_context: ssl.SSLContext
) -> None:
    _app, address = tls_demo
    with trio.fail_after(10):
        host, port = split_address(address)
        stream = trio.SSLStream(
            await trio.open_tcp_stream(host, port), client_context, server_hostname=host
        )
        await stream.send_all(f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        data = b""
        try:
            while chunk := await stream.receive_some():
                data += chunk
        except trio.BrokenResourceError:
            pass  # a server may skip close_notify
        await trio.aclose_forcefully(stream)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert json.loads(data.partition(b"\r\n\r\n")[2])["status"] == "ok"


async def test_an_untrusted_certificate_is_refused_and_the_server_goes_on(
    tls_demo: tuple[trio_ws.App, str], client_context: ssl.SSLContext
) -> None:
    app, address = tls_demo
    with trio.fail_after(10):
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError, trio_ws.HandshakeFailed)):
            async with trio_ws.connect(f"wss://{address}/ws"):  # system trust store
                pass
        # A plain-text client on the TLS port gets nowhere, and harms nothing.
        with pytest.raises(trio_ws.HandshakeFailed):
            async with trio_ws.connect(f"ws://{address}/ws", open_timeout=2):
                pass
        await wait_until(lambda: app.server.statistics().sockets == 0)
        async with trio_ws.connect(f"wss://{address}/ws", ssl_context=client_context) as conn:
            await conn.send({"type": "login", "name": "after"})
            assert json.loads(await conn.receive())["type"] == "welcome"


async def test_shutdown_over_tls_closes_with_1001(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    fds_before = count_fds()
    app = demo_app(close_timeout=1)
    codes: list[int] = []
    with trio.fail_after(10):
        async with stoppable(app, ssl_context=server_context) as (address, stop):
            ready = trio.Semaphore(0)

            async def client(i: int) -> None:
                async with trio_ws.connect(
                    f"wss://{address}/ws", ssl_context=client_context
                ) as conn:
                    await conn.send({"type": "login", "name": f"t{i}"})
                    await conn.receive()
                    ready.release()
                    codes.append((await expect_closed(conn)).code)

            async with trio.open_nursery() as clients:
                for i in range(10):
                    clients.start_soon(client, i)
                for _ in range(10):
                    await ready.acquire()
                await stop()
    assert codes == [1001] * 10
    assert count_fds() == fds_before


async def test_keepalive_over_tls_spares_a_client_that_answers(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # On TLS every write waits for the stream: the keepalive's pings must still go out.
    app = demo_app(ping_interval=0.05, ping_timeout=0.1)
    with trio.fail_after(10):
        async with running(app, ssl_context=server_context) as address:
            async with trio_ws.connect(f"wss://{address}/ws", ssl_context=client_context) as conn:
                await conn.send({"type": "login", "name": "alive"})
                assert json.loads(await conn.receive())["type"] == "welcome"
                before = app.server.statistics()
                with trio.move_on_after(0.5):
                    await conn.receive()  # answers the pings meanwhile
                assert_pinged_and_answered(before, app.server.statistics())
                assert conn.closed is None
                await conn.send({"type": "ping"})
                assert json.loads(await conn.receive()) == {"type": "pong"}
