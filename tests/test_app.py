"""App over real loopback sockets with our own client: login, services, errors, routing,
the client registry, takeover, abrupt disconnects, slow recipients.

The error codes and flows follow PROTOCOL.md; the third-party peers repeat the main ones
in ``tests/e2e/test_peers.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_ws
from trio_ws import App, Client, LoginAccepted, LoginRefused, LoginRequest, ServiceError

from .conftest import (
    RawClient,
    assert_quiet,
    client_frame,
    demo_app,
    expect_closed,
    in_memory,
    linger_reset,
    logged_in,
    receive_json,
    running,
    text_frame,
    upgrade_request,
    wait_until,
)


async def login_reply(conn: trio_ws.WebSocketConnection, name: Any) -> dict[str, Any]:
    await conn.send({"type": "login", "name": name})
    return await receive_json(conn)


def error(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


def without_message(reply: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(reply.get("message", ""), str)
    return {k: v for k, v in reply.items() if k != "message"}


# ---------------------------------------------------------------------------------------
# Login


async def test_login_welcome_and_registry(demo: tuple[App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "Alice"):
            assert "alice" in app.clients
            client = app.clients.get("ALICE")
            assert client is not None
            assert client.name == "Alice"
            assert app.clients.names() == ["Alice"]
            assert [c.name for c in app.clients] == ["Alice"]
        await wait_until(lambda: len(app.clients) == 0)


@pytest.mark.parametrize("name", ["", "a" * 33, "bob smith", "héloïse", 42, None, ["x"]])
async def test_bad_name(demo: tuple[App, str], name: Any) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with trio_ws.connect(f"ws://{address}/ws") as conn:
            assert without_message(await login_reply(conn, name)) == error("bad_name")
            # The connection stays open and the client may try again.
            assert await login_reply(conn, "ok") == {"type": "welcome", "name": "ok"}


async def test_missing_name_is_bad_name(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with trio_ws.connect(f"ws://{address}/ws") as conn:
            await conn.send({"type": "login"})
            assert without_message(await receive_json(conn)) == error("bad_name")


async def test_name_taken_is_case_insensitive(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "Alice"), trio_ws.connect(f"ws://{address}/ws") as conn:
            assert without_message(await login_reply(conn, "Alice")) == error("name_taken")
            assert without_message(await login_reply(conn, "alice")) == error("name_taken")
            assert without_message(await login_reply(conn, "ALICE")) == error("name_taken")
            assert await login_reply(conn, "alice2") == {"type": "welcome", "name": "alice2"}


async def test_name_is_free_again_once_its_connection_ends(demo: tuple[App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "Alice"):
            pass
        await wait_until(lambda: "alice" not in app.clients, within=1)
        async with logged_in(address, "alice"):
            pass


async def test_login_required_before_login(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with trio_ws.connect(f"ws://{address}/ws") as conn:
            await conn.send({"type": "echo", "text": "hi"})
            assert without_message(await receive_json(conn)) == error("login_required")
            await conn.send(b"\x01\x02")
            assert without_message(await receive_json(conn)) == error("login_required")
            await conn.send("not json")
            assert without_message(await receive_json(conn)) == error("bad_message")
            await conn.send("[1, 2]")
            assert without_message(await receive_json(conn)) == error("bad_message")
            # An object without a type is "any other valid JSON message" here.
            await conn.send({"no": "type"})
            assert without_message(await receive_json(conn)) == error("login_required")
            assert await login_reply(conn, "late") == {"type": "welcome", "name": "late"}


async def test_fifth_failed_login_gets_its_error_then_1008(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with trio_ws.connect(f"ws://{address}/ws") as conn:
            # Messages that are not login tries do not count.
            await conn.send({"type": "ping"})
            assert without_message(await receive_json(conn)) == error("login_required")
            await conn.send("{")
            assert without_message(await receive_json(conn)) == error("bad_message")
            for _ in range(5):
                assert without_message(await login_reply(conn, "bad name")) == error("bad_name")
            closed = await expect_closed(conn)
    assert closed.code == 1008


async def test_four_failed_logins_then_success(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "taken"), trio_ws.connect(f"ws://{address}/ws") as conn:
            for _ in range(2):
                assert without_message(await login_reply(conn, "")) == error("bad_name")
                assert without_message(await login_reply(conn, "TAKEN")) == error("name_taken")
            assert await login_reply(conn, "fine") == {"type": "welcome", "name": "fine"}


async def test_login_time_limit_is_1008(autojump_clock: trio.abc.Clock) -> None:
    app = demo_app(login_timeout=30)
    with trio.fail_after(60):
        async with in_memory(app) as connect, connect() as conn:
            start = trio.current_time()
            await trio.sleep(20)
            await conn.send({"type": "ping"})  # activity is not a login
            assert without_message(await receive_json(conn)) == error("login_required")
            closed = await expect_closed(conn)
            assert trio.current_time() - start == pytest.approx(30, abs=0.5)
    assert closed.code == 1008


async def test_logged_in_clients_are_not_timed_out(autojump_clock: trio.abc.Clock) -> None:
    app = demo_app(login_timeout=5)
    with trio.fail_after(120):
        async with in_memory(app) as connect, connect() as conn:
            await conn.send({"type": "login", "name": "early"})
            assert await receive_json(conn) == {"type": "welcome", "name": "early"}
            await trio.sleep(15)  # three login timeouts, less than one keepalive interval
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}


async def test_async_login_policy_and_unauthorized() -> None:
    async def policy(login: LoginRequest) -> LoginAccepted | LoginRefused:
        await trio.lowlevel.checkpoint()
        if login.message.get("token") != "open sesame":
            return LoginRefused("unauthorized", "bad token")
        assert login.request is not None
        assert login.request.path == "/ws"
        assert login.peer is not None
        return LoginAccepted(login.message["name"])

    app = App(login=policy)
    with trio.fail_after(5):
        async with running(app) as address, trio_ws.connect(f"ws://{address}/ws") as conn:
            await conn.send({"type": "login", "name": "x", "token": "wrong"})
            assert without_message(await receive_json(conn)) == error("unauthorized")
            await conn.send({"type": "login", "name": "x", "token": "open sesame"})
            assert await receive_json(conn) == {"type": "welcome", "name": "x"}


async def test_signed_tokens_policy() -> None:
    secret = b"k" * 32
    app = App(login=trio_ws.signed_tokens(secret))
    token = trio_ws.make_token(secret, "carol", expires_at=4_000_000_000)
    with trio.fail_after(5):
        async with running(app) as address, trio_ws.connect(f"ws://{address}/ws") as conn:
            await conn.send({"type": "login", "name": "carol", "token": "forged"})
            assert without_message(await receive_json(conn)) == error("unauthorized")
            await conn.send({"type": "login", "token": token})
            assert await receive_json(conn) == {"type": "welcome", "name": "carol"}


async def test_login_policy_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    def policy(login: LoginRequest) -> LoginAccepted:
        if login.message.get("name") == "crash":
            raise RuntimeError("policy bug")
        return LoginAccepted(login.message["name"])

    app = App(login=policy)
    with trio.fail_after(5):
        async with running(app) as address, trio_ws.connect(f"ws://{address}/ws") as conn:
            assert without_message(await login_reply(conn, "crash")) == error("internal_error")
            assert await login_reply(conn, "ok") == {"type": "welcome", "name": "ok"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


# ---------------------------------------------------------------------------------------
# Takeover


def _trusting(login: LoginRequest) -> LoginAccepted | LoginRefused:
    """A policy that authenticates whoever says ``"password": "ok"``."""
    authenticated = login.message.get("password") == "ok"
    return LoginAccepted(login.message["name"], authenticated=authenticated)


async def test_takeover_closes_the_old_connection_with_1008() -> None:
    app = App(login=_trusting, on_name_conflict="takeover")

    @app.service("whoami")
    async def whoami(client: Client, _message: dict[str, Any]) -> None:
        client.data["calls"] = client.data.get("calls", 0) + 1
        await client.send({"type": "me", "name": client.name, "calls": client.data["calls"]})

    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "Alice") as old:
            await old.send({"type": "whoami"})
            assert await receive_json(old) == {"type": "me", "name": "Alice", "calls": 1}
            before = app.clients.get("alice")
            async with trio_ws.connect(f"ws://{address}/ws") as new:
                await new.send({"type": "login", "name": "Alice", "password": "ok"})
                assert await receive_json(new) == {"type": "welcome", "name": "Alice"}
                assert (await expect_closed(old)).code == 1008
                # The new connection has the name (and the client's state).
                await new.send({"type": "whoami"})
                assert await receive_json(new) == {"type": "me", "name": "Alice", "calls": 2}
                client = app.clients.get("ALICE")
                assert client is before
                assert client is not None
                assert client.connection.closed is None
                assert len(app.clients) == 1
                await trio.sleep(0.05)  # the old connection's end must not remove the new
                assert app.clients.names() == ["Alice"]
            await wait_until(lambda: len(app.clients) == 0)


@pytest.mark.parametrize(
    "attempt",
    [
        {"name": "Alice"},  # not authenticated: anyone could say so
        {"name": "ALICE", "password": "ok"},  # authenticated, but another spelling
    ],
    ids=["unauthenticated", "other-case"],
)
async def test_takeover_is_only_for_the_same_identity(attempt: dict[str, Any]) -> None:
    app = App(login=_trusting, on_name_conflict="takeover")
    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "Alice") as held:
            async with trio_ws.connect(f"ws://{address}/ws") as thief:
                await thief.send({"type": "login", **attempt})
                reply = await receive_json(thief)
                assert (reply["type"], reply["code"]) == ("error", "name_taken")
            await held.send({"type": "ping"})
            reply = await receive_json(held)  # still connected: answered (no such service)
            assert (reply["type"], reply["code"]) == ("error", "bad_message")


async def test_a_signed_token_for_another_spelling_does_not_take_over() -> None:
    secret = b"k" * 32
    app = App(login=trio_ws.signed_tokens(secret), on_name_conflict="takeover")
    far = time.time() + 3600

    def token(name: str) -> str:
        return trio_ws.make_token(secret, name, far)

    with trio.fail_after(5):
        async with running(app) as address:
            async with trio_ws.connect(f"ws://{address}/ws") as alice:
                await alice.send({"type": "login", "token": token("alice")})
                assert (await receive_json(alice))["type"] == "welcome"
                async with trio_ws.connect(f"ws://{address}/ws") as upper:
                    await upper.send({"type": "login", "token": token("ALICE")})
                    assert (await receive_json(upper))["code"] == "name_taken"
                async with trio_ws.connect(f"ws://{address}/ws") as again:
                    await again.send({"type": "login", "token": token("alice")})
                    assert (await receive_json(again))["type"] == "welcome"
                    assert (await expect_closed(alice)).code == 1008


def test_takeover_with_a_policy_that_authenticates_nobody_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="authenticates"):
        App(on_name_conflict="takeover")  # unique_names(): anyone could take any name


def test_on_name_conflict_is_validated() -> None:
    with pytest.raises(ValueError, match="on_name_conflict"):
        App(on_name_conflict="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Services and their errors


async def test_echo_ping_and_binary_echo(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "a") as conn:
            await conn.send({"type": "echo", "text": "héllo"})
            assert await receive_json(conn) == {"type": "echo", "text": "héllo"}
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}
            await conn.send(bytes(range(256)))
            assert await conn.receive() == bytes(range(256))


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '"a string"',
        "[]",
        '{"text": "no type"}',
        '{"type": 7}',
        '{"type": "nope"}',
        '{"type": "echo"}',
        '{"type": "echo", "text": 5}',
        '{"type": "echo", "text": null}',
        '{"type": "routed", "to": 1, "text": "x"}',
        '{"type": "routed", "to": "a", "text": ["x"]}',
    ],
)
async def test_bad_message_keeps_the_connection(demo: tuple[App, str], message: str) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "a") as conn:
            await conn.send(message)
            assert without_message(await receive_json(conn)) == error("bad_message")
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}


async def test_binary_without_a_binary_service_is_bad_message() -> None:
    app = App()
    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "a") as conn:
            await conn.send(b"\x00")
            assert without_message(await receive_json(conn)) == error("bad_message")


async def test_routed_between_two_clients(demo: tuple[App, str]) -> None:
    _app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "Alice") as alice, logged_in(address, "bob") as bob:
            await bob.send({"type": "routed", "to": "alice", "text": "hi"})
            assert await receive_json(alice) == {"type": "routed", "from": "bob", "text": "hi"}
            await alice.send({"type": "routed", "to": "BOB", "text": "yo"})
            assert await receive_json(bob) == {"type": "routed", "from": "Alice", "text": "yo"}
            await alice.send({"type": "routed", "to": "carol", "text": "?"})
            assert without_message(await receive_json(alice)) == error("unknown_recipient")


async def test_unknown_recipient_after_the_recipient_left(demo: tuple[App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "alice") as alice:
            async with logged_in(address, "bob"):
                pass
            await wait_until(lambda: "bob" not in app.clients)
            await alice.send({"type": "routed", "to": "bob", "text": "?"})
            assert without_message(await receive_json(alice)) == error("unknown_recipient")


async def test_a_service_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.service("boom")
    async def boom(_client: Client, _message: dict[str, Any]) -> None:
        raise ZeroDivisionError("service bug")

    @app.service("refuse")
    async def refuse(_client: Client, _message: dict[str, Any]) -> None:
        raise ServiceError("not_today", "try tomorrow")

    @app.service("ping")
    async def ping(client: Client, _message: dict[str, Any]) -> None:
        await client.send({"type": "pong"})

    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "a") as conn:
            await conn.send({"type": "boom"})
            assert without_message(await receive_json(conn)) == error("internal_error")
            await conn.send({"type": "refuse"})
            assert await receive_json(conn) == {
                "type": "error",
                "code": "not_today",
                "message": "try tomorrow",
            }
            # The connection and the server go on.
            await conn.send({"type": "ping"})
            assert await receive_json(conn) == {"type": "pong"}
            async with logged_in(address, "b") as other:
                await other.send({"type": "ping"})
                assert await receive_json(other) == {"type": "pong"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is ZeroDivisionError
    assert "boom" in errors[0].getMessage()
    assert 'trio_ws_service_calls_total{service="boom"} 1' in app.metrics_text()


def test_duplicate_service_is_refused() -> None:
    async def handler(_client: Client, _message: dict[str, Any]) -> None:
        pass

    app = App()
    app.add_service("x", handler)
    with pytest.raises(ValueError, match="already registered"):
        app.add_service("x", handler)


async def test_background_job_and_disconnect_hook() -> None:
    app = App()
    ticks: list[int] = []
    gone: list[str] = []

    @app.background
    async def ticker() -> None:
        while True:
            ticks.append(1)
            await trio.sleep(0.01)

    app.on_disconnect(lambda client: gone.append(client.name))

    with trio.fail_after(5):
        async with running(app) as address:
            async with logged_in(address, "leaver"):
                pass
            await wait_until(lambda: gone == ["leaver"])
            assert ticks
    count = len(ticks)
    await trio.sleep(0.05)
    assert len(ticks) == count  # cancelled with the server


async def test_registry_send_from_another_task(demo: tuple[App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "target") as conn:
            await app.clients.send("TARGET", {"type": "notice", "n": 1})
            assert await receive_json(conn) == {"type": "notice", "n": 1}
            with pytest.raises(trio_ws.UnknownClient) as info:
                await app.clients.send("nobody", "x")
            assert info.value.code == "unknown_recipient"
            assert isinstance(info.value, KeyError)


# ---------------------------------------------------------------------------------------
# Abrupt disconnects end quietly and release the name


async def _drop_after_login(address: str, how: str) -> None:
    async with RawClient.open(address) as raw:
        if how == "mid-handshake":
            await raw.send(upgrade_request(address)[:40])
            linger_reset(raw.stream)
            return
        await raw.handshake(address)
        await raw.login(f"drop-{how}")
        if how == "reset":
            linger_reset(raw.stream)
        elif how == "half-frame":
            await raw.send(text_frame({"type": "echo", "text": "x" * 200})[:50])
        elif how == "half-frame-reset":
            await raw.send(client_frame(0x1, b"y" * 1000)[:300])
            linger_reset(raw.stream)
        elif how == "fin":
            pass


@pytest.mark.parametrize("how", ["reset", "half-frame", "half-frame-reset", "fin", "mid-handshake"])
async def test_abrupt_disconnect_is_quiet(
    demo: tuple[App, str], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app, address = demo
    with trio.fail_after(5):
        await _drop_after_login(address, how)
        await wait_until(lambda: app.server.statistics().sockets == 0, within=1)
    assert len(app.clients) == 0
    assert_quiet(caplog)
    # And the server still serves (no busy loop, no broken state).
    with trio.fail_after(5):
        async with logged_in(address, f"drop-{how}"):
            pass


# ---------------------------------------------------------------------------------------
# A recipient that never reads


async def test_sending_to_a_slow_recipient_never_blocks_the_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = demo_app(write_buffer_size=16 * 1024, send_timeout=0.3, close_timeout=0.5)
    text = "z" * 60_000
    with trio.fail_after(15):
        async with running(app) as address, RawClient.open(address) as slow:
            # The slow client has a tiny receive window and never reads after its login.
            slow.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await slow.handshake(address)
            await slow.login("slow")
            async with logged_in(address, "fast", compression=False) as fast:
                replies: list[dict[str, Any]] = []
                for _ in range(400):  # ~24 MB: far beyond every buffer on the way
                    await fast.send({"type": "routed", "to": "slow", "text": text})
                    await fast.send({"type": "ping"})
                    reply = await receive_json(fast)
                    replies.append(reply)
                    if reply.get("type") == "error":
                        break
                    held = app.clients.get("slow")
                    assert held is not None
                    # Room is checked before queueing: at most one message beyond the limit.
                    assert held.connection.pending_size <= 16 * 1024 + len(text) + 16
                # The sender got an answer at once every time, and "busy" (not "unknown")
                # while the recipient is connected but not reading.
                assert all(r["type"] == "pong" for r in replies[:-1])
                assert without_message(replies[-1]) == error("recipient_busy")
                assert await receive_json(fast) == {"type": "pong"}  # of the last ping
                # The recipient that never drains is closed when send_timeout runs out;
                # routing to it then reports an unknown recipient.
                await wait_until(lambda: "slow" not in app.clients)
                await fast.send({"type": "routed", "to": "slow", "text": "x"})
                assert without_message(await receive_json(fast)) == error("unknown_recipient")
                await fast.send({"type": "ping"})
                assert await receive_json(fast) == {"type": "pong"}
    assert app.server.statistics().close_codes.get(1008, 0) >= 1
    assert_quiet(caplog)


async def test_a_recipient_reading_again_after_its_send_timeout_gets_everything_then_1008() -> None:
    app = demo_app(write_buffer_size=16 * 1024, send_timeout=0.3, close_timeout=5)
    text = "z" * 60_000
    with trio.fail_after(20):
        async with running(app) as address, RawClient.open(address) as slow:
            await slow.handshake(address)
            await slow.login("slow")
            held = app.clients.get("slow")
            assert held is not None
            # A small kernel buffer on the server's side: the backlog stays in the server.
            sock = held.connection.transport.sock  # type: ignore[attr-defined]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            accepted = 0
            async with logged_in(address, "fast", compression=False) as fast:
                while True:
                    await fast.send({"type": "routed", "to": "slow", "text": text})
                    await fast.send({"type": "ping"})
                    reply = await receive_json(fast)
                    if reply["type"] == "error":
                        assert reply["code"] == "recipient_busy"
                        await receive_json(fast)  # the pong
                        break
                    accepted += 1
            await trio.sleep(0.6)  # past the send timeout: a Close waits behind the rest
            delivered, close = 0, None
            while close is None:
                opcode, payload = await slow.read_frame()
                assert opcode != -1, "dropped without a Close"
                if opcode == 0x1:
                    delivered += 1
                elif opcode == 0x8:
                    close = payload
    assert close[:2] == (1008).to_bytes(2, "big")
    assert close[2:] == b"send timeout"
    assert delivered == accepted  # every message accepted for it arrived, then the Close


async def test_a_burst_of_routed_messages_arrives_in_order(demo: tuple[App, str]) -> None:
    app, address = demo
    with trio.fail_after(5):
        async with logged_in(address, "a") as a, logged_in(address, "b") as b:
            for i in range(200):
                await a.send(json.dumps({"type": "routed", "to": "b", "text": str(i)}))
            for i in range(200):
                assert await receive_json(b) == {"type": "routed", "from": "a", "text": str(i)}
    await wait_until(lambda: len(app.clients) == 0)


async def test_rate_limit_answers_rate_limited_and_recovers(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = demo_app(rate_limit=(5, 0.5))
    with trio.fail_after(10):
        async with in_memory(app) as connect, connect() as conn:
            await conn.send({"type": "login", "name": "Fast"})
            await receive_json(conn)
            for i in range(8):  # a burst: 5 pass, 3 are refused
                await conn.send({"type": "echo", "text": str(i)})
            replies = [await receive_json(conn) for _ in range(8)]
            assert [r["text"] for r in replies if r["type"] == "echo"] == ["0", "1", "2", "3", "4"]
            assert [r.get("code") for r in replies if r["type"] == "error"] == ["rate_limited"] * 3
            await trio.sleep(0.09)  # tokens refill at 10 per second: not one yet
            await conn.send({"type": "echo", "text": "early"})
            assert (await receive_json(conn)).get("code") == "rate_limited"
            await trio.sleep(0.1)
            await conn.send({"type": "echo", "text": "again"})
            assert await receive_json(conn) == {"type": "echo", "text": "again"}


def test_rate_limit_is_validated() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        trio_ws.ServerConfig(rate_limit=(0, 1.0))
    with pytest.raises(ValueError, match="rate_limit"):
        trio_ws.ServerConfig(rate_limit=(5, 0.0))
