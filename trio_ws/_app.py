"""The application layer: login, logical clients, services per message type, routing.

Theory of operation
-------------------
:class:`App` gives the :class:`~trio_ws._server.Server` one handler. For each open
WebSocket it drives a :class:`~trio_ws.protocol._stages.Session` (Handshake -> Login ->
Connected): during Login the app's login policy (the Push Framework's client factory)
decides each attempt, the :class:`ClientRegistry` makes the name unique
(case-insensitively) or hands it over, and the connection becomes a :class:`Client`. In
Connected every JSON message is decoded once and dispatched to the service registered for
its ``"type"``, inside the connection's task: a client's messages are handled in order,
and its work ends when its connection does. A service that raises is logged with its
traceback and the client gets an ``error``; the connection and the server go on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs
import trio

from ._broadcast import BroadcastHub, BroadcastQueue, Subscriber
from ._config import ServerConfig
from ._connection import ConnectionClosed, Message, WebSocketConnection
from ._http import HttpResponse, HttpRouter
from ._login import LoginAccepted, LoginPolicy, LoginRequest, run_policy, unique_names
from ._queue_model import QueueError
from ._server import Server
from .protocol._errors import CloseCode
from .protocol._handshake import Request
from .protocol._stages import (
    AttemptLogin,
    CloseConnection,
    Dispatch,
    Reply,
    Session,
    Stage,
    error_message,
)

log = logging.getLogger("trio_ws.app")

Service = Callable[["Client", Any], Awaitable[None]]
FieldTypes = Mapping[str, type | tuple[type, ...]]


class ServiceError(Exception):
    """Raise from a service to answer the client with ``error`` / ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownClient(ServiceError, KeyError):
    """No client of that name is connected."""

    def __init__(self, name: str) -> None:
        super().__init__("unknown_recipient", f"no client named {name!r} is connected")
        self.name = name

    def __str__(self) -> str:
        return self.message


class Client:
    """A logged-in connection: the Push Framework's logical client.

    Attributes:
        name: the name it logged in with (its key in the registry).
        connection: the WebSocket it speaks through; replaced on a takeover.
        data: free storage for the application.
    """

    def __init__(self, name: str, connection: WebSocketConnection) -> None:
        self.name = name
        self.connection = connection
        self.data: dict[str, Any] = {}
        self.subscriber: Subscriber | None = None
        """Its side of the broadcast queues, made on its first subscription."""

    def __repr__(self) -> str:
        return f"<Client {self.name!r} #{self.connection.id}>"

    @property
    def request(self) -> Request | None:
        return self.connection.request

    async def send(self, message: Message | dict[str, Any]) -> None:
        """Send a JSON object (``dict``), text or bytes. See ``WebSocketConnection.send``."""
        await self.connection.send(message)

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake; the connection's task finishes it."""
        await self.connection.send_close(code, reason)


class ClientRegistry:
    """The logged-in clients of this process, by name (case-insensitive)."""

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in self._clients

    def get(self, name: str) -> Client | None:
        """The client logged in as ``name`` (any case), or ``None``."""
        return self._clients.get(name.casefold())

    def names(self) -> list[str]:
        """The names of every logged-in client, sorted."""
        return sorted(client.name for client in self._clients.values())

    async def send(self, name: str, message: Message | dict[str, Any]) -> None:
        """Send to the client called ``name`` from any task.

        Raises:
            UnknownClient: nobody of that name is connected (or it just disconnected).
        """
        client = self._clients.get(name.casefold())
        if client is None:
            raise UnknownClient(name)
        try:
            await client.connection.send(message)
        except ConnectionClosed:
            raise UnknownClient(name) from None

    def _add(self, client: Client) -> None:
        self._clients[client.name.casefold()] = client

    def _remove(self, client: Client) -> None:
        key = client.name.casefold()
        if self._clients.get(key) is client:
            del self._clients[key]


class _TokenBucket:
    """``rate`` tokens per ``period`` seconds, at most ``rate`` saved up."""

    __slots__ = ("_per_second", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: int, period: float) -> None:
        self._rate = float(rate)
        self._per_second = rate / period
        self._tokens = float(rate)
        self._stamp: float | None = None

    def take(self, now: float) -> bool:
        if self._stamp is not None:
            self._tokens = min(self._rate, self._tokens + (now - self._stamp) * self._per_second)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@attrs.define
