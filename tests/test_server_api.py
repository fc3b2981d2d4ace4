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
import pytest
import trio
import trio.testing

from trio_ws import App, HttpResponse, ServerConfig
from trio_ws._limits import RateLimiter
from trio_ws.brokers import BrokerUnavailable, MemoryBroker
from trio_ws.demo.app import create_app

from .conftest import expect_closed, logged_in, receive_json, running, split_address

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


async def nothing_was_published(address: str, queue: str) -> None:
    """The next publish to ``queue`` gets seq 1: nothing was published to it before."""
    answer = await call(address, "POST", "/api/publish", {"queue": queue, "data": "probe"})
    assert answer.json() == {"seq": 1}


def api_app(
    *,
    api_rate: tuple[int, float] | None = None,
    max_api_body_size: int | None = None,
    **kwargs: Any,
) -> App:
    """The demo app with the API on (``api_rate`` and ``max_api_body_size`` as App's)."""
    kwargs.setdefault("api_key", KEY)
    app = create_app(ticks_per_second=0.001, **kwargs)
    assert app.api is not None
    if api_rate is not None:
        app.api.limiter = RateLimiter(*api_rate)
    if max_api_body_size is not None:
        app.api.max_body_size = max_api_body_size
    return app


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


async def test_publish_with_a_key_can_be_retracted_by_it() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            body = {"queue": "g1", "data": {"n": 1}, "key": "k1"}
            assert (await call(address, "POST", "/api/publish", body)).json() == {"seq": 1}
            assert await app.broker.retract("g1", "k1") == 1


async def test_publish_refuses_a_bad_queue_name_with_its_code() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/publish", {"queue": "x" * 300, "data": "t"})
            assert (answer.status, answer.error()) == (400, "bad_group")


async def test_a_queue_publish_rate_is_a_429() -> None:
    app = api_app()
    app.queue("slow", max_publish_rate=(1, 3600))
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            body = {"queue": "slow", "data": "t"}
            assert (await call(address, "POST", "/api/publish", body)).status == 200
            answer = await call(address, "POST", "/api/publish", body)
            assert (answer.status, answer.error()) == (429, "rate_limited")


async def test_publish_many_publishes_in_order_with_consecutive_seqs() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "ann") as ann:
            await ann.send({"type": "grouped", "action": "subscribe", "group": "g1"})
            assert (await receive_json(ann))["type"] == "subscribed"
            body = {
                "queue": "g1",
                "messages": [{"data": {"n": 1}, "key": "k"}, {"data": "text"}, {"data": {"n": 3}}],
            }
            answer = await call(address, "POST", "/api/publish_many", body)
            assert (answer.status, answer.json()) == (200, {"seqs": [1, 2, 3]})
            assert json.loads(await ann.receive()) == {"n": 1, "seq": 1}
            assert await ann.receive() == "text"
            assert json.loads(await ann.receive()) == {"n": 3, "seq": 3}
            assert await app.broker.retract("g1", "k") == 1  # keys per message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"queue": "g1"}, "'messages' must be a list of 1 to 1000 messages"),
        ({"queue": "g1", "messages": []}, "'messages' must be a list of 1 to 1000 messages"),
        ({"queue": "g1", "messages": {"data": "x"}}, "'messages' must be a list of 1 to 1000"),
        (
            {"queue": "g1", "messages": [{"data": "x"}] * 1001},
            "'messages' must be a list of 1 to 1000 messages",
        ),
        ({"queue": "g1", "messages": [{"data": "x"}, "y"]}, "messages[1] must be an object"),
        ({"queue": "g1", "messages": [{"data": 3}]}, "messages[0]: 'data' must be a JSON object"),
        ({"queue": "g1", "messages": [{"key": "k"}]}, "messages[0]: 'data' is required"),
        ({"queue": "g1", "messages": [{"data": "x", "key": ""}]}, "messages[0]: 'key' must be"),
        ({"messages": [{"data": "x"}]}, "'queue' must be a non-empty string"),
    ],
)
async def test_publish_many_refuses_bad_fields_and_publishes_nothing(
    body: dict[str, Any], message: str
) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/publish_many", body)
            assert (answer.status, answer.error()) == (400, "bad_request")
            assert answer.json()["message"].startswith(message)
            await nothing_was_published(address, "g1")


