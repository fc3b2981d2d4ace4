"""The server: listeners, one task per connection, the per-connection firewall, shutdown.

Theory of operation
-------------------
:meth:`Server.serve` nests three nurseries by lifetime: the connection handlers outside,
the services (the broker, the broadcast engine, keepalive, background jobs) inside them,
the accept loops innermost. They run under one shielded scope, so cancelling ``serve()``
does not tear connections down mid-frame: ``serve()`` sees the cancellation and starts the
shutdown, which stops the accept loops, sends Close 1001 to every client and waits up to
``close_timeout`` for the close handshakes (the services still running, so a subscriber
being drained gets its 1001), cancels what is left, waits for every handler to end, and
only then stops the services. The shield has a deadline; nothing started by the server
outlives ``serve()``.

Plain TCP listeners are stdlib non-blocking sockets accepted with
:func:`trio.lowlevel.wait_readable`, and their connections use
:class:`~trio_ws._transport.SocketTransport` (the fast path); TLS wraps each socket in
:class:`trio.SSLStream`, and any :class:`trio.abc.Listener` handed in is served through its
streams. Per connection, in order: IP allow/deny (refused before any byte is read), the
request head within ``handshake_timeout`` (431/400/426 as the handshake decides), plain
HTTP answered by the router, then path (404), Origin (403) and capacity (503) checks,
permessage-deflate negotiation, 101, and the handler.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import attrs
import trio

from ._admission import Admission, address_key
from ._config import ServerConfig
from ._connection import ConnectionClosed, WebSocketConnection
from ._http import HttpRouter, current_peer
from ._origins import OriginRule
from ._transport import (
    SocketTransport,
    StreamTransport,
    Transport,
    TransportClosed,
    is_fd_exhaustion,
    is_lost_before_accept,
)
from .protocol._connection import DEFAULT_MAX_FRAGMENTS, WebSocketProtocol
from .protocol._deflate import negotiate_server
from .protocol._errors import CloseCode, RemoteProtocolError
from .protocol._frames import Role
from .protocol._handshake import Request, ServerHandshake

log = logging.getLogger("trio_ws.server")

Handler = Callable[[WebSocketConnection], Awaitable[None]]
SubprotocolSelector = Callable[[Sequence[str]], str | None]

_ACCEPTS_PER_CHECKPOINT = 64
# After a last HTTP response, at most this much of an unread request body is drained (for
# at most this long) before the socket is closed: closing with unread data sends a reset,
# which can destroy the response in flight.
_LINGER_BYTES = 1 << 20
_LINGER_SECONDS = 2.0
_BACKLOG = 1024


@attrs.frozen
class ServerStatistics:
    """A snapshot of the server's counters (``Server.statistics()``)."""

    connections: int
    """WebSocket connections open now."""
    connections_total: int
    """WebSocket connections accepted since start."""
    sockets: int
    """TCP connections being served now, in any stage (handshake, HTTP, WebSocket)."""
    http_requests: int
    """Plain HTTP requests answered."""
    refused: dict[int, int]
    """HTTP refusals by status (400, 403, 404, 426, 431, 503, ...)."""
    refused_by_ip_rules: int
    """Connections refused by ``ip_allow`` / ``ip_deny`` before any byte was read."""
    refused_by_limits: int
    """Connections refused for the per-address or pending limits, before any byte."""
    pending: int
    """Connections not yet admitted (handshake, or not logged in yet)."""
    close_codes: dict[int, int]
    """Closed WebSocket connections by close code."""
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    accepting: bool


