"""The session driver: one connection through Handshake -> Login -> Connected.

Theory of operation
-------------------
For each open WebSocket the :class:`SessionDriver` drives a
:class:`~trio_ws.protocol._stages.Session`: during Login the app's login policy (the Push
Framework's client factory) decides each attempt, the broker makes the name unique
(case-insensitively, across every node) or hands it over, and the connection becomes a
:class:`~trio_ws._clients.Client`. In Connected every JSON message is decoded once and
dispatched to the service registered for its ``"type"``, inside the connection's task: a
client's messages are handled in order, and its work ends when its connection does. A
service that raises is logged with its traceback and the client gets an ``error``; the
connection and the server go on.

A service that awaits for long must not stop its connection from answering pings and
reading a Close. The connection's task is its reader too (the fast path: no task switch per
message), so :meth:`SessionDriver.watch_services` looks every ``WATCH_INTERVAL`` seconds
for a service call that is still the same one it saw last time, and lets that connection
read in the background from then on (:meth:`~trio_ws.WebSocketConnection.read_in_background`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from ._clients import Client
from ._connection import ConnectionClosed, WebSocketConnection
from ._limits import RateLimiter
from ._login import LoginAccepted, LoginRequest, run_policy
from ._names import valid_name
from ._queue_model import QueueError
from ._services import ServiceError, field_error
from .brokers._base import BrokerUnavailable
from .protocol._errors import CloseCode
from .protocol._stages import (
    AttemptLogin,
    CloseConnection,
    Dispatch,
    Reply,
    Session,
    Stage,
    error_message,
)

if TYPE_CHECKING:
    from ._app import App

__all__ = ["WATCH_INTERVAL", "SessionDriver"]

log = logging.getLogger("trio_ws.app")

WATCH_INTERVAL = 0.1
"""Seconds between looks for services that block their connection's reader. A service
blocked for one to two intervals gets a background reader: pings and a Close are then
answered within about that time, however long the service takes."""


class SessionDriver:
    """Drives every connection of one :class:`~trio_ws.App` (see the module docstring)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._busy: dict[WebSocketConnection, int] = {}
        self._calls = 0

    # ------------------------------------------------------------------ one connection

    async def handle(self, conn: WebSocketConnection) -> None:
        app = self.app
        session = Session()
        session.handshake_complete()
        client: Client | None = None
        owner = app.broker.owner(conn.id)
        try:
            with trio.move_on_after(app.config.login_timeout or math.inf):
                client = await self._login(conn, session, owner)
            if client is None:
                if session.stage is Stage.LOGIN:
                    log.info("#%d login timeout", conn.id)
                    await self._perform(conn, session.login_timed_out())
                return
            for login_hook in app._on_login:
                await login_hook(client)
            await self._connected(client, session)
        finally:
            session.closed()
            if client is not None and client.connection is conn:
                app.clients._remove(client)
                app.broker.release(client.name, owner)
                if client.subscriber is not None:
                    app.hub.remove(client.subscriber)
                for hook in app._on_disconnect:
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

    async def _login(
        self, conn: WebSocketConnection, session: Session, owner: str
    ) -> Client | None:
        while True:
            message = await conn.receive()
            if isinstance(message, str):
                actions = session.receive_text(message)
            else:
                actions = session.receive_bytes(message)
            for action in actions:
                if type(action) is AttemptLogin:
                    client = await self._attempt(conn, session, action.message, owner)
                    if client is not None:
                        return client
                    if session.stage is Stage.CLOSED:
                        return None
                elif await self._perform(conn, [action]):
                    return None

    async def _attempt(
        self, conn: WebSocketConnection, session: Session, message: dict[str, Any], owner: str
    ) -> Client | None:
        app = self.app
        try:
            result = await run_policy(app.login, LoginRequest(message, conn.request, conn.remote))
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
        if not valid_name(name):
            log.warning("#%d login policy accepted an invalid name %r", conn.id, name)
            await self._perform(
                conn, session.login_failed("bad_name", "the server cannot use that name")
            )
            return None
        # A takeover is for the same identity only: an authenticated login of the very
        # name held (spelled the same). Anyone else is refused, whatever the policy.
        may_take_over = app.on_name_conflict == "takeover" and result.authenticated
        old = app.clients.get(name)
        if (
            old is not None
            and old.connection.closed is None
            and not (may_take_over and old.name == name)
        ):
            await self._perform(
                conn, session.login_failed("name_taken", f"the name {name!r} is taken")
            )
            return None
        try:
            claim = await app.broker.claim(name, owner, takeover=False)
            if not claim.granted and may_take_over and claim.name == name:
                claim = await app.broker.claim(name, owner, takeover=True)
        except BrokerUnavailable as exc:
            await self._perform(conn, session.login_failed(exc.code, exc.message))
            return None
        if not claim.granted:
            await self._perform(
                conn, session.login_failed("name_taken", f"the name {name!r} is taken")
            )
            return None
        # The welcome goes out first: nothing of the client's queues may precede it.
        conn.admit()
        await self._perform(conn, session.login_succeeded(name))
        log.info("#%d logged in as %r", conn.id, name)
        if old is not None and old.connection.closed is None:
            log.info("#%d takes over %r from #%d", conn.id, name, old.connection.id)
            previous = old.connection
            old.connection = conn
            old.name = name
            app.clients._add(old)
            if old.subscriber is not None:
                # The new connection continues every queue where the old one stopped.
                replaced = old.subscriber
                old.subscriber = app.hub._new_subscriber(conn, name)
                await app.hub.take_over(replaced, old.subscriber)
            await previous.send_close(CloseCode.POLICY_VIOLATION, "replaced by a new login")
            return old
        client = Client(name, conn)
        app.clients._add(client)
        if any(q.options.auto_subscribe for q in app.hub.queues.values()):
            try:
                client.subscriber = await app.hub.subscriber(conn, name)
            except BrokerUnavailable as exc:  # logged in; told that its queues are missing
                log.warning("#%d not subscribed to its automatic queues: %s", conn.id, exc)
                await conn.send(error_message(exc.code, "not subscribed: " + exc.message))
        return client

    def displaced(self, name: str, owner: str) -> None:
        """The broker says another node's login took ``name`` from ``owner``: close it."""
        client = self.app.clients.get(name)
        if client is None or self.app.broker.owner(client.connection.id) != owner:
            return
        conn = client.connection
        log.info("#%d %r was taken over on another node", conn.id, name)
        try:
            if not conn.close_nowait(CloseCode.POLICY_VIOLATION, "replaced by a new login"):
                conn.drain_soon()  # (always on TLS) the Close goes out behind what is owed
        except ConnectionClosed:
            return

    async def _connected(self, client: Client, session: Session) -> None:
        conn = client.connection
        config = self.app.config
        limiter = RateLimiter(*config.rate_limit) if config.rate_limit else None
        while True:
            message = await conn.receive()
            if limiter is not None and not limiter.allow(trio.current_time()):
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
        app = self.app
        if isinstance(message, bytes):
            if app._binary is None:
                await conn.send(error_message("bad_message", "binary messages are not accepted"))
                return
            handler = app._binary
            entry = None
            service_name = "binary"
        else:
            entry = app._services.get(message["type"])
            if entry is None:
                await conn.send(
                    error_message("bad_message", f"unknown message type {message['type']!r}")
                )
                return
            if entry.fields:
                problem = field_error(message, entry.fields)
                if problem is not None:
                    await conn.send(error_message("bad_message", problem))
                    return
            handler = entry.handler
            service_name = message["type"]
        started = time.perf_counter()
        self._calls += 1
        busy = self._busy
        busy[conn] = self._calls
        try:
            await handler(client, message)
        except (ServiceError, QueueError, BrokerUnavailable) as exc:
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
            busy.pop(conn, None)
            if entry is not None:
                entry.record(time.perf_counter() - started)

    async def watch_services(self) -> None:
        """Give a background reader to connections whose service blocks (module doc)."""
        seen: dict[WebSocketConnection, int] = {}
        while True:
            await trio.sleep(WATCH_INTERVAL)
            busy = self._busy
            for conn, call in list(busy.items()):
                if seen.get(conn) == call:
                    conn.read_in_background()
            seen = dict(busy)
