"""``demos/backend_publisher.py`` and ``demos/resuming_client.py`` as a user runs them.

The backend is a subprocess serving plain HTTP; what it publishes goes through a real
``redis-server`` to a demo node served in the test, and reaches a ``websockets`` client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import trio
from websockets.trio.client import connect as websockets_connect

from tests.conftest import running
from tests.redis_fixture import start_redis
from trio_ws.brokers.redis import RedisBroker
from trio_ws.demo.app import create_app

from .test_demos import free_port, spawn


def post(url: str, fields: dict[str, str]) -> tuple[int, Any]:
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_backend_publisher_reaches_a_subscriber_through_redis(tmp_path: Path) -> None:
    with trio.fail_after(40), start_redis() as redis:
        broker = RedisBroker(redis.url)
        async with running(create_app(broker=broker)) as address:
            await broker.wait_up()
            async with websockets_connect(f"ws://{address}/ws") as ws:
                await ws.send(json.dumps({"type": "login", "name": "frank"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                await ws.send(
                    json.dumps({"type": "grouped", "action": "subscribe", "group": "lobby"})
                )
                assert json.loads(await ws.recv())["type"] == "subscribed"

                port = free_port()
                proc, out, err = spawn(
                    tmp_path, "backend_publisher.py", "--redis", redis.url, "--port", str(port)
                )
                try:
                    while "backend on http://" not in out.read_text():
                        assert proc.poll() is None, err.read_text()
                        await trio.sleep(0.02)
                    base = f"http://127.0.0.1:{port}"
                    answer = await trio.to_thread.run_sync(
                        post, f"{base}/announce/lobby", {"text": "deployed v2"}
                    )
                    assert answer == (200, {"group": "lobby", "seq": 1})
                    assert json.loads(await ws.recv()) == {
                        "type": "grouped",
                        "group": "lobby",
                        "from": "backend",
                        "text": "deployed v2",
                        "seq": 1,
                    }
                    status, body = await trio.to_thread.run_sync(
                        post, f"{base}/announce/not%20a%20group", {"text": "x"}
                    )
                    assert status == 400, body
                    status, body = await trio.to_thread.run_sync(post, f"{base}/other", {})
                    assert status == 404
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)

                # Once, from a script.
                proc, out, err = spawn(
                    tmp_path, "backend_publisher.py", "--redis", redis.url, "--once", "lobby", "hi"
                )
                code = await trio.to_thread.run_sync(proc.wait, 20)
                assert code == 0, err.read_text()
                assert json.loads(out.read_text()) == {"group": "lobby", "seq": 2}
                got = json.loads(await ws.recv())
                assert (got["seq"], got["text"]) == (2, "hi")


async def test_resuming_client_demo_prints_what_it_receives(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running(create_app(ticks_per_second=20)) as address:
            proc, out, err = spawn(
                tmp_path,
                "resuming_client.py",
                "--url",
                f"ws://{address}/ws",
                "--name",
                "gina",
                "--count",
                "5",
            )
            code = await trio.to_thread.run_sync(proc.wait, 25)
            text = out.read_text()
            assert code == 0, err.read_text()
            lines = text.splitlines()
            assert lines[0] == "logged in as gina"
            assert "[lobby #1] gina: gina is here" in lines
            assert any(line.startswith("[stream #") for line in lines)
            assert lines[-1] == "connections 1, gaps 0"
