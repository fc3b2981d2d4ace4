"""The application: what a user registers (login, services, queues, hooks) and serve().

:class:`App` wires the layers together: the :class:`~trio_ws.Server` gets one handler, the
:class:`~trio_ws._session.SessionDriver` (Handshake -> Login -> Connected); the
:class:`~trio_ws.ClientRegistry` finds clients on this node and, through the broker, on
any; the :class:`~trio_ws.BroadcastHub` holds this node's queues; the
:class:`~trio_ws.brokers.Broker` holds what the nodes share. ``/healthz`` and ``/metrics``
come from :mod:`trio_ws._metrics`; ``/trio_ws.js`` is the browser client, package data.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, TypeVar

import trio

from ._api import API_PREFIX, DEFAULT_API_RATE, MAX_API_BODY_SIZE, ServerApi
from ._broadcast import BroadcastHub, BroadcastQueue, QueueChannel
from ._clients import Client, ClientRegistry
from ._config import ServerConfig
from ._connection import WebSocketConnection
from ._http import HttpRouter, static_resource
from ._login import LoginPolicy, authenticates_nobody, unique_names
from ._metrics import healthz, metrics, metrics_text, queue_stats
from ._queue_model import Policy, QueueError, QueueOptions
from ._server import Address, Server, SubprotocolSelector
from ._services import FieldTypes, Service, ServiceEntry, ServiceStatistics
from ._session import SessionDriver
from .brokers import Broker, broker_from_url

__all__ = ["App"]

DisconnectHook = Callable[[Client], Awaitable[None] | None]
LoginHook = Callable[[Client], Awaitable[None]]
_H = TypeVar("_H", bound=Callable[..., Any])


class App:
    """A real-time application: login policy, services, queues, hooks, HTTP routes.

    Args:
        login: the login policy (client factory); ``unique_names()`` by default.
        on_name_conflict: ``"refuse"`` a login whose name is taken (``name_taken``), or
            ``"takeover"``: an *authenticated* login of the same name (see
            :class:`LoginAccepted`) closes the old connection with 1008 and gets the name
            (and, on the same node, its subscriptions), as a reconnecting client needs;
            other logins of a held name still get ``name_taken``.
        config: limits and timeouts (DESIGN.md defaults).
        ws_path: the path WebSocket clients connect to.
        broker: what the nodes share: a :class:`~trio_ws.brokers.Broker` or a URL
            (``"memory"``, the default: an embedded broker of this process).
        queue_defaults: the options of queues created on first use.
        select_subprotocol: picks one of the subprotocols a client offers, or ``None``.
        metrics_token: ``/metrics`` requires it (``Authorization: Bearer``); without one,
            ``/metrics`` answers only peers on this machine.
        api_key: turns the server API on (``/api/``, docs/server-api.md): backends that
            send ``Authorization: Bearer <api_key>`` may publish, send to and disconnect
            clients, and read members and cluster info. ``None`` (the default): no API.
        api_rate: the API answers at most ``count`` requests per ``period`` seconds
            (``(count, period)``; ``None``: no limit).
        max_api_body_size: the largest API request body, in bytes.
    """

    def __init__(
        self,
        *,
        login: LoginPolicy | None = None,
        on_name_conflict: Literal["refuse", "takeover"] = "refuse",
        config: ServerConfig | None = None,
        ws_path: str | None = "/ws",
        broker: Broker | str = "memory",
        queue_defaults: QueueOptions | None = None,
        select_subprotocol: SubprotocolSelector | None = None,
        metrics_token: str | None = None,
        api_key: str | None = None,
        api_rate: tuple[int, float] | None = DEFAULT_API_RATE,
        max_api_body_size: int = MAX_API_BODY_SIZE,
    ) -> None:
        if on_name_conflict not in ("refuse", "takeover"):
            raise ValueError(
                f"on_name_conflict must be 'refuse' or 'takeover', not {on_name_conflict!r}"
            )
        self.login = login if login is not None else unique_names()
        if on_name_conflict == "takeover" and authenticates_nobody(self.login):
            raise ValueError(
                "on_name_conflict='takeover' needs a login policy that authenticates "
                "clients (signed_tokens, or LoginAccepted(name, authenticated=True)): "
                "with unique_names() anyone could take any name"
            )
        self.on_name_conflict = on_name_conflict
        self.config = config or ServerConfig()
        self.metrics_token = metrics_token
        self.broker = broker_from_url(broker) if isinstance(broker, str) else broker
        self.clients = ClientRegistry(self.broker)
        self.sessions = SessionDriver(self)
        self.router = HttpRouter()
        self.router.add("/healthz", functools.partial(healthz, self))
        self.router.add("/metrics", functools.partial(metrics, self))
        # The browser client (docs/js-client.md), so every app's pages can import it.
        self.router.add(
            "/trio_ws.js",
            static_resource("trio_ws", "static/trio_ws.js", content_type="text/javascript"),
        )
        self.api: ServerApi | None = None
        """The server API, when the app has an API key."""
        if api_key is not None:
            self.api = ServerApi(self, api_key, rate=api_rate, max_body_size=max_api_body_size)
            self.router.add_prefix(API_PREFIX, self.api.respond)
        self.server = Server(
            self.sessions.handle,
            config=self.config,
            router=self.router,
            ws_path=ws_path,
            select_subprotocol=select_subprotocol,
        )
        self.server.handler_admits = True  # at login (the session driver)
        self.hub = BroadcastHub(
            broker=self.broker,
            max_subscriber_buffer=self.config.max_subscriber_buffer,
            max_subscriber_bytes=self.config.max_subscriber_bytes,
            close_timeout=self.config.close_timeout,
            queue_defaults=queue_defaults,
        )
        """This node's broadcast queues (see :meth:`queue`, :meth:`subscribe`)."""
        self._services: dict[str, ServiceEntry] = {}
        self._binary: Service | None = None
        self._background: list[Callable[[], Awaitable[None]]] = []
        self._on_login: list[LoginHook] = []
        self._on_disconnect: list[DisconnectHook] = []
        self.started_at = time.time()
        self._serving = False
        self._metrics_cache: tuple[float, str] | None = None
        self.use_broker(self.broker)
        self.stats_providers: list[Callable[[], dict[str, Any]]] = [
            functools.partial(queue_stats, self)
        ]

    def use_broker(self, broker: Broker | str) -> None:
        """Make ``broker`` (or the broker a URL names) the one this app uses.

        Raises:
            RuntimeError: the app is serving.
        """
        if self._serving:
            raise RuntimeError("the broker cannot change while the app serves")
        broker = broker_from_url(broker) if isinstance(broker, str) else broker
        self.broker = broker
        self.hub.broker = broker
        broker.on_message = self.hub._on_message
        broker.on_retract = self.hub._on_retract
        broker.on_reset = self.hub._on_reset
        broker.on_gap = self.hub._on_gap
        self.clients._broker = broker
        broker.on_routed = self.clients._on_routed
        broker.on_displaced = self.sessions.displaced
        broker.report = self._report

    def _report(self) -> tuple[int, int]:
        return (len(self.server.connections), len(self.clients))

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
        self._services[type_] = ServiceEntry(handler, dict(fields or {}))

    def binary(self, handler: Service) -> Service:
        """Decorator: handle binary messages (the handler receives ``bytes``)."""
        self._binary = handler
        return handler

    def background(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: run ``job()`` while the app serves; it is cancelled at shutdown, after
        the clients were closed."""
        self._background.append(job)
        return job

    def on_login(self, hook: LoginHook) -> LoginHook:
        """Decorator: ``await hook(client)`` once a client has logged in (after its
        ``welcome``), in its connection's task, before its first message is handled."""
        self._on_login.append(hook)
        return hook

    def on_disconnect(self, hook: _H) -> _H:
        """Decorator: call ``hook(client)`` (sync or async) when a logged-in client's
        connection ends."""
        self._on_disconnect.append(hook)
        return hook

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

    # ------------------------------------------------------------------ queues

    def queue(
        self,
        name: str,
        *,
        history: int = 100,
        ttl: float | None = None,
        policy: Policy = "drop",
        priority: int = 0,
        quota: int | None = None,
        max_publish_rate: tuple[int, float] | None = None,
        auto_subscribe: bool = False,
    ) -> BroadcastQueue:
        """Declare a broadcast queue (the options are :class:`~trio_ws.QueueOptions`).

        Queues not declared are created on first use with ``queue_defaults``.

        Raises:
            QueueError: ``bad_group``: the name breaks the rules.
            ValueError: the queue exists, or an option is out of range.
        """
        options = QueueOptions(
            history=history,
            ttl=ttl,
            policy=policy,
            priority=priority,
            quota=quota,
            max_publish_rate=max_publish_rate,
            auto_subscribe=auto_subscribe,
        )
        if auto_subscribe and name not in self.hub.queues:
            # Clients without a subscription yet have no subscriber: give them one, and the
            # hub subscribes every subscriber to the new queue.
            for client in self.clients:
                if client.subscriber is None:
                    client.subscriber = self.hub._new_subscriber(client.connection, client.name)
        return self.hub.queue(name, options)

    async def subscribe(
        self,
        client: Client,
        queue: str | BroadcastQueue,
        *,
        since: int | None = None,
        epoch: str | None = None,
        reply: bool = True,
    ) -> int:
        """Subscribe ``client``; with ``since``, replay what it missed first.

        With ``reply`` the client gets ``{"type": "subscribed", "group": ..., "seq": n,
        "epoch": e}`` ahead of any ``gap`` and replay, all written before this returns.
        A ``since`` given with another history's ``epoch`` (the broker lost its data, or
        the queue was made anew) counts as 0: the client gets what is kept, and a gap for
        the rest, not numbers that mean something else now. Returns the seq after which
        the live stream starts.

        Raises:
            QueueError: a bad or unknown queue name, or too many queues.
            BrokerUnavailable: the broker cannot be reached.
        """
        if client.subscriber is None:
            client.subscriber = await self.hub.subscriber(client.connection, client.name)
        limit = self.config.max_subscriptions_per_client
        name = queue.name if isinstance(queue, BroadcastQueue) else queue
        subscriptions = client.subscriber.subscriptions
        if len(subscriptions) >= limit and name not in subscriptions:
            raise QueueError(
                "too_many_subscriptions", f"a client may subscribe to at most {limit} groups"
            )
        return await self.hub.subscribe(
            queue, client.subscriber, since=since, epoch=epoch, reply=reply
        )

    def unsubscribe(self, client: Client, queue: str | BroadcastQueue) -> bool:
        """Unsubscribe ``client``; nothing of the queue reaches it after this returns."""
        if client.subscriber is None:
            return False
        return self.hub.unsubscribe(queue, client.subscriber)

    async def publish(
        self,
        queue: str | BroadcastQueue,
        message: dict[str, Any] | str | bytes,
        *,
        key: str | None = None,
    ) -> int:
        """Publish to a queue (created on first use); return the message's seq.

        Never waits for a subscriber; see :meth:`BroadcastQueue.publish`.
        """
        return await self.hub.publish(queue, message, key=key)

    async def publish_many(
        self,
        queue: str | BroadcastQueue,
        messages: Sequence[dict[str, Any] | str | bytes],
        *,
        keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Publish several messages in order, in one broker round trip; return their
        consecutive seqs (see :meth:`BroadcastQueue.publish_many`)."""
        return await self.hub.publish_many(queue, messages, keys=keys)

    async def members(self, queue: str | BroadcastQueue) -> list[str]:
        """The sorted names subscribed to ``queue`` on any node (presence)."""
        return await self.hub.members(queue)

    def open_subscription(
        self, queue: str | BroadcastQueue, *, since: int | None = None, name: str = ""
    ) -> AbstractAsyncContextManager[QueueChannel]:
        """``async with app.open_subscription("g1", since=...) as channel:`` consume a queue
        in this process (see :meth:`BroadcastHub.open_subscription`)."""
        return self.hub.open_subscription(queue, since=since, name=name)

    # ------------------------------------------------------------------ introspection

    def service_statistics(self) -> dict[str, ServiceStatistics]:
        """Per service: calls, errors, mean and p99 duration."""
        return {type_: entry.statistics() for type_, entry in self._services.items()}

    def metrics_text(self) -> str:
        """The Prometheus text exposition of this node's counters."""
        return metrics_text(self)

    # ------------------------------------------------------------------ serving

    def run(self, host: str | None = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
        """Serve until Ctrl-C or SIGTERM, drain (1001) and return: the whole main program
        (see :func:`trio_ws.run`, which takes the same keywords)."""
        from ._run import run

        run(self, host, port, **kwargs)

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        *,
        listeners: Sequence[Any] | None = None,
        ssl_context: Any = None,
        broker: Broker | str | None = None,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled (see :meth:`Server.serve`).

        The broker, the hub, the service watchdog and the background jobs run as the
        server's services: they start before the first connection is accepted and stop
        after the last one was closed (1001 at shutdown). ``broker`` replaces the app's
        broker first (see :meth:`use_broker`).

        Raises:
            RuntimeError: the app is serving already.
        """
        if broker is not None:
            self.use_broker(broker)
        if self._serving:
            raise RuntimeError("this app is serving already")
        self._serving = True
        try:
            await self._serve(host, port, listeners, ssl_context, task_status)
        finally:
            self._serving = False

    async def _serve(
        self,
        host: str | None,
        port: int,
        listeners: Sequence[Any] | None,
        ssl_context: Any,
        task_status: trio.TaskStatus[list[Address]],
    ) -> None:
        await self.server.serve(
            host,
            port,
            listeners=listeners,
            ssl_context=ssl_context,
            services=[self.broker.run, self.hub.run],
            background=[self.sessions.watch_services, *self._background],
            task_status=task_status,
        )
