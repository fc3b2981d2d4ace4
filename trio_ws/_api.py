"""The server API: HTTP endpoints under ``/api/`` for backends, on the WebSocket port.

Off unless the app has an API key (``App(api_key=...)``). Every endpoint but the OpenAPI
document (``/api/openapi.json``, the contract of the others) needs ``Authorization: Bearer
<key>``, compared in constant time. JSON in, JSON out; every error is ``{"error": code,
"message": text}`` with a status that says what to do about it (docs/server-api.md).

Theory of operation
-------------------
A request is judged by its head before a byte of its body is read, cheapest check first:
the endpoint (404), the method (405), the key (401), the rate (429), the media type (415),
the framing (411: ``Content-Length`` only, no chunked bodies) and the size (413). Only then
is the body read, exactly ``Content-Length`` bytes within the server's body timeout (408),
parsed (400) and acted on through the app's own verbs, which reach every node through the
broker: :meth:`App.publish`, :meth:`App.publish_many`, :meth:`ClientRegistry.send`,
:meth:`ClientRegistry.disconnect`, :meth:`App.members`. A broker that cannot be reached is
a 503 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio

from ._clients import RecipientBusy, UnknownClient
from ._http import BodyReader, HttpResponse
from ._limits import RateLimiter
from ._metrics import queue_stats
from ._queue_model import MAX_PUBLISH_MANY, QueueError, check_queue_name
from .brokers import BrokerUnavailable
from .protocol._handshake import Request

if TYPE_CHECKING:
    from ._app import App

__all__ = ["API_PREFIX", "DEFAULT_API_RATE", "MAX_API_BODY_SIZE", "ServerApi", "check_api_key"]

log = logging.getLogger("trio_ws.api")

API_PREFIX = "/api/"
MAX_API_BODY_SIZE = 64 * 1024
"""The largest request body read (bytes); a queue message larger than this belongs in a
file store with its URL in the message."""
DEFAULT_API_RATE = (1000, 1.0)
"""Requests per seconds the API answers, in bursts of the count: a runaway backend loop
must not starve the WebSocket clients of the node."""
_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes
_JSON = "application/json"


class ApiProblem(Exception):
    """An error answer: status, code and message (and headers)."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> HttpResponse:
        return _json_response(
            self.status, {"error": self.code, "message": self.message}, self.headers
        )