async def test_publish_many_counts_each_message_against_the_queue_rate() -> None:
    app = api_app()
    app.queue("slow", max_publish_rate=(2, 3600))
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            three = {"queue": "slow", "messages": [{"data": "t"}] * 3}
            answer = await call(address, "POST", "/api/publish_many", three)
            assert (answer.status, answer.error()) == (429, "rate_limited")
            two = {"queue": "slow", "messages": [{"data": "t"}] * 2}
            answer = await call(address, "POST", "/api/publish_many", two)
            assert answer.json() == {"seqs": [1, 2]}  # the refused three took no token


# ---------------------------------------------------------------------------------------
# Send, disconnect, members, info


async def test_send_reaches_the_named_client_and_an_unknown_name_is_a_404() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "Bob") as bob:
            body = {"to": "BOB", "data": {"type": "note", "text": "hi"}}
            answer = await call(address, "POST", "/api/send", body)
            assert (answer.status, answer.json()) == (200, {"sent": True})
            assert await receive_json(bob) == {"type": "note", "text": "hi"}
            answer = await call(address, "POST", "/api/send", {"to": "bob", "data": "plain"})
            assert answer.status == 200
            assert await bob.receive() == "plain"
            answer = await call(address, "POST", "/api/send", {"to": "nobody", "data": "x"})
            assert (answer.status, answer.error()) == (404, "unknown_client")


async def test_disconnect_closes_the_client_with_the_code_and_reason() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "carol") as carol:
            body = {"name": "Carol", "code": 4003, "reason": "banned"}
            answer = await call(address, "POST", "/api/disconnect", body)
            assert (answer.status, answer.json()) == (200, {"disconnected": True})
            closed = await expect_closed(carol)
            assert (closed.code, closed.reason) == (4003, "banned")
            answer = await call(address, "POST", "/api/disconnect", {"name": "nobody"})
            assert (answer.status, answer.error()) == (404, "unknown_client")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "carol", "code": 1001},
        {"name": "carol", "code": 2999},
        {"name": "carol", "code": 5000},
        {"name": "carol", "code": "4000"},
        {"name": "carol", "code": True},
        {"name": "carol", "reason": "x" * 124},
        {"name": "carol", "reason": 7},
        {"name": ""},
        {"code": 1000},
    ],
)
async def test_disconnect_refuses_bad_fields(body: dict[str, Any]) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "carol") as carol:
            answer = await call(address, "POST", "/api/disconnect", body)
            assert (answer.status, answer.error()) == (400, "bad_request")
            await carol.send({"type": "echo", "text": "still here"})
            assert (await receive_json(carol))["text"] == "still here"


async def test_a_long_reason_is_cut_at_a_character_boundary() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "carol") as carol:
            body = {"name": "carol", "code": 4000, "reason": "é" * 100}  # 200 bytes
            assert (await call(address, "POST", "/api/disconnect", body)).status == 200
            closed = await expect_closed(carol)
            assert (closed.code, closed.reason) == (4000, "é" * 61)


async def test_members_and_info_describe_the_node() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "dora") as dora:
            await dora.send({"type": "grouped", "action": "subscribe", "group": "g1"})
            await receive_json(dora)
            answer = await call(address, "GET", "/api/members?queue=g1")
            assert answer.json() == {"queue": "g1", "members": ["dora"]}
            answer = await call(address, "GET", "/api/members?queue=empty")
            assert answer.json() == {"queue": "empty", "members": []}
            for query in ("", "?queue=", "?queue=a&queue=b", "?queue=g1&extra=1", "?group=g1"):
                answer = await call(address, "GET", f"/api/members{query}")
                assert (answer.status, answer.error()) == (400, "bad_request")
            answer = await call(address, "GET", "/api/members?queue=no%20spaces")
            assert (answer.status, answer.error()) == (400, "bad_group")
            info = (await call(address, "GET", "/api/info")).json()
            assert info["node"] == app.broker.node_id
            assert info["connections"] == 1
            assert info["clients"] == 1
            assert [n["id"] for n in info["nodes"]] == [app.broker.node_id]
            assert {q["name"]: q["subscribers"] for q in info["queues"]}["g1"] == 1


