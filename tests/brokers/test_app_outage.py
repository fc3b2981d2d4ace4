"""An app on Redis while Redis is gone: local clients are served, what needs the broker is
refused with a clear code, health says so, and everything works again when Redis is back."""

from __future__ import annotations

import json

import trio

from tests.conftest import body_of, http_exchange, logged_in, receive_json, running
from tests.redis_fixture import RedisServer
from trio_ws.brokers.redis import RedisBroker
from trio_ws.demo.app import create_app


async def healthz(address: str) -> dict[str, object]:
    """What a load balancer sees (polled: the state is seen from outside, over HTTP)."""
    request = f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
    body = json.loads(body_of(await http_exchange(address, request)))
    assert isinstance(body, dict)
    return body


async def test_a_node_serves_its_clients_through_a_broker_outage(
    fresh_redis: RedisServer,
) -> None:
    broker = RedisBroker(fresh_redis.url, operation_timeout=0.5, max_reconnect_seconds=0.5)
    app = create_app(broker=broker, ticks_per_second=0.001)
    with trio.fail_after(30):
        async with running(app) as address:
            async with logged_in(address, "alice") as alice, logged_in(address, "bob") as bob:
                assert (await healthz(address))["status"] == "ok"
                await bob.send({"type": "grouped", "action": "subscribe", "group": "news"})
                before = await receive_json(bob)
                await alice.send(
                    {"type": "grouped", "action": "publish", "group": "news", "text": "old"}
                )
                assert (await receive_json(bob))["seq"] == 1
                fresh_redis.kill()
                with trio.fail_after(5):
                    while (await healthz(address))["status"] != "degraded":  # noqa: ASYNC110
                        await trio.sleep(0.05)
                health = await healthz(address)
                assert health["broker"]["state"] == "down"  # type: ignore[index]
                # Local work goes on: echo, and routing to a client of this node.
                await alice.send({"type": "echo", "text": "still here"})
                assert await receive_json(alice) == {"type": "echo", "text": "still here"}
                await alice.send({"type": "routed", "to": "bob", "text": "local"})
                assert await receive_json(bob) == {
                    "type": "routed",
                    "from": "alice",
                    "text": "local",
                }
                # What needs the broker is refused, at once and in words.
                await alice.send(
                    {"type": "grouped", "action": "publish", "group": "g", "text": "lost?"}
                )
                reply = await receive_json(alice)
                assert (reply["type"], reply["code"]) == ("error", "broker_unavailable")
                assert "trio_ws_broker_up" in app.metrics_text()
                assert broker.statistics().outages >= 1
                fresh_redis.restart()
                with trio.fail_after(10):
                    while (await healthz(address))["status"] != "ok":  # noqa: ASYNC110
                        await trio.sleep(0.05)
                # Redis lost everything: bob, subscribed across the outage, is told the
                # history started again before its first new message.
                notice = await receive_json(bob)
                assert (notice["type"], notice["group"], notice["seq"]) == ("subscribed", "news", 0)
                assert notice["epoch"] != before["epoch"]
                await alice.send(
                    {"type": "grouped", "action": "publish", "group": "news", "text": "new"}
                )
                again = await receive_json(bob)
                assert (again["seq"], again["text"]) == (1, "new")
                await alice.send({"type": "grouped", "action": "subscribe", "group": "g"})
                assert (await receive_json(alice))["type"] == "subscribed"
                await bob.send({"type": "grouped", "action": "publish", "group": "g", "text": "ok"})
                assert (await receive_json(alice))["text"] == "ok"
