"""The server API of one node on Redis reaching clients of another (the disconnect goes
as a routed close through Redis), and a 503 while Redis is gone."""

from __future__ import annotations

import trio

from tests.conftest import expect_closed, logged_in, receive_json, running
from tests.redis_fixture import RedisServer
from tests.test_server_api import KEY, call
from trio_ws.brokers.redis import RedisBroker
from trio_ws.demo.app import create_app

from .conftest import redis_nodes


async def test_the_api_of_one_node_disconnects_and_sends_to_a_client_of_another(
    redis_server: RedisServer,
) -> None:
    first, second = redis_nodes(redis_server.url, 2)
    assert isinstance(first, RedisBroker)
    assert isinstance(second, RedisBroker)
    with trio.fail_after(20):
        async with (
            running(create_app(broker=first, api_key=KEY, ticks_per_second=0.001)) as one,
            running(create_app(broker=second, ticks_per_second=0.001)) as two,
        ):
            await first.wait_up()
            await second.wait_up()
            async with logged_in(two, "Kim") as kim, logged_in(two, "lee") as lee:
                answer = await call(one, "POST", "/api/send", {"to": "kim", "data": {"n": 1}})
                assert answer.json() == {"sent": True}
                assert await receive_json(kim) == {"n": 1}
                body = {"name": "KIM", "code": 4004, "reason": "a b 4005"}
                answer = await call(one, "POST", "/api/disconnect", body)
                assert answer.json() == {"disconnected": True}
                closed = await expect_closed(kim)
                assert (closed.code, closed.reason) == (4004, "a b 4005")
                await lee.send({"type": "echo", "text": "here"})
                assert (await receive_json(lee))["text"] == "here"
                answer = await call(one, "POST", "/api/disconnect", {"name": "nobody"})
                assert (answer.status, answer.error()) == (404, "unknown_client")


async def test_publish_is_a_503_while_redis_is_gone(fresh_redis: RedisServer) -> None:
    broker = RedisBroker(fresh_redis.url, operation_timeout=0.5, max_reconnect_seconds=0.5)
    app = create_app(broker=broker, api_key=KEY, ticks_per_second=0.001)
    with trio.fail_after(30):
        async with running(app) as address:
            await broker.wait_up()
            body = {"queue": "g", "data": "t"}
            assert (await call(address, "POST", "/api/publish", body)).json() == {"seq": 1}
            fresh_redis.kill()
            answer = await call(address, "POST", "/api/publish", body)
            assert (answer.status, answer.error()) == (503, "broker_unavailable")
            assert answer.headers["retry-after"] == "1"
