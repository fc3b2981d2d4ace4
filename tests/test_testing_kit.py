"""trio_ws.testing: an app served in memory, logged-in clients, timeouts on the virtual clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import trio_ws
from trio_ws.testing import open_test_server


def make_app(**config: Any) -> trio_ws.App:
    app = trio_ws.App(config=trio_ws.ServerConfig(**config))

    @app.service("echo", fields={"text": str})
    async def echo(client: trio_ws.Client, message: dict[str, Any]) -> None:
        await client.send(message)

    @app.service("routed", fields={"to": str, "text": str})
    async def routed(client: trio_ws.Client, message: dict[str, Any]) -> None:
        await app.clients.send(message["to"], {"type": "routed", "from": client.name})

    @app.service("later", fields={"seconds": int})
    async def later(client: trio_ws.Client, message: dict[str, Any]) -> None:
        await trio.sleep(message["seconds"])
        await client.send({"type": "later"})

    return app


async def test_echo_and_routing_between_two_clients(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_server(make_app()) as server:
        async with server.client("alice") as alice, server.client("bob") as bob:
            await alice.send({"type": "echo", "text": "hi"})
            assert await alice.receive_json() == {"type": "echo", "text": "hi"}
            await alice.send({"type": "routed", "to": "bob", "text": "psst"})
            assert await bob.receive_json() == {"type": "routed", "from": "alice"}
            await alice.expect_nothing()


async def test_virtual_time_runs_a_minute_long_service_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_server(make_app()) as server, server.client("patient") as client:
        start = trio.current_time()
        await client.send({"type": "later", "seconds": 60})
        assert await client.receive_json(within=61) == {"type": "later"}
        assert trio.current_time() - start == pytest.approx(60)


async def test_receive_fails_after_its_time_and_close_codes_are_checked(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_server(make_app(login_timeout=3)) as server:
        async with server.client("quiet") as client:
            with pytest.raises(trio.TooSlowError):
                await client.receive(within=1)
        async with server.connect() as anonymous:
            closed = await anonymous.expect_closed(1008, within=10)  # no login in 3 s
            assert closed.reason == "login timeout"
        async with server.client("taken"), server.connect() as second:
            await second.send({"type": "login", "name": "TAKEN"})
            reply = await second.receive_json()
            assert reply["code"] == "name_taken"
        with pytest.raises(AssertionError, match="refused"):
            async with server.client(""):
                pass