def bind_sockets(
    host: str | None, port: int, *, backlog: int = _BACKLOG, reuse_port: bool = False
) -> list[socket.socket]:
    """Bind and listen on every address of ``host`` (IPv4 and IPv6 for ``None``/``""``).

    With port 0 every socket shares the port the first one got.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and sockets:
                    addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
                sock.bind(addr)
                sock.listen(backlog)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Address(NamedTuple):
    """Where a server listens: ``(host, port)``; ``str()`` gives ``"host:port"``
    (``"[::1]:8000"`` for IPv6), the form for logs and URLs."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url_host(self) -> str:
        """The host part of a URL to open: a wildcard address becomes a loopback one."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _address(sockname: Any) -> Address:
    return Address(str(sockname[0]), int(sockname[1]))


def _format_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)


async def _flush(conn: WebSocketConnection) -> None:
    """Send what a connection has pending, for a writer that could not wait."""
    try:
        await conn.drain()
    except ConnectionClosed:
        pass


class Server:
    """Serves WebSocket connections to a handler, and plain HTTP to a router.

    Args:
        handler: ``async def handler(conn)``, called once per open WebSocket; when it returns
            the connection is closed (1000), when it raises, closed with 1011.
        config: limits and timeouts.
        router: answers plain HTTP requests; by default everything is 404.
        ws_path: the path WebSocket upgrades are accepted on (``None``: any path).
        ws_routes: more WebSocket endpoints, each with its own handler, by exact path
            (e.g. a stats stream beside the application's endpoint).
        select_subprotocol: picks one of the offered subprotocols, or ``None``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        config: ServerConfig | None = None,
        router: HttpRouter | None = None,
        ws_path: str | None = None,
        ws_routes: dict[str, Handler] | None = None,
        select_subprotocol: SubprotocolSelector | None = None,
    ) -> None:
        self.handler = handler
        self.config = config or ServerConfig()
        self.router = router or HttpRouter()
        self.ws_path = ws_path
        self.ws_routes: dict[str, Handler] = dict(ws_routes or {})
        self.select_subprotocol = select_subprotocol
        self._origin_rule: tuple[ServerConfig, OriginRule] | None = None
        self.connections: set[WebSocketConnection] = set()
        self._handling = 0
        self.handler_admits = False
        """Whether the main handler admits its connections itself (an app, at login)
        rather than the server at the end of the handshake."""
        self._admission_for: tuple[ServerConfig, Admission] | None = None
        self._handlers: trio.Nursery | None = None
        self._accepting = trio.Event()
        self._accepting.set()
        self._connections_total = 0
        self._http_requests = 0
        self._refused: dict[int, int] = {}
        self._refused_ip = 0
        self._close_codes: dict[int, int] = {}
        self._closed_messages_in = 0
        self._closed_messages_out = 0
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._all_done: trio.Event | None = None
        self.addresses: list[Address] = []

    # ------------------------------------------------------------------ control

    def pause_accepting(self) -> None:
        """Stop accepting new connections; open ones keep being served."""
        if self._accepting.is_set():
            self._accepting = trio.Event()

    def resume_accepting(self) -> None:
        """Accept again after :meth:`pause_accepting`."""
        self._accepting.set()

    @property
    def accepting(self) -> bool:
        return self._accepting.is_set()

    def statistics(self) -> ServerStatistics:
        conns = self.connections
        return ServerStatistics(
            connections=len(conns),
            connections_total=self._connections_total,
            sockets=self._handling,
            http_requests=self._http_requests,
            refused=dict(self._refused),
            refused_by_ip_rules=self._refused_ip,
            refused_by_limits=self._admission().refused,
            pending=self._admission().pending,
            close_codes=dict(self._close_codes),
            messages_in=self._closed_messages_in + sum(c.messages_in for c in conns),
            messages_out=self._closed_messages_out + sum(c.messages_out for c in conns),
            bytes_in=self._closed_bytes_in + sum(c.bytes_in for c in conns),
            bytes_out=self._closed_bytes_out + sum(c.bytes_out for c in conns),
            accepting=self.accepting,
        )

    # ------------------------------------------------------------------ serving

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        *,
        listeners: Sequence[socket.socket | trio.abc.Listener[Any]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        services: Sequence[Callable[..., Awaitable[None]]] = (),
        background: Sequence[Callable[[], Awaitable[None]]] = (),
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; then shut down gracefully (see the module docstring).

        ``task_status.started()`` reports the bound addresses as :class:`Address`
        ``(host, port)`` pairs, so ``await nursery.start(server.serve, "127.0.0.1", 0)``
        gives the port. Stdlib
        listening sockets and trio listeners may be handed in instead of host and port.
        ``services`` are started (``await nursery.start(service)``: each takes
        ``task_status``) and ``background`` jobs run, before the first connection is
        accepted; both outlive every connection and are cancelled at the end of shutdown.
        """
        owned: list[socket.socket] = []
        if listeners is None:
            owned = bind_sockets(host, port)
            listeners = owned
        lifetime = trio.CancelScope(shield=True)
        stopping = trio.Event()
        done = trio.Event()
        try:
            async with trio.open_nursery() as root:
                addresses = await root.start(
                    self._lifetime,
                    lifetime,
                    listeners,
                    ssl_context,
                    services,
                    background,
                    stopping,
                    done,
                )
                task_status.started(addresses)
                try:
                    await trio.sleep_forever()
                finally:
                    # Cancelled: the one shield of the server lets the connections close
                    # (1001) while the services still run, for a bounded time.
                    stopping.set()
                    with trio.CancelScope(shield=True) as grace:
                        grace.deadline = trio.current_time() + 2 * self.config.close_timeout + 1
                        await done.wait()
                    lifetime.cancel()
        finally:
            for sock in owned:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _lifetime(
        self,
        lifetime: trio.CancelScope,
        listeners: Sequence[socket.socket | trio.abc.Listener[Any]],
        ssl_context: ssl.SSLContext | None,
        services: Sequence[Callable[..., Awaitable[None]]],
        background: Sequence[Callable[[], Awaitable[None]]],
        stopping: trio.Event,
        done: trio.Event,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handlers outside, services inside them, listeners innermost (STYLE.md)."""
        try:
            with lifetime:
                async with trio.open_nursery() as handlers:
                    self._handlers = handlers
                    async with trio.open_nursery() as service_nursery:
                        for service in services:
                            await service_nursery.start(service)
                        for job in background:
                            service_nursery.start_soon(job)
                        if (
                            self.config.ping_interval is not None
                            or self.config.message_timeout is not None
                        ):
                            service_nursery.start_soon(self._keepalive)
                        async with trio.open_nursery() as accept_nursery:
                            addresses = self._start_accepting(
                                accept_nursery, listeners, handlers, ssl_context
                            )
                            self.addresses = addresses
                            for address in addresses:
                                log.info("serving on %s", address)
                            task_status.started(addresses)
                            await stopping.wait()
                            accept_nursery.cancel_scope.cancel()
                        await self._shutdown(handlers)
                        service_nursery.cancel_scope.cancel()
        finally:
            self._handlers = None
            done.set()

    def _start_accepting(
        self,
        nursery: trio.Nursery,
        listeners: Sequence[socket.socket | trio.abc.Listener[Any]],
        handlers: trio.Nursery,
        ssl_context: ssl.SSLContext | None,
    ) -> list[Address]:
        addresses: list[Address] = []
        for listener in listeners:
            if isinstance(listener, socket.socket):
                listener.setblocking(False)
                addresses.append(_address(listener.getsockname()))
                nursery.start_soon(self._accept_socket, listener, handlers, ssl_context)
            else:
                sock = getattr(listener, "socket", None)
                if sock is not None:
                    addresses.append(_address(sock.getsockname()))
                nursery.start_soon(self._accept_listener, listener, handlers)
        return addresses

    async def _shutdown(self, handlers: trio.Nursery) -> None:
        """Close every client with 1001, wait up to the grace period, cancel the rest, and
        wait for the handlers to end (the services still run meanwhile)."""
        if self._handling:
            log.info("shutting down: closing %d connection(s)", len(self.connections))
            with trio.move_on_after(self.config.close_timeout):
                # One task per connection: a TLS stream (or a full socket buffer) needs
                # someone to wait while the Close goes out; its reader is in receive.
                async with trio.open_nursery() as closers:
                    for conn in list(self.connections):
                        if conn.writable:
                            closers.start_soon(
                                conn.send_close, CloseCode.GOING_AWAY, "server shutdown"
                            )
                await self._wait_handlers()
        handlers.cancel_scope.cancel()
        await self._wait_handlers()

    async def _wait_handlers(self) -> None:
        while self._handling:
            self._all_done = trio.Event()
            await self._all_done.wait()

    async def _accept_socket(
        self, lsock: socket.socket, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None
    ) -> None:
        accepted = 0
        try:
            while True:
                if not self._accepting.is_set():
                    await self._accepting.wait()
                try:
                    sock, addr = lsock.accept()
                except BlockingIOError:
                    accepted = 0
                    await trio.lowlevel.wait_readable(lsock)
                    continue
                except OSError as exc:
                    if is_fd_exhaustion(exc):
                        log.warning("accept failed (%s); backing off", exc)
                        await trio.sleep(0.1)
                        continue
                    if is_lost_before_accept(exc):
                        log.info("a connection was lost before it was accepted (%s)", exc)
                        continue
                    raise
                remote = _format_addr(addr)
                if not self.config.ip_allowed(addr[0]):
                    log.info("refused %s (IP rules)", remote)
                    self._refused_ip += 1
                    sock.close()
                    continue
                key = address_key(addr[0])
                if not self._admission().enter(key):
                    log.info("refused %s (too many connections from its address)", remote)
                    sock.close()
                    continue
                transport: Transport
                if ssl_context is None:
                    transport = SocketTransport(sock)
                else:
                    sock.setblocking(False)
                    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                    transport = StreamTransport(
                        trio.SSLStream(stream, ssl_context, server_side=True)
                    )
                nursery.start_soon(self._handle, transport, remote, key)
                accepted += 1
                if accepted >= _ACCEPTS_PER_CHECKPOINT:
                    accepted = 0
                    await trio.lowlevel.checkpoint()
        except trio.ClosedResourceError:
            return  # the listener was closed under us: shutdown

    async def _accept_listener(
        self, listener: trio.abc.Listener[Any], nursery: trio.Nursery
    ) -> None:
        while True:
            if not self._accepting.is_set():
                await self._accepting.wait()
            try:
                stream = await listener.accept()
            except OSError as exc:
                if is_fd_exhaustion(exc):
                    log.warning("accept failed (%s); backing off", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            remote = None
            key = None
            sock = getattr(stream, "socket", None)
            if sock is not None:
                try:
                    peer = sock.getpeername()
                except OSError:
                    peer = None
                if peer is not None:
                    remote = _format_addr(peer)
                    if not self.config.ip_allowed(peer[0]):
                        log.info("refused %s (IP rules)", remote)
                        self._refused_ip += 1
                        await trio.aclose_forcefully(stream)
                        continue
                    key = address_key(peer[0])
                    if not self._admission().enter(key):
                        log.info("refused %s (too many connections from its address)", remote)
                        await trio.aclose_forcefully(stream)
                        continue
            nursery.start_soon(self._handle, StreamTransport(stream), remote, key)

    async def _keepalive(self) -> None:
        """One task pings every quiet connection and closes those that stay silent (1011),
        and closes those whose fragmented message takes too long (1008)."""
        interval = self.config.ping_interval
        timeout = self.config.ping_timeout or math.inf
        message_timeout = self.config.message_timeout
        periods = [p for p in (interval, timeout, message_timeout) if p and p != math.inf]
        tick = max(min(periods) / 4, 0.05)
        async with trio.open_nursery() as flushes:
            while True:
                await trio.sleep(tick)
                if interval is not None:
                    self._keepalive_tick(interval, timeout, flushes)
                if message_timeout is not None:
                    self._message_deadlines(message_timeout, flushes)

    def _message_deadlines(self, message_timeout: float, flushes: trio.Nursery) -> None:
        """Close connections whose fragmented message started too long ago (1008)."""
        now = trio.current_time()
        for conn in list(self.connections):
            started = conn.message_started_at(now)
            if started is not None and now - started > message_timeout:
                log.info("#%d message timeout: a fragmented message took too long", conn.id)
                try:
                    written = conn.close_nowait(CloseCode.POLICY_VIOLATION, "message timeout")
                except ConnectionClosed:
                    continue
                if not written:  # left pending (always, on TLS): a bounded chance to go out
                    flushes.start_soon(
                        self._flush_then_abort, conn, CloseCode.POLICY_VIOLATION, "message timeout"
                    )

    def _keepalive_tick(self, interval: float, timeout: float, flushes: trio.Nursery) -> None:
        """Ping the quiet connections, drop those whose ping went unanswered too long."""
        now = trio.current_time()
        for conn in list(self.connections):
            if not conn.writable:
                continue
            if conn.ping_sent_at is not None:
                if now - conn.ping_sent_at > timeout:
                    log.info("#%d keepalive timeout", conn.id)
                    # Close 1011 (DESIGN.md) in case the peer still reads, then drop the
                    # connection, whose peer may well be gone.
                    try:
                        if not conn.close_nowait(
                            CloseCode.INTERNAL_ERROR, "keepalive ping timeout"
                        ):
                            flushes.start_soon(self._flush_then_abort, conn)
                            continue
                    except ConnectionClosed:
                        pass
                    conn.abort(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            elif now - conn.last_received > interval:
                conn.ping_nowait()

    async def _flush_then_abort(
        self,
        conn: WebSocketConnection,
        code: int = CloseCode.INTERNAL_ERROR,
        reason: str = "keepalive ping timeout",
    ) -> None:
        """Give a Close that did not fit (always, on TLS) a bounded chance, then drop the
        connection unless the close handshake ended it meanwhile."""
        with trio.move_on_after(self.config.close_timeout):
            await _flush(conn)
            await conn.wait_closed()  # the reader sees the peer's reply
            return
        conn.abort(code, reason)

    # ------------------------------------------------------------------ one connection

    async def _handle(self, transport: Transport, remote: str | None, key: str | None) -> None:
        """The firewall around one connection: nothing it does can hurt the server."""
        self._handling += 1
        admission = self._admission()
        admitted = [key is None]

        def admit() -> None:
            if not admitted[0]:
                admitted[0] = True
                assert key is not None
                admission.admit(key)

        try:
            conn = await self._open(transport, remote, admit)
            if conn is not None:
                await self._serve_connection(conn)
        except Exception:
            log.exception("connection %s: unexpected error", remote)
        finally:
            if key is not None:
                admission.leave(key, admitted=admitted[0])
            self._handling -= 1
            transport.abort()
            with trio.CancelScope(shield=True):  # closing a socket does not block
                await transport.aclose()
            if not self._handling and self._all_done is not None:
                self._all_done.set()

    async def _reply_http(self, transport: Transport, status: int, data: bytes) -> None:
        """Send a last response, then close without resetting it away: what the peer still
        sends (a request body nobody reads) is drained, boundedly."""
        with trio.move_on_after(self.config.close_timeout):
            try:
                await transport.send_all(data)
            except TransportClosed:
                pass
            else:
                with trio.move_on_after(_LINGER_SECONDS):
                    await transport.linger(max_bytes=_LINGER_BYTES)
        if status >= 400:
            self._refused[status] = self._refused.get(status, 0) + 1

    async def _read_request(
        self, transport: Transport, handshake: ServerHandshake
    ) -> Request | None:
        with trio.move_on_after(self.config.handshake_timeout or math.inf):
            while True:
                try:
                    data = await transport.receive_some()
                except TransportClosed:
                    return None
                if not data:
                    return None
                request = handshake.receive_data(data)
                if request is not None:
                    return request
        return None

    async def _read_body(
        self, transport: Transport, handshake: ServerHandshake, size: int
    ) -> bytes | None:
        """Exactly ``size`` bytes of body after the head, within ``handshake_timeout`` (a
        fresh one after the head's); ``None`` if the peer left or was too slow. The route
        has checked ``size`` against its limit: nothing beyond it is read."""
        body = bytearray(handshake.trailing_data[:size])
        with trio.move_on_after(self.config.handshake_timeout or math.inf):
            while len(body) < size:
                try:
                    data = await transport.receive_some()
                except TransportClosed:
                    return None
                if not data:
                    return None
                body += data[: size - len(body)]
            return bytes(body)
        return None

    def _refusal(self, request: Request, *, secure: bool) -> tuple[int, str] | None:
        """Path, Origin and capacity checks of an upgrade request."""
        if (
            self.ws_path is not None
            and request.path != self.ws_path
            and request.path not in self.ws_routes
        ):
            return 404, "no WebSocket endpoint here\n"
        origin = request.origin
        if origin is not None and not self._origins().allows(origin, request.host, secure=secure):
            return 403, "origin not allowed\n"
        if len(self.connections) >= self.config.max_connections:
            return 503, "server full\n"
        return None

    def _admission(self) -> Admission:
        cached = self._admission_for
        if cached is None or cached[0] is not self.config:
            config = self.config
            admission = Admission(
                max_per_address=config.max_connections_per_address,
                max_pending=config.max_pending,
                max_pending_per_address=config.max_pending_per_address,
            )
            cached = self._admission_for = (config, admission)
        return cached[1]

    def _origins(self) -> OriginRule:
        cached = self._origin_rule
        if cached is None or cached[0] is not self.config:
            rule = OriginRule(self.config.allowed_origins, self.config.allowed_hosts)
            cached = self._origin_rule = (self.config, rule)
        return cached[1]

    async def _open(
        self, transport: Transport, remote: str | None, admit: Callable[[], None]
    ) -> WebSocketConnection | None:
        """Read the request and answer it: a plain HTTP response (then ``None``), or the
        101 and the open connection. The handshake's state ends with this call, so none of
        it stays alive for the life of the connection."""
        config = self.config
        handshake = ServerHandshake(max_head_size=config.max_head_size)
        try:
            request = await self._read_request(transport, handshake)
        except RemoteProtocolError as exc:
            status = exc.http_status or 400
            log.info("%s bad request: %s (%d)", remote, exc.reason, status)
            await self._reply_http(
                transport, status, handshake.reject(status, body=exc.reason + "\n")
            )
            return None
        if request is None:
            log.info("%s left or timed out before a complete request", remote)
            return None
        if not request.is_websocket:
            self._http_requests += 1
            current_peer.set(remote)

            async def read_body(size: int) -> bytes | None:
                return await self._read_body(transport, handshake, size)

            status, data = await self.router.respond(request, read_body)
            await self._reply_http(transport, status, data)
            return None
        secure = isinstance(getattr(transport, "stream", None), trio.SSLStream)
        refusal = self._refusal(request, secure=secure)
        if refusal is not None:
            status, reason = refusal
            log.info("%s refused %s: %s", remote, request.path, reason.strip())
            await self._reply_http(transport, status, handshake.reject(status, body=reason))
            return None
        deflate = None
        if config.compression and request.extensions:
            deflate = negotiate_server(
                request.extensions,
                server_no_context_takeover=config.server_no_context_takeover,
                client_max_window_bits=config.client_max_window_bits,
            )
        subprotocol = None
        if self.select_subprotocol is not None and request.subprotocols:
            subprotocol = self.select_subprotocol(request.subprotocols)
        response = handshake.accept(
            subprotocol=subprotocol,
            extensions=[deflate.response_value()] if deflate is not None else (),
        )
        try:
            await transport.send_all(response)
        except TransportClosed:
            return None
        protocol = WebSocketProtocol(
            Role.SERVER,
            deflate=deflate,
            max_message_size=config.max_message_size,
            max_fragments=config.max_fragments or DEFAULT_MAX_FRAGMENTS,
        )
        conn = WebSocketConnection(
            transport,
            protocol,
            request=request,
            subprotocol=subprotocol,
            remote=remote,
            write_buffer_size=config.write_buffer_size,
            send_timeout=config.send_timeout,
            close_timeout=config.close_timeout,
            background=self._handlers,
        )
        conn._on_admit = admit
        if self.handler_admits and request.path not in self.ws_routes:
            pass  # admitted by the handler (an app: at login)
        else:
            conn.admit()
        if handshake.trailing_data:
            conn.feed(handshake.trailing_data)
        return conn

    async def _serve_connection(self, conn: WebSocketConnection) -> None:
        """Run the handler on an open connection, then close it and count it."""
        self.connections.add(conn)
        self._connections_total += 1
        request = conn.request
        assert request is not None
        # No query in the line: it may hold a token.
        log.info("#%d open %s %s", conn.id, conn.remote, request.path)
        try:
            # The handler runs in this frame, not one more (a frame per connection is
            # memory per connection).
            ending: int = CloseCode.NORMAL_CLOSURE
            try:
                await self.ws_routes.get(request.path, self.handler)(conn)
            except ConnectionClosed:
                pass
            except Exception:
                log.exception("#%d handler failed", conn.id)
                ending = CloseCode.INTERNAL_ERROR
            await conn.aclose(
                ending, "internal error" if ending == CloseCode.INTERNAL_ERROR else ""
            )
        finally:
            self.connections.discard(conn)
            closed = conn.closed
            code = closed.code if closed is not None else CloseCode.ABNORMAL_CLOSURE
            self._close_codes[code] = self._close_codes.get(code, 0) + 1
            self._closed_messages_in += conn.messages_in
            self._closed_messages_out += conn.messages_out
            self._closed_bytes_in += conn.bytes_in
            self._closed_bytes_out += conn.bytes_out
            log.info(
                "#%d closed %s (%d%s)",
                conn.id,
                conn.remote,
                code,
                f" {closed.reason}" if closed and closed.reason else "",
            )