class _ServiceEntry:
    handler: Service
    fields: FieldTypes
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    recent: deque[float] = attrs.field(factory=lambda: deque(maxlen=1024))
    """Durations of the latest calls, for percentiles (the Push Framework profiler)."""


@attrs.frozen
class ServiceStatistics:
    """Calls and time spent in one service."""

    calls: int
    errors: int
    mean_seconds: float
    p99_seconds: float
    """Over the latest 1,024 calls."""


def _field_error(message: dict[str, Any], fields: FieldTypes) -> str | None:
    for name, types in fields.items():
        value = message.get(name)
        # bool is an int in Python, not in JSON: refuse true for an int field.
        if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in _as_tuple(types)
        ):
            if value is None and name not in message:
                return f"missing field {name!r}"
            return f"field {name!r} must be {_type_names(types)}"
    return None


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES.get(t, t.__name__) for t in _as_tuple(types))


class App:
    """A real-time application: login policy, services, client registry, HTTP routes.

    Args:
        login: the login policy (client factory); ``unique_names()`` by default.
        on_name_conflict: ``"refuse"`` a login whose name is taken (``name_taken``), or
            ``"takeover"``: close the old connection with 1008 and give the new one the
            name (and its subscriptions), as a reconnecting client needs.
        config: limits and timeouts (DESIGN.md defaults).
        ws_path: the path WebSocket clients connect to.
    """

    def __init__(
        self,
        *,
        login: LoginPolicy | None = None,
        on_name_conflict: Literal["refuse", "takeover"] = "refuse",
        config: ServerConfig | None = None,
        ws_path: str | None = "/ws",
    ) -> None:
        if on_name_conflict not in ("refuse", "takeover"):
            raise ValueError(
                f"on_name_conflict must be 'refuse' or 'takeover', not {on_name_conflict!r}"
            )
        self.login = login if login is not None else unique_names()
        self.on_name_conflict = on_name_conflict
        self.config = config or ServerConfig()
        self.clients = ClientRegistry()
        self.router = HttpRouter()
        self.router.add("/healthz", self._healthz)
        self.router.add("/metrics", self._metrics)
        self.server = Server(self._handle, config=self.config, router=self.router, ws_path=ws_path)
        self.hub = BroadcastHub(
            max_subscriber_buffer=self.config.max_subscriber_buffer,
            close_timeout=self.config.close_timeout,
        )
        """The broadcast queues (see :meth:`queue`, :meth:`subscribe`, :meth:`publish`)."""
        self._services: dict[str, _ServiceEntry] = {}
        self._binary: Service | None = None
        self._background: list[Callable[[], Awaitable[None]]] = []
        self.started_at = time.time()
        self.stats_providers: list[Callable[[], dict[str, Any]]] = [self._queue_stats]
        self._on_connect: list[Callable[[Client], Awaitable[None]]] = []
        self._on_disconnect: list[Callable[[Client], Awaitable[None] | None]] = []

    # ------------------------------------------------------------------ registration

    def service(
        self, type_: str, *, fields: FieldTypes | None = None
    ) -> Callable[[Service], Service]:
        """Decorator: handle messages whose ``"type"`` is ``type_``.

        ``fields`` maps field names to the Python types they must have (``{"text": str}``);
        a message that does not match gets ``error`` / ``bad_message`` and never reaches the
        handler.
        """

        def register(handler: Service) -> Service:
            self.add_service(type_, handler, fields=fields)
            return handler

        return register

    def add_service(
        self, type_: str, handler: Service, *, fields: FieldTypes | None = None
    ) -> None:
        """Register ``handler`` for messages of type ``type_`` (see :meth:`service`)."""
        if type_ in self._services:
            raise ValueError(f"a service for {type_!r} is already registered")
        self._services[type_] = _ServiceEntry(handler, dict(fields or {}))

    def binary(self, handler: Service) -> Service:
        """Decorator: handle binary messages (the handler receives ``bytes``)."""
        self._binary = handler
        return handler

    def background(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: run ``job()`` in the server's nursery while it serves."""
        self._background.append(job)
        return job

    def queue(self, name: str, **options: Any) -> BroadcastQueue:
        """Declare a broadcast queue (``history``, ``policy``, ``priority``, ``quota``,
        ``ttl``, ``max_publish_rate``, ``auto_subscribe``: see ``BroadcastHub.queue``).

        Queues not declared are created on first use with the defaults.
        """
        return self.hub.queue(name, **options)

    def subscribe(
        self,
        client: Client,
        queue: str | BroadcastQueue,
        *,
        since: int | None = None,
        reply: bool = True,
    ) -> int:
        """Subscribe ``client``; with ``since``, replay what it missed first.

        With ``reply`` the client gets ``{"type": "subscribed", "group": ..., "seq": n}``
        ahead of any ``gap`` and replay. Returns the seq after which the live stream starts.

        Raises:
            QueueError: a bad or unknown queue name, or too many queues.
        """
        if client.subscriber is None:
            client.subscriber = self.hub.subscriber(client.connection, client.name)
        return self.hub.subscribe(queue, client.subscriber, since=since, reply=reply)

    def unsubscribe(self, client: Client, queue: str | BroadcastQueue) -> bool:
        """Unsubscribe ``client``; nothing of the queue reaches it after this returns."""
        if client.subscriber is None:
            return False
        return self.hub.unsubscribe(queue, client.subscriber)

    def publish(
        self,
        queue: str | BroadcastQueue,
        message: dict[str, Any] | str | bytes,
        *,
        key: str | None = None,
    ) -> int:
        """Publish to a queue (created on first use); return the message's seq. Never blocks.

        ``key`` names the message for ``BroadcastQueue.retract``.
        """
        target = queue if isinstance(queue, BroadcastQueue) else self.hub.get_or_create(queue)
        return target.publish(message, key=key)

    def websocket(
        self, path: str
    ) -> Callable[[Callable[[WebSocketConnection], Awaitable[None]]], Any]:
        """Decorator: a raw WebSocket endpoint at ``path`` (no login, no services).

        The handler receives the :class:`WebSocketConnection`; when it returns, the
        connection is closed.
        """

        def register(handler: Callable[[WebSocketConnection], Awaitable[None]]) -> Any:
            self.server.ws_routes[path] = handler
            return handler

        return register

    def service_statistics(self) -> dict[str, ServiceStatistics]:
        """Per service: calls, errors, mean and p99 duration."""
        result = {}
        for type_, entry in self._services.items():
            recent = sorted(entry.recent)
            p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else 0.0
            mean = entry.seconds / entry.calls if entry.calls else 0.0
            result[type_] = ServiceStatistics(entry.calls, entry.errors, mean, p99)
        return result

    def on_disconnect(self, hook: Callable[[Client], Awaitable[None] | None]) -> None:
        """Call ``hook(client)`` when a logged-in client's connection ends."""
        self._on_disconnect.append(hook)

    # ------------------------------------------------------------------ serving

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        *,
        listeners: Sequence[Any] | None = None,
        ssl_context: Any = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled (see :meth:`Server.serve`)."""
        await self.server.serve(
            host,
            port,
            listeners=listeners,
            ssl_context=ssl_context,
            background=[self.hub.run, *self._background],
            task_status=task_status,
        )

    # ------------------------------------------------------------------ one connection

    async def _handle(self, conn: WebSocketConnection) -> None:
        session = Session()
        session.handshake_complete()
        client: Client | None = None
        try:
            with trio.move_on_after(self.config.login_timeout or math.inf):
                client = await self._login(conn, session)
            if client is None:
                if session.stage is Stage.LOGIN:
                    log.info("#%d login timeout", conn.id)
                    await self._perform(conn, session.login_timed_out())
                return
            await self._connected(client, session)
        finally:
            session.closed()
            if client is not None and client.connection is conn:
                self.clients._remove(client)
                if client.subscriber is not None:
                    self.hub.remove(client.subscriber)
                for hook in self._on_disconnect:
                    try:
                        result = hook(client)
                        if result is not None:
                            await result
                    except Exception:
                        log.exception("#%d disconnect hook failed", conn.id)

    async def _perform(self, conn: WebSocketConnection, actions: list[Any]) -> bool:
        """Carry out replies and closes; return True when the connection must end."""
        for action in actions:
            if type(action) is Reply:
                await conn.send(action.message)
            elif type(action) is CloseConnection:
                await conn.aclose(action.code, action.reason)
                return True
        return False

    async def _login(self, conn: WebSocketConnection, session: Session) -> Client | None:
        while True:
            message = await conn.receive()
            if isinstance(message, str):
                actions = session.receive_text(message)
            else:
                actions = session.receive_bytes(message)
            for action in actions:
                if type(action) is AttemptLogin:
                    client = await self._attempt(conn, session, action.message)
                    if client is not None:
                        return client
                    if session.stage is Stage.CLOSED:
                        return None
                elif await self._perform(conn, [action]):
                    return None

    async def _attempt(
        self, conn: WebSocketConnection, session: Session, message: dict[str, Any]
    ) -> Client | None:
        try:
            result = await run_policy(self.login, LoginRequest(message, conn.request, conn.remote))
        except Exception:
            log.exception("#%d login policy failed", conn.id)
            await self._perform(
                conn, session.login_failed("internal_error", "login failed; try again")
            )
            return None
        if not isinstance(result, LoginAccepted):
            await self._perform(conn, session.login_failed(result.code, result.message))
            return None
        name = result.name
        old = self.clients.get(name)
        if old is not None and old.connection.closed is None:
            if self.on_name_conflict == "refuse":
                await self._perform(
                    conn, session.login_failed("name_taken", f"the name {name!r} is taken")
                )
                return None
            log.info("#%d takes over %r from #%d", conn.id, name, old.connection.id)
            previous = old.connection
            old.connection = conn
            old.name = name
            self.clients._add(old)
            if old.subscriber is not None:
                # The new connection continues every queue where the old one stopped.
                replaced = old.subscriber
                old.subscriber = self.hub.subscriber(conn, name)
                self.hub.take_over(replaced, old.subscriber)
            await previous.send_close(CloseCode.POLICY_VIOLATION, "replaced by a new login")
            client = old
        else:
            client = Client(name, conn)
            self.clients._add(client)
            if any(q.auto_subscribe for q in self.hub.queues.values()):
                client.subscriber = self.hub.subscriber(conn, name)
        await self._perform(conn, session.login_succeeded(name))
        log.info("#%d logged in as %r", conn.id, name)
        return client

    async def _connected(self, client: Client, session: Session) -> None:
        conn = client.connection
        bucket = _TokenBucket(*self.config.rate_limit) if self.config.rate_limit else None
        while True:
            message = await conn.receive()
            if bucket is not None and not bucket.take(trio.current_time()):
                await conn.send(error_message("rate_limited", "too many messages; slow down"))
                continue
            if isinstance(message, str):
                actions = session.receive_text(message)
            else:
                actions = session.receive_bytes(message)
            for action in actions:
                if type(action) is Dispatch:
                    await self._dispatch(client, conn, action.message)
                elif await self._perform(conn, [action]):
                    return

    async def _dispatch(
        self, client: Client, conn: WebSocketConnection, message: dict[str, Any] | bytes
    ) -> None:
        if isinstance(message, bytes):
            if self._binary is None:
                await conn.send(error_message("bad_message", "binary messages are not accepted"))
                return
            handler = self._binary
            entry = None
            service_name = "binary"
        else:
            entry = self._services.get(message["type"])
            if entry is None:
                await conn.send(
                    error_message("bad_message", f"unknown message type {message['type']!r}")
                )
                return
            if entry.fields:
                problem = _field_error(message, entry.fields)
                if problem is not None:
                    await conn.send(error_message("bad_message", problem))
                    return
            handler = entry.handler
            service_name = message["type"]
        started = time.perf_counter()
        try:
            await handler(client, message)
        except (ServiceError, QueueError) as exc:
            await conn.send(error_message(exc.code, exc.message))
        except ConnectionClosed:
            if conn.closed is not None:
                raise  # our own connection ended
            log.info("#%d a connection the service wrote to was closed", conn.id)
        except Exception:
            log.exception("#%d service %r failed", conn.id, service_name)
            if entry is not None:
                entry.errors += 1
            await conn.send(
                error_message("internal_error", "the server failed to handle this message")
            )
        finally:
            if entry is not None:
                elapsed = time.perf_counter() - started
                entry.calls += 1
                entry.seconds += elapsed
                entry.recent.append(elapsed)

    def _queue_stats(self) -> dict[str, Any]:
        queues = []
        for name, q in sorted(self.hub.queues.items()):
            depth = sum(len(lane.messages) for lane in q._subs.values())
            queues.append(
                {
                    "name": name,
                    "subscribers": len(q),
                    "seq": q.seq,
                    "published": q.published,
                    "drops": q.dropped,
                    "depth": depth,
                }
            )
        return {"queues": queues}

    # ------------------------------------------------------------------ HTTP

    def _healthz(self, _request: Request) -> HttpResponse:
        stats = self.server.statistics()
        body = {
            "status": "ok",
            "connections": stats.connections,
            "clients": len(self.clients),
            "accepting": stats.accepting,
            "broker": "memory",
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }
        return HttpResponse(200, json.dumps(body) + "\n", "application/json")

    def _metrics(self, _request: Request) -> HttpResponse:
        return HttpResponse(200, self.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")

    def metrics_text(self) -> str:
        """The Prometheus text exposition of this process's counters."""
        stats = self.server.statistics()
        lines = [
            "# HELP trio_ws_connections Open WebSocket connections.",
            "# TYPE trio_ws_connections gauge",
            f"trio_ws_connections {stats.connections}",
            "# HELP trio_ws_clients Logged-in clients.",
            "# TYPE trio_ws_clients gauge",
            f"trio_ws_clients {len(self.clients)}",
            "# HELP trio_ws_connections_total WebSocket connections accepted.",
            "# TYPE trio_ws_connections_total counter",
            f"trio_ws_connections_total {stats.connections_total}",
            "# HELP trio_ws_messages_received_total Messages received from clients.",
            "# TYPE trio_ws_messages_received_total counter",
            f"trio_ws_messages_received_total {stats.messages_in}",
            "# HELP trio_ws_messages_sent_total Messages sent to clients.",
            "# TYPE trio_ws_messages_sent_total counter",
            f"trio_ws_messages_sent_total {stats.messages_out}",
            "# HELP trio_ws_received_bytes_total Bytes received on WebSocket connections.",
            "# TYPE trio_ws_received_bytes_total counter",
            f"trio_ws_received_bytes_total {stats.bytes_in}",
            "# HELP trio_ws_sent_bytes_total Bytes sent on WebSocket connections.",
            "# TYPE trio_ws_sent_bytes_total counter",
            f"trio_ws_sent_bytes_total {stats.bytes_out}",
            "# HELP trio_ws_http_requests_total Plain HTTP requests answered.",
            "# TYPE trio_ws_http_requests_total counter",
            f"trio_ws_http_requests_total {stats.http_requests}",
            "# HELP trio_ws_refused_total Handshakes refused, by HTTP status.",
            "# TYPE trio_ws_refused_total counter",
        ]
        lines += [
            f'trio_ws_refused_total{{status="{s}"}} {n}' for s, n in sorted(stats.refused.items())
        ]
        lines += [
            "# HELP trio_ws_closed_total Closed WebSocket connections, by close code.",
            "# TYPE trio_ws_closed_total counter",
        ]
        lines += [
            f'trio_ws_closed_total{{code="{c}"}} {n}' for c, n in sorted(stats.close_codes.items())
        ]
        lines += [
            "# HELP trio_ws_service_calls_total Messages handled, by service.",
            "# TYPE trio_ws_service_calls_total counter",
        ]
        lines += [
            f'trio_ws_service_calls_total{{service="{t}"}} {e.calls}'
            for t, e in sorted(self._services.items())
        ]
        lines += [
            "# HELP trio_ws_service_seconds_total Time spent in services.",
            "# TYPE trio_ws_service_seconds_total counter",
        ]
        lines += [
            f'trio_ws_service_seconds_total{{service="{t}"}} {e.seconds:.6f}'
            for t, e in sorted(self._services.items())
        ]
        queues = self._queue_stats()["queues"]
        for metric, kind, field, text in (
            ("trio_ws_queue_subscribers", "gauge", "subscribers", "Subscribers, by queue."),
            ("trio_ws_queue_depth", "gauge", "depth", "Messages waiting in subscriber buffers."),
            ("trio_ws_queue_published_total", "counter", "published", "Messages published."),
            (
                "trio_ws_queue_dropped_total",
                "counter",
                "drops",
                "Messages skipped for slow subscribers.",
            ),
        ):
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
            lines += [f'{metric}{{queue="{q["name"]}"}} {q[field]}' for q in queues]
        hub = self.hub.statistics()
        lines += [
            "# HELP trio_ws_subscribers_kicked_total Subscribers closed (1013) for being too slow.",
            "# TYPE trio_ws_subscribers_kicked_total counter",
            f"trio_ws_subscribers_kicked_total {hub.kicked}",
        ]
        return "\n".join(lines) + "\n"
