"""What a new user meets first: the public names, addresses, hooks, subprotocols, late
auto-subscribe queues, retract's count, and the in-memory testing helpers."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import trio
import trio.testing

import trio_ws
from trio_ws import App, ServerConfig

from .conftest import in_memory, logged_in, receive_json, running


def test_version_and_public_names() -> None:
    assert trio_ws.__version__ == importlib.metadata.version("trio_ws")
    for name in trio_ws.__all__:
        assert hasattr(trio_ws, name), name
    assert trio_ws.ServiceStatistics is not None


async def test_serve_reports_host_and_port_pairs() -> None:
    app = App()
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(app.serve, "127.0.0.1", 0)
        assert isinstance(address, trio_ws.Address)
        host, port = address
        assert host == "127.0.0.1"
        assert isinstance(port, int)
        assert str(address) == f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()
    assert str(trio_ws.Address("::1", 80)) == "[::1]:80"
    assert trio_ws.Address("0.0.0.0", 80).url_host == "127.0.0.1:80"
    assert trio_ws.Address("::", 80).url_host == "[::1]:80"


async def test_an_app_chooses_a_subprotocol() -> None:
    app = App(select_subprotocol=lambda offered: "chat.v2" if "chat.v2" in offered else None)
    with trio.fail_after(5):
        async with running(app) as address:
            async with trio_ws.connect(
                f"ws://{address}/ws", subprotocols=["chat.v1", "chat.v2"]
            ) as conn:
                assert conn.subprotocol == "chat.v2"


async def test_an_auto_subscribe_queue_declared_later_reaches_clients_without_subscriptions(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = App(config=ServerConfig(ping_interval=None))
    with trio.fail_after(10):
        async with in_memory(app) as connect, connect() as conn:
            await conn.send({"type": "login", "name": "early"})
            await receive_json(conn)
            await trio.testing.wait_all_tasks_blocked()
            news = app.queue("news", auto_subscribe=True)  # while "early" is connected
            await trio.testing.wait_all_tasks_blocked()
            assert await news.members() == ["early"]
            await news.publish({"type": "news"})
            assert await receive_json(conn) == {"type": "news", "seq": 1}


async def test_retract_counts_what_it_withdrew_from_the_kept_history() -> None:
    app = App()
    prices = app.queue("prices", history=2)
    await prices.publish({"p": 1}, key="eur")
    await prices.publish({"p": 2}, key="eur")
    assert await prices.retract("eur") == 2  # kept, delivered or not: withdrawn now
    assert await prices.retract("eur") == 0  # nothing left to withdraw
    await prices.publish({"p": 3}, key="usd")
    await prices.publish({"p": 4})
    await prices.publish({"p": 5})
    assert await prices.retract("usd") == 0  # no longer kept: nothing to withdraw


async def test_a_service_can_await_its_client_in_a_conversation() -> None:
    """The supported pattern: a service keeps state in ``client.data``, and the next
    message is dispatched to a service like any other (decoding, checks, rate limit)."""
    app = App()

    @app.service("ask")
    async def ask(client: trio_ws.Client, message: dict[str, Any]) -> None:
        client.data["question"] = message["text"]
        await client.send({"type": "question", "text": "sure?"})

    @app.service("answer", fields={"yes": bool})
    async def answer(client: trio_ws.Client, message: dict[str, Any]) -> None:
        question = client.data.pop("question", None)
        if question is None:
            raise trio_ws.ServiceError("no_question", "nothing was asked")
        await client.send({"type": "done", "text": question, "yes": message["yes"]})

    with trio.fail_after(5):
        async with running(app) as address, logged_in(address, "u") as conn:
            await conn.send({"type": "ask", "text": "delete?"})
            assert await receive_json(conn) == {"type": "question", "text": "sure?"}
            await conn.send({"type": "answer", "yes": True})
            assert await receive_json(conn) == {"type": "done", "text": "delete?", "yes": True}
            await conn.send({"type": "answer", "yes": True})
            reply = await receive_json(conn)
            assert (reply["type"], reply["code"]) == ("error", "no_question")
