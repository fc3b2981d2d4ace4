"""Server over real loopback sockets: addresses, plain HTTP, refusals, the firewall around a
handler, pause/resume, IP rules, shutdown and churn.

Clients here are our own ``trio_ws.connect`` and raw sockets; the third-party peers are in
``tests/e2e``. Every test runs under a hard ``trio.fail_after``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trio_ws
from trio_ws import ConnectionClosed, HandshakeFailed, Server, ServerConfig

from .conftest import (
    RawClient,
    assert_pinged_and_answered,
    assert_quiet,
    body_of,
    client_frame,
    count_fds,
    count_tasks,
    demo_app,
    expect_closed,
    handshake_response,
    header_of,
    http_exchange,
    logged_in,
    receive_json,
    running,
    split_address,
    status_of,
    stoppable,
    text_frame,
    upgrade_request,
    wait_until,
)


async def echo_handler(conn: trio_ws.WebSocketConnection) -> None:
    async for message in conn:
        await conn.send(message)


# ---------------------------------------------------------------------------------------
# Addresses and listeners


async def test_started_reports_the_bound_port() -> None:
    with trio.fail_after(5):
        server = Server(echo_handler)
        async with running(server) as address:
            host, port = split_address(address)
            assert host == "127.0.0.1"
            assert port != 0
            assert [str(a) for a in server.addresses] == [address]
            async with trio_ws.connect(f"ws://{address}/any/path") as conn:
                await conn.send("hi")
                assert await conn.receive() == "hi"


async def test_serves_listeners_handed_in() -> None:
    with trio.fail_after(5):
        sockets = trio_ws.bind_sockets("127.0.0.1", 0)
        trio_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        server = Server(echo_handler)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                lambda task_status: server.serve(
                    listeners=[*sockets, *trio_listeners], task_status=task_status
                )
            )
            assert len(addresses) == 2
            for address in addresses:
                async with trio_ws.connect(f"ws://{address}/") as conn:
                    await conn.send(b"bytes")
                    assert await conn.receive() == b"bytes"
            nursery.cancel_scope.cancel()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_host_none_listens_on_ipv4_and_ipv6() -> None:
    with trio.fail_after(5):
        server = Server(echo_handler)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                lambda task_status: server.serve(None, 0, task_status=task_status)
            )
            ports = {split_address(a)[1] for a in addresses}
            assert len(ports) == 1
            port = ports.pop()
            for host in ("127.0.0.1", "[::1]"):
                async with trio_ws.connect(f"ws://{host}:{port}/") as conn:
                    await conn.send(host)
                    assert await conn.receive() == host
            nursery.cancel_scope.cancel()


async def test_port_in_use_raises_oserror() -> None:
    with trio.fail_after(5):
        async with running(Server(echo_handler)) as address:
            _, port = split_address(address)
            with pytest.raises(OSError, match="in use"):
                await Server(echo_handler).serve("127.0.0.1", port)


# ---------------------------------------------------------------------------------------
# Plain HTTP on the same port


async def test_healthz_is_json(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "alice"):
            response = await http_exchange(
                address, f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
            )
    assert status_of(response) == 200
    assert header_of(response, "content-type") == "application/json"
    body = json.loads(body_of(response))
    assert body["status"] == "ok"
    assert body["connections"] == 1
    assert body["clients"] == 1
    assert body["accepting"] is True


async def test_metrics_is_prometheus_text(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "alice") as conn:
            await conn.send({"type": "echo", "text": "x"})
            await conn.receive()
        await wait_until(lambda: _app.server.statistics().connections == 0)
        response = await http_exchange(
            address, f"GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        )
    assert status_of(response) == 200
    content_type = header_of(response, "content-type")
    assert content_type is not None
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body_of(response).decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    # The ecosystem's own parser reads it, and no two families share a name (a gauge X
    # beside a counter X_total is one family "X" to OpenMetrics).
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), names
    for family in families:
        if family.type == "counter":
            assert all(s.name == family.name + "_total" for s in family.samples), family
    assert samples["trio_ws_open_connections"] == 0
    assert samples["trio_ws_accepted_connections_total"] == 1
    assert samples['trio_ws_refused_total{reason="ip_rules"}'] == 0
    assert samples['trio_ws_closed_total{code="1000"}'] == 1
    assert samples['trio_ws_service_calls_total{service="echo"}'] == 1
    assert samples["trio_ws_messages_received_total"] >= 2
    # The demo's ticker queue: published to, nobody subscribed, nothing dropped.
    assert samples['trio_ws_queue_subscribers{queue="stream"}'] == 0
    assert samples['trio_ws_queue_published_total{queue="stream"}'] >= 1
    assert samples['trio_ws_queue_dropped_total{queue="stream"}'] == 0
    assert samples['trio_ws_queue_depth{queue="stream"}'] == 0
    assert samples["trio_ws_subscribers_kicked_total"] == 0


async def test_unknown_path_404_and_other_methods_405(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        missing = await http_exchange(
            address, f"GET /nope HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        )
        post = await http_exchange(
            address,
            f"POST /healthz HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n".encode(),
        )
        head = await http_exchange(
            address, f"HEAD /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        )
    assert status_of(missing) == 404
    assert status_of(post) == 405
    assert header_of(post, "allow") == "GET, HEAD"
    assert status_of(head) == 200
    assert body_of(head) == b""
    assert int(header_of(head, "content-length") or 0) > 0


async def test_demo_page_at_root(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        response = await http_exchange(
            address, f"GET / HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        )
    assert status_of(response) == 200
    assert (header_of(response, "content-type") or "").startswith("text/html")
    assert b"<html" in body_of(response).lower()


async def test_websocket_on_another_path_is_404(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5), pytest.raises(HandshakeFailed) as info:
        async with trio_ws.connect(f"ws://{address}/elsewhere"):
            pass
    assert info.value.status == 404


# ---------------------------------------------------------------------------------------
# Handshake refusals and limits (raw sockets; the third-party peers repeat them in e2e)


async def test_head_over_8_kib_is_431_by_default(demo: tuple[trio_ws.App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        response = await handshake_response(
            address, upgrade_request(address, headers={"X-Big": "a" * 8300})
        )
        fits = await handshake_response(
            address, upgrade_request(address, headers={"X-Big": "a" * 7000})
        )
    assert status_of(response) == 431
    assert status_of(fits) == 101
    assert app.server.statistics().refused.get(431) == 1


async def test_head_size_is_configurable() -> None:
    app = demo_app(max_head_size=512)
    with trio.fail_after(5):
        async with running(app) as address:
            response = await handshake_response(
                address, upgrade_request(address, headers={"X-Big": "a" * 600})
            )
    assert status_of(response) == 431


async def test_version_other_than_13_is_426(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        response = await handshake_response(
            address, upgrade_request(address, headers={"Sec-WebSocket-Version": "8"})
        )
    assert status_of(response) == 426
    assert header_of(response, "sec-websocket-version") == "13"


async def test_malformed_request_is_400(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        response = await http_exchange(address, b"NONSENSE\r\n\r\n")
    assert status_of(response) == 400


async def test_handshake_time_limit_drops_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = demo_app(handshake_timeout=0.2)
    with trio.fail_after(5):
        async with running(app) as address, RawClient.open(address) as raw:
            await raw.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            start = trio.current_time()
            assert await raw.read_until_eof() == b""  # dropped, no response
            assert 0.15 <= trio.current_time() - start < 2
            await wait_until(lambda: app.server.statistics().sockets == 0)
    assert_quiet(caplog)


async def test_frames_in_the_same_segment_as_the_handshake() -> None:
    app = demo_app(max_message_size=100)
    with trio.fail_after(5):
        async with running(app) as address, RawClient.open(address) as raw:
            login = text_frame({"type": "login", "name": "eager"})
            too_big = client_frame(0x1, b"x" * 101)
            await raw.send(upgrade_request(address) + login + too_big)
            assert (await raw.read_head()).startswith(b"HTTP/1.1 101 ")
            # The connection failed as a whole: no welcome is owed after a protocol error.
            opcode, payload = await raw.read_frame()
            assert (opcode, payload[:2]) == (0x8, (1009).to_bytes(2, "big"))


async def test_origin_rules(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        absent = await handshake_response(address, upgrade_request(address))
        same = await handshake_response(
            address, upgrade_request(address, headers={"Origin": f"http://{address}"})
        )
        other = await handshake_response(
            address, upgrade_request(address, headers={"Origin": "http://evil.example"})
        )
    assert status_of(absent) == 101
    assert status_of(same) == 101
    assert status_of(other) == 403


async def test_configured_origins_are_allowed() -> None:
    app = demo_app(allowed_origins=["https://app.example"])
    with trio.fail_after(5):
        async with running(app) as address:
            ok = await handshake_response(
                address, upgrade_request(address, headers={"Origin": "https://app.example"})
            )
            refused = await handshake_response(
                address, upgrade_request(address, headers={"Origin": "https://other.example"})
            )
            with pytest.raises(HandshakeFailed) as info:
                async with trio_ws.connect(f"ws://{address}/ws", origin="http://evil.example"):
                    pass
    assert status_of(ok) == 101
    assert status_of(refused) == 403
    assert info.value.status == 403


async def test_max_connections_is_503_and_frees_up() -> None:
    app = demo_app(max_connections=2)
    with trio.fail_after(5):
        async with running(app) as address:
            async with logged_in(address, "a"), logged_in(address, "b"):
                with pytest.raises(HandshakeFailed) as info:
                    async with trio_ws.connect(f"ws://{address}/ws"):
                        pass
                assert info.value.status == 503
                # Plain HTTP is still answered while full.
                health = await http_exchange(
                    address, f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
                )
                assert status_of(health) == 200
            await wait_until(lambda: app.server.statistics().connections == 0)
            async with logged_in(address, "c"):
                pass
    assert app.server.statistics().refused == {503: 1}


# ---------------------------------------------------------------------------------------
# IP allow/deny: refused before the handshake


@pytest.mark.parametrize(
    "rules",
    [{"ip_deny": ["127.0.0.0/8"]}, {"ip_allow": ["10.0.0.0/8"]}],
    ids=["denied", "not-allowed"],
)
async def test_ip_rules_refuse_before_the_handshake(
    rules: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = demo_app(**rules)
    with trio.fail_after(5):
        async with running(app) as address:
            async with RawClient.open(address) as raw:
                try:
                    await raw.send(upgrade_request(address))
                except trio.BrokenResourceError:
                    pass  # the server may have closed before the request went out
                assert await raw.read_until_eof() == b""  # closed, no response at all
            with pytest.raises(HandshakeFailed) as info:
                async with trio_ws.connect(f"ws://{address}/ws"):
                    pass
            assert info.value.status is None
    assert app.server.statistics().connections_total == 0
    assert app.server.statistics().refused_by_ip_rules == 2
    assert 'trio_ws_refused_total{reason="ip_rules"} 2' in app.metrics_text()
    assert any("IP rules" in r.getMessage() for r in caplog.records)
    assert_quiet(caplog)


async def test_ip_allow_lets_listed_peers_in() -> None:
    app = demo_app(ip_allow=["127.0.0.1/32"], ip_deny=["10.0.0.0/8"])
    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "alice") as conn:
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}


async def test_ip_rules_apply_to_trio_listeners_too() -> None:
    app = demo_app(ip_deny=["127.0.0.1/32"])
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(5):
        async with running(app, listeners=listeners) as address, RawClient.open(address) as raw:
            assert await raw.read_until_eof() == b""
    assert app.server.statistics().connections_total == 0


# ---------------------------------------------------------------------------------------
# Pause and resume


async def test_pause_and_resume_accepting() -> None:
    app = demo_app()
    server = app.server
    with trio.fail_after(10):
        async with running(app) as address, logged_in(address, "old") as old:
            server.pause_accepting()
            assert not server.accepting
            assert server.statistics().accepting is False
            # A new connection is not served while paused: no handshake answer.
            with pytest.raises(HandshakeFailed, match="timed out"):
                async with trio_ws.connect(f"ws://{address}/ws", open_timeout=0.3):
                    pass
            async with RawClient.open(address) as waiting:
                await waiting.send(upgrade_request(address))
                with trio.move_on_after(0.3) as scope:
                    await waiting.receive_some()
                assert scope.cancelled_caught
                # The connection opened before the pause keeps working.
                await old.send({"type": "echo", "text": "still here"})
                assert await receive_json(old) == {"type": "echo", "text": "still here"}
                server.resume_accepting()
                assert server.accepting
                # The waiting connection is served now, and new ones are too.
                head = await waiting.read_head()
                assert head.startswith(b"HTTP/1.1 101 ")
            async with logged_in(address, "new") as new:
                await new.send({"type": "routed", "to": "old", "text": "hello"})
                assert await receive_json(old) == {"type": "routed", "from": "new", "text": "hello"}
            server.pause_accepting()
            server.pause_accepting()  # idempotent
            server.resume_accepting()
            async with logged_in(address, "again"):
                pass


# ---------------------------------------------------------------------------------------
# The firewall around a handler


async def test_handler_return_closes_with_1000() -> None:
    async def hello(conn: trio_ws.WebSocketConnection) -> None:
        await conn.send("hello")

    with trio.fail_after(5):
        async with running(Server(hello)) as address:
            async with trio_ws.connect(f"ws://{address}/") as conn:
                assert await conn.receive() == "hello"
                closed = await expect_closed(conn)
    assert closed.code == 1000


async def test_handler_that_raises_gets_1011_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        message = await conn.receive()
        if message == "boom":
            raise ValueError("handler bug")
        await conn.send(message)

    server = Server(handler)
    with trio.fail_after(5):
        async with running(server) as address:
            async with trio_ws.connect(f"ws://{address}/") as conn:
                await conn.send("boom")
                closed = await expect_closed(conn)
            assert closed.code == 1011
            # The server is still serving: another connection works.
            async with trio_ws.connect(f"ws://{address}/") as conn:
                await conn.send("fine")
                assert await conn.receive() == "fine"
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is ValueError
    assert server.statistics().close_codes.get(1011) == 1


async def test_handler_raising_from_inside_a_nursery_gets_1011() -> None:
    async def handler(conn: trio_ws.WebSocketConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.receive)
            raise KeyError("inside a nursery")

    server = Server(handler)
    with trio.fail_after(5):
        async with running(server) as address:
            async with trio_ws.connect(f"ws://{address}/") as conn:
                assert (await expect_closed(conn)).code == 1011
            async with trio_ws.connect(f"ws://{address}/") as conn:
                assert (await expect_closed(conn)).code == 1011


# ---------------------------------------------------------------------------------------
# Keepalive with a client that answers


async def test_keepalive_keeps_a_live_client() -> None:
    app = demo_app(ping_interval=0.05, ping_timeout=0.1)
    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "alive") as conn:
            # Our client answers pings while it is in receive().
            before = app.server.statistics()
            with trio.move_on_after(0.5):
                await conn.receive()
            assert_pinged_and_answered(before, app.server.statistics())
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}


# ---------------------------------------------------------------------------------------
# Shutdown and churn


async def test_shutdown_closes_100_clients_with_1001_and_leaves_nothing() -> None:
    tasks_before = count_tasks()
    fds_before = count_fds()
    app = demo_app(close_timeout=2)
    codes: list[int] = []
    with trio.fail_after(20):
        async with stoppable(app) as (address, stop), trio.open_nursery() as clients:
            ready = trio.Semaphore(0)

            async def client(i: int) -> None:
                async with logged_in(address, f"c{i}") as conn:
                    ready.release()
                    codes.append((await expect_closed(conn)).code)

            for i in range(100):
                clients.start_soon(client, i)
            for _ in range(100):
                await ready.acquire()
            assert len(app.clients) == 100
            start = trio.current_time()
            await stop()
            elapsed = trio.current_time() - start
    assert sorted(codes) == [1001] * 100
    assert elapsed < 2  # within the grace period
    assert len(app.clients) == 0
    assert app.server.statistics().sockets == 0
    assert app.server.statistics().close_codes == {1001: 100}
    assert count_tasks() == tasks_before
    assert count_fds() == fds_before
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream(*split_address(address))


async def test_shutdown_does_not_wait_longer_than_the_grace_period() -> None:
    # A client that never reads nor answers the Close: serve() returns after close_timeout.
    app = demo_app(close_timeout=0.3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            address = (await nursery.start(app.serve, "127.0.0.1", 0))[0]
            raw = RawClient(await trio.open_tcp_stream(*split_address(address)))
            await raw.handshake(address)
            await raw.login("mute")
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - start
        # The Close 1001 was sent; the client just never answered it.
        assert await raw.read_close_code() == 1001
        await trio.aclose_forcefully(raw.stream)
    assert 0.25 <= elapsed < 1.5
    assert len(app.clients) == 0


async def test_churn_leaves_no_client_and_no_task_behind() -> None:
    tasks_before = count_tasks()
    fds_before = count_fds()
    app = demo_app()
    with trio.fail_after(60):
        async with running(app) as address:
            tasks_serving = count_tasks()
            counter = iter(range(2000))

            async def worker() -> None:
                for i in counter:
                    async with logged_in(address, f"u{i}", compression=i % 4 == 0) as conn:
                        if i % 2:
                            await conn.send(b"x")
                            assert await conn.receive() == b"x"

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(worker)
            await wait_until(lambda: app.server.statistics().sockets == 0)
            assert len(app.clients) == 0
            assert app.clients.names() == []
            assert count_tasks() == tasks_serving
            stats = app.server.statistics()
            assert stats.connections_total == 2000
            assert stats.close_codes == {1000: 2000}
    assert count_tasks() == tasks_before
    assert count_fds() == fds_before


# ---------------------------------------------------------------------------------------
# Statistics


async def test_statistics_count_what_happened(demo: tuple[trio_ws.App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "alice") as conn:
            await conn.send({"type": "echo", "text": "x"})
            await conn.receive()
            live = app.server.statistics()
            assert live.connections == 1
            assert live.sockets == 1
        await http_exchange(address, f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        await handshake_response(
            address, upgrade_request(address, headers={"Origin": "http://x.y"})
        )
        await wait_until(lambda: app.server.statistics().sockets == 0)
    stats = app.server.statistics()
    assert stats.connections == 0
    assert stats.connections_total == 1
    assert stats.http_requests == 1
    assert stats.refused == {403: 1}
    assert stats.close_codes == {1000: 1}
    assert stats.messages_in == 2  # login and echo
    assert stats.messages_out == 2  # welcome and echo
    assert stats.bytes_in > 0


async def test_a_closing_client_gets_the_close_echoed(demo: tuple[trio_ws.App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "alice") as conn:
            start = trio.current_time()
            await conn.aclose(1000, "bye")
            assert trio.current_time() - start < 1
            assert conn.protocol.close_received is not None
            assert conn.protocol.close_received.code == 1000


def test_public_errors_and_config_validation() -> None:
    assert issubclass(ConnectionClosed, trio_ws.WebSocketError)
    with pytest.raises(ValueError, match="must be positive"):
        ServerConfig(max_connections=0)
    with pytest.raises(ValueError, match="must be positive or None"):
        ServerConfig(login_timeout=-1)


class _FailingAccept(socket.socket):
    """A listening socket whose accept() fails with ``errors`` (errno values) first."""

    def __init__(self, errors: list[int]) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.errors = list(errors)
        self.bind(("127.0.0.1", 0))
        self.listen(16)

    def accept(self) -> tuple[socket.socket, object]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


async def serve_one_client_through(listener: _FailingAccept, name: str) -> None:
    """Serve the demo on ``listener``; a client logs in and is answered."""
    app = demo_app()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: app.serve(listeners=[listener], task_status=task_status)
            )
            address = f"127.0.0.1:{listener.getsockname()[1]}"
            async with logged_in(address, name) as conn:
                await conn.send({"type": "ping"})
                assert await receive_json(conn) == {"type": "pong"}
            nursery.cancel_scope.cancel()


async def test_accept_backs_off_on_fd_exhaustion(caplog: pytest.LogCaptureFixture) -> None:
    # Both failures happen as soon as the connection is pending; the server backs off
    # (logs, sleeps) instead of crashing, then accepts it.
    with _FailingAccept([errno.EMFILE, errno.EMFILE]) as listener:
        await serve_one_client_through(listener, "patient")
        assert listener.errors == []
    warnings = [r for r in caplog.records if "backing off" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)


async def test_accept_errors_of_one_lost_connection_do_not_end_the_server() -> None:
    lost = [errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM]
    with _FailingAccept(lost) as listener:
        await serve_one_client_through(listener, "survivor")
        assert listener.errors == []


async def test_an_unread_request_body_does_not_reset_the_response(
    demo: tuple[trio_ws.App, str],
) -> None:
    _app, address = demo
    body = b"x" * 200_000
    head = (
        f"POST /healthz HTTP/1.1\r\nHost: {address}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with trio.fail_after(10):
        for _ in range(3):  # a reset is a race with the response: try it more than once
            response = await http_exchange(address, head + body)
            assert status_of(response) == 405
            assert b"\r\n\r\n" in response


@pytest.mark.parametrize(
    ("origin", "host", "config", "status"),
    [
        ("http://{address}", "{address}", {}, 101),  # the server's own page
        ("http://localhost:{port}", "localhost:{port}", {}, 101),
        ("https://{address}", "{address}", {}, 403),  # another scheme is another origin
        ("ftp://{address}", "{address}", {}, 403),
        ("null", "{address}", {}, 403),
        # DNS rebinding: a hostile name re-pointed at us; Origin and Host agree.
        ("http://evil.example:{port}", "evil.example:{port}", {}, 403),
        # ...unless the name is declared to be ours.
        (
            "http://chat.example:{port}",
            "chat.example:{port}",
            {"allowed_hosts": ["chat.example"]},
            101,
        ),
        # Configured origins compare as scheme, host and port.
        ("https://APP.example", "{address}", {"allowed_origins": ["https://app.example:443"]}, 101),
        ("http://app.example", "{address}", {"allowed_origins": ["https://app.example"]}, 403),
        (
            "https://app.example:8443",
            "{address}",
            {"allowed_origins": ["https://app.example"]},
            403,
        ),
        ("https://any.example", "{address}", {"allowed_origins": ["*"]}, 101),
    ],
)
async def test_origin_rule_compares_scheme_host_and_port_and_refuses_rebinding(
    origin: str, host: str, config: dict[str, Any], status: int
) -> None:
    app = demo_app(**config)
    with trio.fail_after(5):
        async with running(app) as address:
            port = split_address(address)[1]
            values = {"address": address, "port": port}
            request = (
                f"GET /ws HTTP/1.1\r\nHost: {host.format(**values)}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin.format(**values)}\r\n\r\n"
            ).encode()
            response = await handshake_response(address, request)
    assert status_of(response) == status


async def test_one_address_cannot_take_every_slot_and_pending_ones_have_a_smaller_cap() -> None:
    app = demo_app(max_connections_per_address=3, max_pending_per_address=2)

    async def refused_at_once(address: str) -> bool:
        async with RawClient.open(address) as raw:
            try:
                return await raw.read_until_eof() == b""  # closed before any byte
            except trio.BrokenResourceError:
                return True

    with trio.fail_after(10):
        async with running(app) as address:
            async with RawClient.open(address), RawClient.open(address):  # 2 pending
                await wait_until(lambda: app.server.statistics().pending == 2)
                assert await refused_at_once(address)  # a third pending one is refused
            await wait_until(lambda: app.server.statistics().pending == 0)
            async with logged_in(address, "a"), logged_in(address, "b"):  # admitted
                assert app.server.statistics().pending == 0
                async with RawClient.open(address):  # the third connection, pending
                    await wait_until(lambda: app.server.statistics().pending == 1)
                    assert await refused_at_once(address)  # a fourth: over 3 in all
            stats = app.server.statistics()
            assert stats.refused_by_limits == 2
            assert 'trio_ws_refused_total{reason="limits"} 2' in app.metrics_text()
            async with logged_in(address, "c"):  # everything was given back
                pass


def test_ipv6_addresses_count_per_64() -> None:
    from trio_ws._admission import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"