async def test_head_of_a_get_endpoint_has_no_body() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            host, port = split_address(address)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(request_bytes("HEAD", "/api/info"))
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert body == b""


# ---------------------------------------------------------------------------------------
# Errors of the request itself


async def test_the_api_is_off_without_a_key() -> None:
    app = create_app(ticks_per_second=0.001)
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            for path in ("/api/publish", "/api/openapi.json"):
                answer = await call(address, "POST", path, {"queue": "g", "data": "t"})
                assert answer.status == 404
    assert app.api is None


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        (None, ()),
        ("wrong-key", ()),
        (KEY + "x", ()),
        (None, (("Authorization", f"Basic {KEY}"),)),
        (None, (("Authorization", KEY),)),
    ],
)
async def test_a_missing_or_wrong_key_is_a_401(
    key: str | None, extra: tuple[tuple[str, str], ...]
) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(
                address, "POST", "/api/publish", {"queue": "g", "data": "t"}, key=key, headers=extra
            )
            assert (answer.status, answer.error()) == (401, "unauthorized")
            assert answer.headers["www-authenticate"] == 'Bearer realm="trio_ws"'
            await nothing_was_published(address, "g")


async def test_a_key_in_the_query_is_not_accepted() -> None:
    """A query string ends up in access logs; the key travels in a header only."""
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "GET", f"/api/info?token={KEY}", key=None)
            assert (answer.status, answer.error()) == (401, "unauthorized")


async def test_an_exact_route_of_the_app_wins_over_the_api_prefix() -> None:
    app = api_app()
    app.router.add("/api/custom", lambda _request: HttpResponse(200, "mine\n"))
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "GET", "/api/custom", key=None)
            assert (answer.status, answer.body) == (200, b"mine\n")
            answer = await call(address, "GET", "/api/customer")
            assert (answer.status, answer.error()) == (404, "not_found")


async def test_unknown_endpoints_are_404_and_wrong_methods_405() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/nothing", {})
            assert (answer.status, answer.error()) == (404, "not_found")
            answer = await call(address, "GET", "/api/publish")
            assert (answer.status, answer.error()) == (405, "method_not_allowed")
            assert answer.headers["allow"] == "POST"
            answer = await call(address, "DELETE", "/api/info")
            assert (answer.status, answer.error()) == (405, "method_not_allowed")
            assert answer.headers["allow"] == "GET, HEAD"


async def test_the_openapi_document_is_served_without_a_key() -> None:
    from importlib import resources

    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "GET", "/api/openapi.json", key=None)
            assert answer.status == 200
            expected = resources.files("trio_ws").joinpath("openapi.json").read_bytes()
            assert answer.body == expected
            document = answer.json()
            assert document["openapi"].startswith("3.")
            assert set(document["paths"]) == {
                f"/api/{name}"
                for name in (
                    "publish",
                    "publish_many",
                    "send",
                    "disconnect",
                    "members",
                    "info",
                    "openapi.json",
                )
            }


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'"text"', "bad_json"),
        (b'{"queue": "g", "data": NaN}', "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[" * 20000 + b"]" * 20000, "bad_json"),
        (b'{"data": "t"}', "bad_request"),
        (b'{"queue": 5, "data": "t"}', "bad_request"),
        (b'{"queue": "g"}', "bad_request"),
        (b'{"queue": "g", "data": 5}', "bad_request"),
        (b'{"queue": "g", "data": [1]}', "bad_request"),
        (b'{"queue": "g", "data": "t", "key": 3}', "bad_request"),
        (b'{"queue": "g", "data": "t", "key": null}', "bad_request"),
        (b'{"queue": "g", "data": "t", "key": ""}', "bad_request"),
    ],
)
async def test_bad_bodies_are_a_400_with_a_code(raw: bytes, code: str) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/publish", raw_body=raw)
            assert (answer.status, answer.error()) == (400, code)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_a_body_that_is_not_json_by_type_is_a_415(content_type: str | None) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(
                address,
                "POST",
                "/api/publish",
                {"queue": "g", "data": "t"},
                content_type=content_type,
            )
            assert (answer.status, answer.error()) == (415, "unsupported_media_type")


