"""Two demo apps (two nodes) on one Redis, driven by real WebSocket clients.

The whole seam end to end: a name is unique across the nodes, a routed message reaches
the node holding its recipient, a group's messages reach subscribers on every node, and
presence is the cluster's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import trio_ws
from tests.conftest import expect_closed, logged_in, receive_json, running
from tests.redis_fixture import RedisServer
from trio_ws.brokers.redis import RedisBroker
from trio_ws.demo.app import create_app

from .conftest import eventually, redis_nodes


@asynccontextmanager
async def two_nodes(server: RedisServer) -> AsyncIterator[tuple[str, str]]:
    first, second = redis_nodes(server.url, 2)
    assert isinstance(first, RedisBroker)
    assert isinstance(second, RedisBroker)
    async with running(create_app(broker=first)) as one, running(create_app(broker=second)) as two:
        await first.wait_up()
        await second.wait_up()
        yield one, two


async def test_two_nodes_share_names_routing_groups_and_presence(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with (
            two_nodes(redis_server) as (one, two),
            logged_in(one, "Alice") as alice,
            logged_in(two, "Bob") as bob,
        ):
            # A name is unique across the nodes, case-insensitively.
            async with trio_ws.connect(f"ws://{two}/ws") as other:
                await other.send({"type": "login", "name": "ALICE"})
                refused = await receive_json(other)
                assert (refused["type"], refused["code"]) == ("error", "name_taken"), refused

            # A routed message reaches the node holding its recipient.
            await bob.send({"type": "routed", "to": "alice", "text": "hi"})
            assert await receive_json(alice) == {"type": "routed", "from": "Bob", "text": "hi"}
            await alice.send({"type": "routed", "to": "nobody", "text": "?"})
            assert (await receive_json(alice))["code"] == "unknown_recipient"

            # A group's messages reach its subscribers on every node, in one order.
            for conn in (alice, bob):
                await conn.send({"type": "grouped", "action": "subscribe", "group": "room"})
                assert (await receive_json(conn))["type"] == "subscribed"
            await bob.send({"type": "grouped", "action": "publish", "group": "room", "text": "1"})
            await alice.send({"type": "grouped", "action": "publish", "group": "room", "text": "2"})
            for conn in (alice, bob):
                got = [await receive_json(conn) for _ in range(2)]
                assert [(m["from"], m["text"], m["seq"]) for m in got] == [
                    ("Bob", "1", 1),
                    ("Alice", "2", 2),
                ]

            # Presence is the cluster's (each node sends its own soon after a change).
            with trio.fail_after(5):
                while True:
                    await alice.send({"type": "grouped", "action": "members", "group": "room"})
                    members = await receive_json(alice)
                    assert members["type"] == "members"
                    if members["names"] == ["Alice", "Bob"]:
                        break
                    await trio.sleep(0.01)


def _authenticated(request: trio_ws.LoginRequest) -> trio_ws.LoginAccepted:
    """A policy that vouches for every name (a takeover is for authenticated logins)."""
    return trio_ws.LoginAccepted(request.message["name"], authenticated=True)


async def test_a_login_on_another_node_takes_the_name_over(redis_server: RedisServer) -> None:
    with trio.fail_after(20):
        first, second = redis_nodes(redis_server.url, 2)
        apps = [
            trio_ws.App(broker=b, login=_authenticated, on_name_conflict="takeover")
            for b in (first, second)
        ]
        async with running(apps[0]) as one, running(apps[1]) as two:
            async with logged_in(one, "Carol") as old, logged_in(two, "Carol") as new:
                closed = await expect_closed(old)  # the old node closed its connection
                assert closed.code == 1008
                assert await eventually(lambda: first.nodes(), lambda r: len(r) == 2)
                assert "carol" in apps[1].clients
                assert "Carol" not in apps[0].clients
                assert new.closed is None  # the new one is alive and well
