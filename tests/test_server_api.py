"""The server API (``/api/``): each endpoint and each error, on a real socket.

Requests are written by hand (so that a test can send what no well-behaved client would:
chunked bodies, no length, a body over the limit, a slow body) and the answers parsed by
h11, an HTTP implementation nobody here wrote. The OpenAPI contract is checked by
schemathesis in tests/e2e/test_server_api_contract.py, the stdlib client in
tests/e2e/test_api_client.py.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio
import trio.testing

from trio_ws import App
from trio_ws.demo.app import create_app

from .conftest import logged_in, receive_json, running, split_address

KEY = "test-key-0123456789"
TIME_LIMIT = 10


class Answer:
    """A parsed HTTP response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json; charset=utf-8"
        return json.loads(self.body)

    def error(self) -> str:
        answer = self.json()
        assert set(answer) == {"error", "message"}
        assert isinstance(answer["message"], str)
        assert answer["message"]
        code = answer["error"]
        assert isinstance(code, str)
        return code


async def raw_request(address: str, data: bytes, *, then: bytes = b"") -> Answer:
    """Send ``data`` (a whole request, written by hand), then ``then``; parse the answer."""
    host, port = split_address(address)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(data)
        if then:
            await stream.send_all(then)
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        parser.send(h11.EndOfMessage())
        status = 0
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    chunk = b""
                parser.receive_data(chunk)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Answer(status, headers, body)


def request_bytes(
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    content_type: str | None = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
    raw_body: bytes | None = None,
    length: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    payload = raw_body
    if payload is None and body is not None:
        payload = json.dumps(body).encode()
    if payload is not None:
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        if length:
            lines.append(f"Content-Length: {len(payload)}")
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (payload or b"")


async def call(address: str, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    return await raw_request(address, request_bytes(method, path, body, **kwargs))


def api_app(**kwargs: Any) -> App:
    kwargs.setdefault("api_key", KEY)
    return create_app(ticks_per_second=0.001, **kwargs)


# ---------------------------------------------------------------------------------------
# Publish


async def test_publish_reaches_subscribers_and_answers_the_seq() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "ann") as ann:
            await ann.send({"type": "grouped", "action": "subscribe", "group": "g1"})
            assert (await receive_json(ann))["type"] == "subscribed"
            answer = await call(address, "POST", "/api/publish", {"queue": "g1", "data": {"n": 1}})
            assert answer.status == 200
            assert answer.json() == {"seq": 1}
            assert json.loads(await ann.receive()) == {"n": 1, "seq": 1}  # the seq stamped in
            answer = await call(address, "POST", "/api/publish", {"queue": "g1", "data": "text"})
            assert answer.json() == {"seq": 2}
            assert await ann.receive() == "text"
