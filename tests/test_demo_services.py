"""The demo's grouped and streamed services over real sockets, as docs/protocol.md says."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from websockets.trio.client import connect as ws_connect

import trio_ws
from trio_ws.demo.app import create_app

from .conftest import logged_in, receive_json, running, wait_until


class _AnyEpoch(str):
    """Equal to any non-empty epoch string (a history's epoch is random)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_EPOCH = _AnyEpoch()


async def request(conn: trio_ws.WebSocketConnection, message: dict[str, Any]) -> dict[str, Any]:
    await conn.send(message)
    return await receive_json(conn)


def grouped(action: str, group: str, **fields: Any) -> dict[str, Any]:
    return {"type": "grouped", "action": action, "group": group, **fields}


@pytest.fixture
async def demo_address() -> Any:
    app = create_app(ticks_per_second=20)
    async with running(app) as address:
        yield app, address


async def test_group_subscribe_publish_members_unsubscribe(demo_address: Any) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with logged_in(address, "Alice") as alice, logged_in(address, "Bob") as bob:
            assert await request(alice, grouped("subscribe", "g1")) == {
                "type": "subscribed",
                "group": "g1",
                "seq": 0,
                "epoch": ANY_EPOCH,
            }
            assert await request(bob, grouped("subscribe", "g1")) == {
                "type": "subscribed",
                "group": "g1",
                "seq": 0,
                "epoch": ANY_EPOCH,
            }
            await bob.send(grouped("publish", "g1", text="hi"))
            expected = {"type": "grouped", "group": "g1", "from": "Bob", "seq": 1, "text": "hi"}
            assert await receive_json(alice) == expected
            assert await receive_json(bob) == expected  # the sender is subscribed too
            assert await request(alice, grouped("members", "g1")) == {
                "type": "members",
                "group": "g1",
                "names": ["Alice", "Bob"],
            }
            # Subscribing twice is harmless: one delivery per message.
            assert (await request(alice, grouped("subscribe", "g1")))["type"] == "subscribed"
            await bob.send(grouped("publish", "g1", text="once"))
            assert (await receive_json(alice))["seq"] == 2
            assert (await receive_json(bob))["seq"] == 2
            assert await request(alice, grouped("unsubscribe", "g1")) == {
                "type": "unsubscribed",
                "group": "g1",
            }
            await bob.send(grouped("publish", "g1", text="after"))
            assert (await receive_json(bob))["seq"] == 3
            # Nothing of g1 follows the unsubscribed reply: the next thing Alice gets is pong.
            assert await request(alice, {"type": "ping"}) == {"type": "pong"}
            assert await request(bob, grouped("members", "g1")) == {
                "type": "members",
                "group": "g1",
                "names": ["Bob"],
            }
        # Presence follows disconnects.
        async with logged_in(address, "Carol") as carol:
            await trio.testing.wait_all_tasks_blocked()
            assert await request(carol, grouped("members", "g1")) == {
                "type": "members",
                "group": "g1",
                "names": [],
            }


async def test_publishing_does_not_require_a_subscription(demo_address: Any) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with logged_in(address, "Alice") as alice, logged_in(address, "Bob") as bob:
            await request(alice, grouped("subscribe", "room"))
            await bob.send(grouped("publish", "room", text="x"))
            assert (await receive_json(alice))["from"] == "Bob"
            assert await request(bob, {"type": "ping"}) == {"type": "pong"}


async def test_since_replays_kept_history_with_a_gap(demo_address: Any) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with logged_in(address, "Pub") as pub, logged_in(address, "Late") as late:
            for i in range(150):
                await pub.send(grouped("publish", "g2", text=str(i)))
            await request(pub, {"type": "ping"})  # all 150 published
            await late.send(grouped("subscribe", "g2", since=10))
            assert await receive_json(late) == {
                "type": "subscribed",
                "group": "g2",
                "seq": 150,
                "epoch": ANY_EPOCH,
            }
            # 100 kept (51..150): 11..50 are gone.
            assert await receive_json(late) == {"type": "gap", "group": "g2", "from": 11, "to": 50}
            seqs = [(await receive_json(late))["seq"] for _ in range(100)]
            assert seqs == list(range(51, 151))
            # since inside the kept range: no gap; at the last seq: nothing replayed.
            async with logged_in(address, "Inside") as inside:
                await inside.send(grouped("subscribe", "g2", since=148))
                assert (await receive_json(inside))["seq"] == 150
                assert [(await receive_json(inside))["seq"] for _ in range(2)] == [149, 150]
                assert await request(inside, {"type": "ping"}) == {"type": "pong"}
            async with logged_in(address, "Edge") as edge:
                await edge.send(grouped("subscribe", "g2", since=150))
                assert (await receive_json(edge))["type"] == "subscribed"
                assert await request(edge, {"type": "ping"}) == {"type": "pong"}


async def test_stream_ticks_at_least_twice_a_second() -> None:
    async with running(create_app()) as address, logged_in(address, "Watcher") as conn:
        reply = await request(conn, {"type": "streamed", "action": "subscribe"})
        assert reply["type"] == "subscribed"
        assert reply["group"] == "stream"
        with trio.fail_after(1.0):
            ticks = [await receive_json(conn) for _ in range(2)]
        for tick in ticks:
            assert tick["type"] == "streamed"
            assert set(tick["data"]) == {"symbol", "price", "time"}
            assert isinstance(tick["data"]["price"], float)
        assert ticks[1]["seq"] == ticks[0]["seq"] + 1
        last = ticks[1]["seq"]
        await conn.send({"type": "streamed", "action": "unsubscribe"})
        with trio.fail_after(2):
            while (message := await receive_json(conn))["type"] != "unsubscribed":
                assert message["seq"] > last  # only ticks published before the reply
        assert message == {"type": "unsubscribed", "group": "stream"}
        # Resume with since: the ticks missed meanwhile come first, without a hole.
        await trio.sleep(0.3)
        await conn.send({"type": "streamed", "action": "subscribe", "since": last})
        with trio.fail_after(2):
            assert (await receive_json(conn))["type"] == "subscribed"
            seqs = [(await receive_json(conn))["seq"] for _ in range(5)]
        assert seqs == list(range(last + 1, last + 6))


@pytest.mark.parametrize(
    "message",
    [
        grouped("subscribe", "bad name"),
        grouped("subscribe", "x" * 65),
        grouped("subscribe", "stream"),
        grouped("publish", "g1"),
        grouped("publish", "g1", text=5),
        grouped("subscribe", "g1", since=-1),
        grouped("subscribe", "g1", since="3"),
        grouped("subscribe", "g1", since=True),
        grouped("dance", "g1"),
        {"type": "grouped", "action": "subscribe"},
        {"type": "streamed", "action": "jump"},
        {"type": "streamed"},
    ],
)
async def test_bad_grouped_and_streamed_messages(
    demo_address: Any, message: dict[str, Any]
) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with logged_in(address, "Picky") as conn:
            reply = await request(conn, message)
            assert (reply["type"], reply["code"]) == ("error", "bad_message"), reply
            assert await request(conn, {"type": "ping"}) == {"type": "pong"}


async def takeover_of_a_stalled_subscriber() -> tuple[list[int], list[dict[str, Any]], int]:
    """Roamer subscribes to g3 and stops reading while Pub publishes, until messages wait
    for it on the server; a new connection takes the name over; Pub publishes once more.

    Returns the seqs the old connection got before its 1008, everything the new one got
    up to the last seq, and that seq.
    """
    app = create_app(ticks_per_second=20)
    app.on_name_conflict = "takeover"
    app.login = lambda request: trio_ws.LoginAccepted(request.message["name"], authenticated=True)
    filler = "x" * 60_000
    async with running(app) as address, logged_in(address, "Pub") as pub:
        async with logged_in(address, "Roamer", compression=False) as old:
            await request(old, grouped("subscribe", "g3"))
            first = app.clients.get("Roamer")
            assert first is not None
            replaced = first.connection
            # The socket to the old connection fills up, then messages wait in its buffer.
            last = 0
            while app.hub.statistics().buffered < 3:
                assert last < 1000, "the old connection never filled up"
                last += 1
                await pub.send(grouped("publish", "g3", text=filler))
                await request(pub, {"type": "ping"})
            old_seqs: list[int] = []
            old_closed: list[int] = []

            async def read_old() -> None:
                while True:
                    try:
                        old_seqs.append((await receive_json(old))["seq"])
                    except trio_ws.ConnectionClosed as exc:
                        old_closed.append(exc.code)
                        return

            async with (
                trio.open_nursery() as nursery,
                trio_ws.connect(f"ws://{address}/ws", compression=False) as new,
            ):
                await new.send({"type": "login", "name": "Roamer"})
                await wait_until(lambda: first.connection is not replaced)
                nursery.start_soon(read_old)  # the old one is closed behind what it owes
                received = [await receive_json(new)]
                while received[-1]["type"] != "welcome":
                    received.append(await receive_json(new))
                assert await request(pub, grouped("members", "g3")) == {
                    "type": "members",
                    "group": "g3",
                    "names": ["Roamer"],
                }
                await pub.send(grouped("publish", "g3", text="live"))
                last += 1
                while received[-1].get("seq") != last:
                    received.append(await receive_json(new))
    assert old_closed == [1008]
    return old_seqs, received, last


async def test_takeover_inherits_subscriptions() -> None:
    with trio.fail_after(30):
        old_seqs, received, last = await takeover_of_a_stalled_subscriber()
    new_seqs = [m["seq"] for m in received if m["type"] == "grouped"]
    assert [m for m in received if m["type"] != "grouped"] == [
        {"type": "welcome", "name": "Roamer"}
    ]
    # Each message once, in order, across the two connections: what waited for the old
    # one went to the new one.
    assert old_seqs + new_seqs == list(range(1, last + 1))
    assert len(new_seqs) >= 3


async def test_takeover_welcome_comes_before_the_inherited_messages() -> None:
    with trio.fail_after(30):
        _old_seqs, received, _last = await takeover_of_a_stalled_subscriber()
    assert received[0] == {"type": "welcome", "name": "Roamer"}


async def test_grouped_with_a_websockets_client_and_compression(demo_address: Any) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with ws_connect(f"ws://{address}/ws") as ws, logged_in(address, "Pub") as pub:
            assert ws.protocol.extensions, "permessage-deflate was negotiated"
            await ws.send(json.dumps({"type": "login", "name": "Deflated"}))
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps(grouped("subscribe", "z")))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            for i in range(20):
                await pub.send(grouped("publish", "z", text="x" * 200 + str(i)))
            seqs = [json.loads(await ws.recv())["seq"] for _ in range(20)]
            assert seqs == list(range(1, 21))


async def test_subscribed_and_replay_come_before_the_next_reply(demo_address: Any) -> None:
    _app, address = demo_address
    with trio.fail_after(10):
        async with logged_in(address, "Pub") as pub, logged_in(address, "Eager") as eager:
            for i in range(3):
                await pub.send(grouped("publish", "order", text=str(i)))
            await request(pub, {"type": "ping"})
            # Pipelined: the pong must not overtake the subscribed reply and the replay.
            await eager.send(grouped("subscribe", "order", since=0))
            await eager.send({"type": "ping"})
            kinds = [(await receive_json(eager))["type"] for _ in range(5)]
            assert kinds == ["subscribed", "grouped", "grouped", "grouped", "pong"]
