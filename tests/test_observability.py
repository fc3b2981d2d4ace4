"""What /stats and /metrics cost and who may see them."""

from __future__ import annotations

import contextlib
import functools
import logging

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws._http import peer_is_loopback
from trio_ws.demo.app import create_app
from trio_ws.testing import MemoryListener

from .conftest import http_exchange, running, status_of


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("127.0.0.1:5", True),
        ("127.8.9.1:5", True),
        ("[::1]:5", True),
        ("[::ffff:127.0.0.1]:5", True),
        ("10.0.0.1:5", False),
        ("[2001:db8::1]:5", False),
        ("example.com:80", False),
    ],
)
def test_loopback_peers(peer: str, local: bool) -> None:
    assert peer_is_loopback(peer) is local


async def test_one_snapshot_per_interval_whatever_the_number_of_viewers(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = create_app(ticks_per_second=0.01)
    feed = app.server.ws_routes["/stats"].feed  # type: ignore[attr-defined]
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        async with contextlib.AsyncExitStack() as stack:
            viewers = [
                await stack.enter_async_context(
                    trio_ws.connect("ws://test/stats", stream=await listener.connect())
                )
                for _ in range(8)
            ]
            got = [0] * len(viewers)

            async def read(i: int, conn: trio_ws.WebSocketConnection) -> None:
                while True:
                    await conn.receive()
                    got[i] += 1

            async with trio.open_nursery() as readers:
                for i, conn in enumerate(viewers):
                    readers.start_soon(read, i, conn)
                await trio.sleep(10.5)  # ten intervals
                readers.cancel_scope.cancel()
        assert 10 <= feed.snapshots <= 12  # not 8 viewers x 10
        assert all(10 <= n <= 12 for n in got)
        nursery.cancel_scope.cancel()


async def test_viewers_are_capped_and_the_token_is_required_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(dashboard_token="s3cret")
    feed = app.server.ws_routes["/stats"].feed  # type: ignore[attr-defined]
    feed.max_viewers = 1
    with trio.fail_after(10):
        async with running(app) as address:
            async with trio_ws.connect(f"ws://{address}/stats") as anonymous:
                with pytest.raises(trio_ws.ConnectionClosed) as refused:
                    await anonymous.receive()
            assert refused.value.code == 1008
            async with trio_ws.connect(f"ws://{address}/stats?token=s3cret") as viewer:
                assert '"type":"stats"' in str(await viewer.receive())
                async with trio_ws.connect(f"ws://{address}/stats?token=s3cret") as second:
                    with pytest.raises(trio_ws.ConnectionClosed) as full:
                        await second.receive()
                assert full.value.code == 1013
            head = f"GET /metrics HTTP/1.1\r\nHost: {address}\r\n"
            assert status_of(await http_exchange(address, (head + "\r\n").encode())) == 403
            with_token = head + "Authorization: Bearer s3cret\r\n\r\n"
            assert status_of(await http_exchange(address, with_token.encode())) == 200
    assert all("s3cret" not in record.getMessage() for record in caplog.records)


async def test_metrics_are_rendered_at_most_once_per_interval(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_ws._metrics as metrics_module

    renders = 0
    original = metrics_module.metrics_text

    def counting(*args: object, **kwargs: object) -> str:
        nonlocal renders
        renders += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics_module, "metrics_text", counting)
    app = create_app(ticks_per_second=0.001)
    listener = MemoryListener()

    async def scrape() -> bytes:
        stream = await listener.connect()
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        return data

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        bodies = [await scrape() for _ in range(50)]  # a crowd of scrapers, at once
        assert renders == 1
        assert len(set(bodies)) == 1
        await trio.sleep(1.5)
        await scrape()
        assert renders == 2
        nursery.cancel_scope.cancel()