def _json_response(
    status: int, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return HttpResponse(
        status,
        json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n",
        "application/json; charset=utf-8",
        (("Cache-Control", "no-store"), *headers),
    )


def _bad(message: str) -> ApiProblem:
    return ApiProblem(400, "bad_request", message)


def _queue_problem(exc: QueueError) -> ApiProblem:
    """A queue's refusal of a publish: 429 for its rate, 400 for the rest (its name)."""
    return ApiProblem(429 if exc.code == "rate_limited" else 400, exc.code, exc.message)


def _string(body: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    if field not in body and not required:
        return None
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise _bad(f"{field!r} must be a non-empty string")
    return value


def _message(body: dict[str, Any]) -> dict[str, Any] | str:
    if "data" not in body:
        raise _bad("'data' is required: a JSON object or a string")
    data = body["data"]
    if not isinstance(data, dict | str):
        raise _bad("'data' must be a JSON object or a string")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


Endpoint = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]


class ServerApi:
    """The ``/api/`` endpoints of one app (mounted by :class:`~trio_ws.App` when it has an
    API key).

    Args:
        app: the app whose queues and clients the API reaches.
        key: the API key (``Authorization: Bearer <key>``).
        rate: at most ``count`` requests per ``period`` seconds (a token bucket shared by
            every caller: there is one key), ``None`` for no limit.
        max_body_size: the largest request body read, in bytes (larger: 413).
    """

    def __init__(
        self,
        app: App,
        key: str,
        *,
        rate: tuple[int, float] | None = DEFAULT_API_RATE,
        max_body_size: int = MAX_API_BODY_SIZE,
    ) -> None:
        check_api_key(key)
        if max_body_size < 1:
            raise ValueError(f"max_body_size must be positive, not {max_body_size}")
        self.app = app
        self._key = key.encode()
        self.limiter = RateLimiter(*rate) if rate is not None else None
        self.max_body_size = max_body_size
        # Each endpoint: its method, the query parameters it takes, its function.
        self._endpoints: dict[str, tuple[str, frozenset[str], Endpoint]] = {
            "publish": ("POST", frozenset(), self._publish),
            "publish_many": ("POST", frozenset(), self._publish_many),
            "send": ("POST", frozenset(), self._send),
            "disconnect": ("POST", frozenset(), self._disconnect),
            "members": ("GET", frozenset({"queue"}), self._members),
            "info": ("GET", frozenset(), self._info),
        }
        self._openapi: bytes | None = None

    # ------------------------------------------------------------------ the route

    async def respond(self, request: Request, read_body: BodyReader) -> HttpResponse:
        """Answer one request under ``/api/`` (the router's prefix route)."""
        try:
            return await self._respond(request, read_body)
        except ApiProblem as problem:
            if problem.status >= 500:
                log.warning("%s %s: %s", request.method, request.path, problem.message)
            return problem.response()

    async def _respond(self, request: Request, read_body: BodyReader) -> HttpResponse:
        name = request.path[len(API_PREFIX) :]
        if name == "openapi.json":
            _allow(request, "GET")
            return HttpResponse(200, self.openapi(), "application/json; charset=utf-8")
        entry = self._endpoints.get(name)
        if entry is None:
            raise ApiProblem(404, "not_found", f"no endpoint {request.path}")
        method, parameters, endpoint = entry
        _allow(request, method)
        if not self._authorized(request):
            raise ApiProblem(
                401,
                "unauthorized",
                "a valid API key is required: Authorization: Bearer <key>",
                (("WWW-Authenticate", 'Bearer realm="trio_ws"'),),
            )
        if self.limiter is not None and not self.limiter.allow(trio.current_time()):
            retry = max(1, math.ceil(self.limiter.period / self.limiter.count))
            raise ApiProblem(
                429, "rate_limited", "too many requests; slow down", (("Retry-After", str(retry)),)
            )
        unknown = set(urllib.parse.parse_qs(request.query, keep_blank_values=True)) - parameters
        if unknown:  # a misspelt parameter would otherwise be silently ignored
            raise _bad(f"unknown query parameters: {', '.join(sorted(unknown))}")
        body = await self._body(request, read_body) if method == "POST" else {}
        try:
            result = await endpoint(request, body)
        except BrokerUnavailable as exc:
            raise ApiProblem(503, "broker_unavailable", str(exc), (("Retry-After", "1"),)) from None
        return _json_response(200, result)

    def _authorized(self, request: Request) -> bool:
        given = b""
        for field, value in request.headers:
            if field.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip().encode()
                break
        return hmac.compare_digest(given, self._key)

    async def _body(self, request: Request, read_body: BodyReader) -> dict[str, Any]:
        media_type = (request.get("content-type") or "").partition(";")[0].strip().lower()
        if media_type != _JSON:
            raise ApiProblem(415, "unsupported_media_type", "the body must be application/json")
        if request.get("transfer-encoding") is not None:
            raise ApiProblem(
                411, "length_required", "send the body with Content-Length, not chunked"
            )
        lengths = {v.strip() for v in request.get_all("content-length")}
        if not lengths:
            raise ApiProblem(411, "length_required", "a body needs a Content-Length")
        length = lengths.pop()
        if lengths or not length.isdigit() or not length.isascii():
            raise _bad("Content-Length must be one decimal number")
        size = int(length)
        if size > self.max_body_size:
            raise ApiProblem(
                413, "body_too_large", f"the body is over the limit of {self.max_body_size} bytes"
            )
        data = await read_body(size)
        if data is None:
            raise ApiProblem(408, "body_timeout", "the body did not arrive in time")
        try:
            body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ApiProblem(400, "bad_json", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiProblem(400, "bad_json", "the body must be a JSON object")
        return body

    def openapi(self) -> bytes:
        """The OpenAPI 3 document of these endpoints (package data, read once)."""
        if self._openapi is None:
            self._openapi = resources.files("trio_ws").joinpath("openapi.json").read_bytes()
        return self._openapi

    # ------------------------------------------------------------------ endpoints

    async def _publish(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        queue = _string(body, "queue")
        assert queue is not None
        message = _message(body)
        key = _string(body, "key", required=False)
        try:
            seq = await self.app.publish(queue, message, key=key)
        except QueueError as exc:
            raise _queue_problem(exc) from None
        return {"seq": seq}

    async def _publish_many(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        queue = _string(body, "queue")
        assert queue is not None
        items = body.get("messages")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_PUBLISH_MANY:
            raise _bad(f"'messages' must be a list of 1 to {MAX_PUBLISH_MANY} messages")
        messages: list[dict[str, Any] | str] = []
        keys: list[str | None] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _bad(f"messages[{i}] must be an object with 'data'")
            try:
                messages.append(_message(item))
                keys.append(_string(item, "key", required=False))
            except ApiProblem as problem:
                raise _bad(f"messages[{i}]: {problem.message}") from None
        try:
            seqs = await self.app.publish_many(queue, messages, keys=keys)
        except QueueError as exc:
            raise _queue_problem(exc) from None
        return {"seqs": seqs}

    async def _send(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        name = _string(body, "to")
        assert name is not None
        message = _message(body)
        try:
            await self.app.clients.send(name, message)
        except UnknownClient as exc:
            raise ApiProblem(404, "unknown_client", exc.message) from None
        except RecipientBusy as exc:
            raise ApiProblem(409, "recipient_busy", exc.message) from None
        return {"sent": True}

    async def _disconnect(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        name = _string(body, "name")
        assert name is not None
        code = body.get("code", 1000)
        if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
            raise _bad("'code' must be 1000 or an application close code (3000-4999)")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > _MAX_REASON_BYTES:
            raise _bad(f"'reason' must be a string of at most {_MAX_REASON_BYTES} characters")
        # Cut to what a Close frame holds, at a character boundary.
        reason = reason.encode()[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        try:
            await self.app.clients.disconnect(name, code, reason)
        except UnknownClient as exc:
            raise ApiProblem(404, "unknown_client", exc.message) from None
        return {"disconnected": True}

    async def _members(self, request: Request, _body: dict[str, Any]) -> dict[str, Any]:
        queues = urllib.parse.parse_qs(request.query).get("queue", [])
        if len(queues) != 1 or not queues[0]:
            raise _bad("give one queue: ?queue=<name>")
        try:
            members = await self.app.members(check_queue_name(queues[0]))
        except QueueError as exc:
            raise ApiProblem(400, exc.code, exc.message) from None
        return {"queue": queues[0], "members": members}

    async def _info(self, _request: Request, _body: dict[str, Any]) -> dict[str, Any]:
        app = self.app
        nodes = await app.broker.nodes()
        return {
            "node": app.broker.node_id,
            "nodes": [
                {"id": n.node_id, "connections": n.connections, "clients": n.clients} for n in nodes
            ],
            "connections": len(app.server.connections),
            "clients": len(app.clients),
            "queues": queue_stats(app)["queues"],
        }


def check_api_key(key: str) -> None:
    """Raise ValueError unless ``key`` can travel in an ``Authorization`` header as is."""
    if not key or any(ord(c) < 0x21 or ord(c) > 0x7E for c in key):
        raise ValueError("an API key must be non-empty printable ASCII without spaces")


def _allow(request: Request, method: str) -> None:
    allowed = (method, "HEAD") if method == "GET" else (method,)
    if request.method not in allowed:
        raise ApiProblem(
            405,
            "method_not_allowed",
            f"{request.path} answers {method} only",
            (("Allow", ", ".join(allowed)),),
        )