async def test_a_json_type_with_a_charset_is_accepted() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(
                address,
                "POST",
                "/api/publish",
                {"queue": "g", "data": "t"},
                content_type="Application/JSON; charset=utf-8",
            )
            assert answer.json() == {"seq": 1}


async def test_no_length_or_a_chunked_body_is_a_411() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/publish", {"q": 1}, length=False)
            assert (answer.status, answer.error()) == (411, "length_required")
            chunk = b'{"queue": "g", "data": "t"}'
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
            answer = await call(
                address,
                "POST",
                "/api/publish",
                raw_body=chunked,
                length=False,
                headers=(("Transfer-Encoding", "chunked"),),
            )
            assert (answer.status, answer.error()) == (411, "length_required")
            await nothing_was_published(address, "g")


@pytest.mark.parametrize("length", ["-1", "1e3", "12, 13", " ", "+5", "٣"])
async def test_a_malformed_length_is_a_400(length: str) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(
                address,
                "POST",
                "/api/publish",
                raw_body=b"{}",
                length=False,
                headers=(("Content-Length", length),),
            )
            assert answer.status == 400


async def test_a_body_over_the_limit_is_refused_without_being_read() -> None:
    """The 413 comes from the head alone: the server answers a 10 MB Content-Length while
    not one byte of the body was sent."""
    app = api_app(max_api_body_size=1024)
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            head = request_bytes("POST", "/api/publish", raw_body=b"", length=False)
            head = head.replace(b"\r\n\r\n", b"\r\nContent-Length: 10000000\r\n\r\n")
            answer = await raw_request(address, head)
            assert (answer.status, answer.error()) == (413, "body_too_large")
            exact = {"queue": "g", "data": "x" * 1000}
            size = len(json.dumps(exact).encode())
            exact["data"] = "x" * (1000 + 1024 - size)
            assert (await call(address, "POST", "/api/publish", exact)).status == 200
            exact["data"] += "x"
            answer = await call(address, "POST", "/api/publish", exact)
            assert (answer.status, answer.error()) == (413, "body_too_large")


async def test_a_body_sent_after_the_head_is_read(autojump_clock: trio.abc.Clock) -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            payload = json.dumps({"queue": "g", "data": "late"}).encode()
            head = request_bytes("POST", "/api/publish", raw_body=payload)
            head = head[: -len(payload)]
            answer = await raw_request(address, head, then=payload)
            assert answer.json() == {"seq": 1}


async def test_a_body_of_many_reads_is_read_whole() -> None:
    app = api_app()
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address, logged_in(address, "max") as max_:
            await max_.send({"type": "grouped", "action": "subscribe", "group": "big"})
            await receive_json(max_)
            text = "".join(chr(0x41 + i % 26) for i in range(60_000))
            data = request_bytes("POST", "/api/publish", {"queue": "big", "data": text})
            host, port = split_address(address)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                for start in range(0, len(data), 1000):  # many small writes
                    await stream.send_all(data[start : start + 1000])
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert await max_.receive() == text


async def test_a_body_that_never_comes_is_a_408(autojump_clock: trio.abc.Clock) -> None:
    app = api_app(config=ServerConfig(handshake_timeout=5))
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            data = request_bytes("POST", "/api/publish", raw_body=b'{"queue": "g", "data": "t"}')
            answer = await raw_request(address, data[:-5])  # the last 5 bytes never sent
            assert (answer.status, answer.error()) == (408, "body_timeout")
            await nothing_was_published(address, "g")


async def test_requests_over_the_api_rate_are_a_429() -> None:
    app = api_app(api_rate=(2, 3600))
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            assert (await call(address, "GET", "/api/info")).status == 200
            assert (await call(address, "GET", "/api/info")).status == 200
            answer = await call(address, "GET", "/api/info")
            assert (answer.status, answer.error()) == (429, "rate_limited")
            assert int(answer.headers["retry-after"]) >= 1
            # A request without the key spends nothing of the legitimate caller's rate.
            assert (await call(address, "GET", "/api/info", key=None)).status == 401


async def test_a_broker_that_cannot_be_reached_is_a_503() -> None:
    class Unreachable(MemoryBroker):
        async def publish(self, *args: Any, **kwargs: Any) -> int:
            raise BrokerUnavailable

        async def nodes(self) -> list[Any]:
            raise BrokerUnavailable

    app = App(broker=Unreachable(), api_key=KEY)  # not the demo: its ticker would fail
    with trio.fail_after(TIME_LIMIT):
        async with running(app) as address:
            answer = await call(address, "POST", "/api/publish", {"queue": "g", "data": "t"})
            assert (answer.status, answer.error()) == (503, "broker_unavailable")
            assert answer.headers["retry-after"] == "1"
            answer = await call(address, "GET", "/api/info")
            assert (answer.status, answer.error()) == (503, "broker_unavailable")


def test_the_api_defaults_are_those_of_security_md() -> None:
    from trio_ws._api import DEFAULT_API_RATE, MAX_API_BODY_SIZE

    assert MAX_API_BODY_SIZE == 64 * 1024
    assert DEFAULT_API_RATE == (1000, 1.0)
    assert ServerConfig().handshake_timeout == 10.0
    api = App(api_key=KEY).api
    assert api is not None
    assert api.max_body_size == 64 * 1024
    assert api.limiter is not None
    assert (api.limiter.count, api.limiter.period) == (1000, 1.0)


def test_a_key_that_cannot_travel_in_a_header_is_refused() -> None:
    for key in ("", "with space", "tab\t", "é"):
        with pytest.raises(ValueError, match="API key"):
            App(api_key=key)


# ---------------------------------------------------------------------------------------
# Two nodes


async def test_the_api_of_one_node_reaches_clients_on_another() -> None:
    broker_a = MemoryBroker(node_id="a")
    app_a = api_app(broker=broker_a)
    app_b = create_app(broker=broker_a.peer("b"), ticks_per_second=0.001)  # no API of its own
    with trio.fail_after(TIME_LIMIT):
        async with running(app_a) as address_a, running(app_b) as address_b:
            async with logged_in(address_b, "Erin") as erin, logged_in(address_b, "fay") as fay:
                await erin.send({"type": "grouped", "action": "subscribe", "group": "g1"})
                await receive_json(erin)
                answer = await call(address_a, "POST", "/api/publish", {"queue": "g1", "data": "p"})
                assert answer.json() == {"seq": 1}
                assert await erin.receive() == "p"
                answer = await call(address_a, "POST", "/api/send", {"to": "erin", "data": "s"})
                assert answer.json() == {"sent": True}
                assert await erin.receive() == "s"
                answer = await call(address_a, "GET", "/api/members?queue=g1")
                assert answer.json()["members"] == ["Erin"]
                info = (await call(address_a, "GET", "/api/info")).json()
                assert [(n["id"], n["clients"]) for n in info["nodes"]] == [("a", 0), ("b", 2)]
                body = {"name": "ERIN", "code": 4010, "reason": "moved"}
                answer = await call(address_a, "POST", "/api/disconnect", body)
                assert answer.json() == {"disconnected": True}
                closed = await expect_closed(erin)
                assert (closed.code, closed.reason) == (4010, "moved")
                # Only Erin: Fay on the same node is still served.
                await fay.send({"type": "echo", "text": "here"})
                assert (await receive_json(fay))["text"] == "here"
