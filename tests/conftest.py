"""Fixtures and helpers shared by the Trio and end-to-end tests.

``running()`` serves an :class:`~trio_ws.App` or :class:`~trio_ws.Server` on a free
loopback port for the length of a block. Every test has a time limit (pytest-timeout's
``timeout`` in pyproject.toml); a Trio test that overstays it is cancelled inside its own
``trio.run`` and fails with the stacks of the tasks that were waiting. The raw helpers
speak bytes over a real socket (hand-made handshakes, frames, half-written frames) where a
well-behaved client library would not let a test misbehave.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import socket
import struct
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import pytest_trio
import trio
import trio.testing

import trio_ws
from trio_ws.demo.app import create_app
from trio_ws.testing import MemoryListener

# ---------------------------------------------------------------------------------------
# A time limit for every test


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Trio tests keep pytest-timeout's limit but not its SIGALRM, which would raise
    inside Trio's run loop and break every test after it; they get a watchdog instead."""
    if not _watched(item):
        return None  # pytest-timeout's own timer
    item.add_marker(pytest.mark.trio(run=partial(_run_with_watchdog, settings.timeout)), False)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    return True if _watched(item) else None


def _watched(item: pytest.Item) -> bool:
    """A Trio test whose ``trio.run`` the marker chooses (pytest-trio runs the inner test
    of a Hypothesis one with plain ``trio.run``: those keep SIGALRM)."""
    obj = getattr(item, "obj", None)
    return item.get_closest_marker("trio") is not None and not hasattr(obj, "hypothesis")


# On a virtual clock (``autojump_clock``) a test that waits for something that never comes
# would jump from deadline to deadline, or just sit: it fails at this virtual time instead.
# The longest test walks through about 200 virtual seconds.
VIRTUAL_TIMEOUT = 3600.0


def _run_with_watchdog(timeout: float, afn: Callable[[], Awaitable[Any]], **kwargs: Any) -> Any:
    """``trio.run(afn)``, cancelled after ``timeout`` seconds of real time (and, on a
    virtual clock, after ``VIRTUAL_TIMEOUT`` seconds of virtual time)."""
    __tracebackhide__ = True

    async def watched() -> Any:
        __tracebackhide__ = True
        token = trio.lowlevel.current_trio_token()
        expired: list[str] = []

        def expire(limit: str) -> None:
            if not expired:
                expired.append(limit)
                expired.extend(_task_stacks())
                scope.cancel()

        async def virtual_watch() -> None:
            await trio.sleep(VIRTUAL_TIMEOUT)
            expire(f"{VIRTUAL_TIMEOUT}s of virtual time")

        with trio.CancelScope() as scope:
            timer = threading.Timer(timeout, token.run_sync_soon, (expire, f"{timeout}s"))
            timer.daemon = True
            timer.start()
            if isinstance(kwargs.get("clock"), trio.testing.MockClock):
                trio.lowlevel.spawn_system_task(virtual_watch)
            try:
                return await afn()
            finally:
                timer.cancel()
        limit, *stacks = expired
        waiting = "\n".join(stacks)
        pytest.fail(f"Timeout (>{limit}): cancelled; the tasks were waiting here:\n{waiting}")

    return trio.run(watched, **kwargs)


_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__ or "") + os.sep for module in (trio, pytest_trio)
)


def _task_stacks() -> list[str]:
    """Where every task of this run is waiting, innermost frame last."""
    stacks = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        frames = [
            (frame, lineno)
            for frame, lineno in task.iter_await_frames()
            if not frame.f_code.co_filename.startswith(_LIBRARY_DIRS)
        ]
        if frames:
            summary = traceback.StackSummary.extract(frames)
            stacks.append(f"task {task.name}:\n" + "".join(summary.format()))
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return stacks


# ---------------------------------------------------------------------------------------
# Serving


@asynccontextmanager
async def running(target: trio_ws.App | trio_ws.Server, **serve_kwargs: Any) -> AsyncIterator[str]:
    """Serve ``target`` on 127.0.0.1 (a free port) inside the block; yield ``"host:port"``."""
    serve_kwargs.setdefault("host", "127.0.0.1")
    serve_kwargs.setdefault("port", 0)
    host = serve_kwargs.pop("host")
    port = serve_kwargs.pop("port")
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(
            lambda task_status: target.serve(host, port, task_status=task_status, **serve_kwargs)
        )
        try:
            yield str(addresses[0])
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def stoppable(
    target: trio_ws.App | trio_ws.Server, **serve_kwargs: Any
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """Like :func:`running`, also yielding ``stop()``: cancel serve() and wait until it
    returns, without cancelling anything else (clients opened in the block live on)."""
    scope = trio.CancelScope()
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with scope:
                await target.serve("127.0.0.1", 0, task_status=task_status, **serve_kwargs)
        finally:
            done.set()

    async def stop() -> None:
        scope.cancel()
        await done.wait()

    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(run)
        try:
            yield str(addresses[0]), stop
        finally:
            scope.cancel()


@asynccontextmanager
async def in_memory(
    app: trio_ws.App,
) -> AsyncIterator[Callable[..., AbstractAsyncContextManager[trio_ws.WebSocketConnection]]]:
    """Serve ``app`` over in-memory streams (for ``autojump_clock``); yield ``connect(**kw)``,
    which opens a client on ``/ws`` (its keywords are ``trio_ws.connect``'s)."""
    listener = MemoryListener()

    @asynccontextmanager
    async def connect(**kwargs: Any) -> AsyncIterator[trio_ws.WebSocketConnection]:
        stream = await listener.connect()
        async with trio_ws.connect("ws://test/ws", stream=stream, **kwargs) as conn:
            yield conn

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        try:
            yield connect
        finally:
            nursery.cancel_scope.cancel()


def demo_app(**config: Any) -> trio_ws.App:
    """The demo app (echo, routed, ping, binary echo on /ws) with config overrides."""
    return create_app(config=trio_ws.ServerConfig(**config))


@pytest.fixture
async def demo() -> AsyncIterator[tuple[trio_ws.App, str]]:
    """The demo app with default limits, served on a free port: ``(app, "host:port")``."""
    app = demo_app()
    async with running(app) as address:
        yield app, address


def split_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address[0], address[1]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------
# Our client, logged in


@asynccontextmanager
async def logged_in(
    address: str, name: str, **connect_kwargs: Any
) -> AsyncIterator[trio_ws.WebSocketConnection]:
    """A ``trio_ws.connect`` client on ``/ws`` that has logged in as ``name``."""
    async with trio_ws.connect(f"ws://{address}/ws", **connect_kwargs) as conn:
        await conn.send({"type": "login", "name": name})
        assert json.loads(await conn.receive()) == {"type": "welcome", "name": name}
        yield conn


async def receive_json(conn: trio_ws.WebSocketConnection) -> dict[str, Any]:
    message = await conn.receive()
    assert isinstance(message, str), message
    result = json.loads(message)
    assert isinstance(result, dict)
    return result


async def expect_closed(conn: trio_ws.WebSocketConnection) -> trio_ws.ConnectionClosed:
    """Receive until the connection closes; fail on any message; return how it closed."""
    try:
        message = await conn.receive()
    except trio_ws.ConnectionClosed as exc:
        return exc
    raise AssertionError(f"expected the connection to close, got {message!r}")


# ---------------------------------------------------------------------------------------
# Raw sockets: hand-made requests and frames

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_request(
    address: str,
    path: str = "/ws",
    *,
    headers: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    """A valid RFC 6455 opening handshake, with ``headers`` added or replaced."""
    fields = {
        "Host": address,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in fields.items() if k not in drop]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2), built independently of the code under test."""
    mask = b"\x11\x22\x33\x44"
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text_frame(message: dict[str, Any] | str) -> bytes:
    text = message if isinstance(message, str) else json.dumps(message)
    return client_frame(0x1, text.encode())


def parse_server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames off ``data``: ``([(opcode, payload)], rest)``."""
    frames = []
    while len(data) >= 2:
        opcode = data[0] & 0x0F
        n = data[1] & 0x7F
        offset = 2
        if n == 126:
            if len(data) < 4:
                break
            n = struct.unpack("!H", data[2:4])[0]
            offset = 4
        elif n == 127:
            if len(data) < 10:
                break
            n = struct.unpack("!Q", data[2:10])[0]
            offset = 10
        if len(data) < offset + n:
            break
        frames.append((opcode, data[offset : offset + n]))
        data = data[offset + n :]
    return frames, data


class RawClient:
    """A TCP client that speaks bytes; it answers nothing unless a test says so."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    @asynccontextmanager
    async def open(cls, address: str) -> AsyncIterator[RawClient]:
        host, port = split_address(address)
        stream = await trio.open_tcp_stream(host, port)
        try:
            yield cls(stream)
        finally:
            await trio.aclose_forcefully(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive_some(self) -> bytes:
        """The next chunk, ``b""`` at EOF (a reset counts as EOF)."""
        try:
            return await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return b""

    async def read_until_eof(self) -> bytes:
        chunks = [self.buffer]
        self.buffer = b""
        while chunk := await self.receive_some():
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_head(self) -> bytes:
        """Read an HTTP response head (the bytes after it stay buffered)."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.receive_some()
            if not chunk:
                raise AssertionError(f"EOF before a response head: {self.buffer!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def handshake(self, address: str, **kwargs: Any) -> None:
        await self.send(upgrade_request(address, **kwargs))
        head = await self.read_head()
        assert head.startswith(b"HTTP/1.1 101 "), head

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame; ``(-1, b"")`` at EOF."""
        while True:
            frames, _ = parse_server_frames(self.buffer)
            if frames:
                (opcode, payload), self.buffer = _drop_first_frame(self.buffer)
                return opcode, payload
            chunk = await self.receive_some()
            if not chunk:
                return -1, b""
            self.buffer += chunk

    async def read_close_code(self) -> int | None:
        """Read frames until a Close; its code (``None`` at EOF without one)."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == -1:
                return None
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    async def login(self, name: str) -> None:
        await self.send(text_frame({"type": "login", "name": name}))
        opcode, payload = await self.read_frame()
        assert opcode == 0x1
        assert json.loads(payload) == {"type": "welcome", "name": name}


def _drop_first_frame(data: bytes) -> tuple[tuple[int, bytes], bytes]:
    n = data[1] & 0x7F
    offset = 2
    if n == 126:
        n = struct.unpack("!H", data[2:4])[0]
        offset = 4
    elif n == 127:
        n = struct.unpack("!Q", data[2:10])[0]
        offset = 10
    return (data[0] & 0x0F, data[offset : offset + n]), data[offset + n :]


async def http_exchange(address: str, request: bytes) -> bytes:
    """Send ``request`` on a new connection; return everything until the server closes."""
    async with RawClient.open(address) as client:
        await client.send(request)
        return await client.read_until_eof()


async def handshake_response(address: str, request: bytes) -> bytes:
    """Send an upgrade request; return the response (its head only when it is a 101)."""
    async with RawClient.open(address) as client:
        await client.send(request)
        head = await client.read_head()
        if head.startswith(b"HTTP/1.1 101 "):
            return head + b"\r\n\r\n"
        return head + b"\r\n\r\n" + await client.read_until_eof()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def header_of(response: bytes, name: str) -> str | None:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# ---------------------------------------------------------------------------------------
# Leaks and logs


def count_tasks() -> int:
    """Every task alive in this run, found by walking the tree from the root task."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# The server's keepalive Ping carries b"keepalive" (trio_ws/_server.py): 2 header bytes
# plus the payload from us, 2 header bytes, a 4-byte mask and the payload in the Pong back.
KEEPALIVE_PING_SIZE = 2 + len(b"keepalive")
KEEPALIVE_PONG_SIZE = 6 + len(b"keepalive")


def keepalive_exchanges(
    before: trio_ws.ServerStatistics, after: trio_ws.ServerStatistics
) -> tuple[int, int]:
    """``(pings, pongs)``: the keepalive frames between two snapshots of a server whose
    clients sent and received nothing else meanwhile (everything else fails the count)."""
    sent = after.bytes_out - before.bytes_out
    received = after.bytes_in - before.bytes_in
    assert sent % KEEPALIVE_PING_SIZE == 0, f"{sent} bytes out are not all pings"
    assert received % KEEPALIVE_PONG_SIZE == 0, f"{received} bytes in are not all pongs"
    return sent // KEEPALIVE_PING_SIZE, received // KEEPALIVE_PONG_SIZE


def assert_pinged_and_answered(
    before: trio_ws.ServerStatistics, after: trio_ws.ServerStatistics
) -> None:
    """Pings went out while the client idled, and it answered them (the last one may
    still be on its way back)."""
    pings, pongs = keepalive_exchanges(before, after)
    assert pings >= 2, f"{pings} keepalive pings"
    assert pings - 1 <= pongs <= pings, f"{pongs} pongs for {pings} pings"


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``within`` seconds.

    Polling, because the states waited for (a name released, a socket closed) have no
    event to wait on from outside the server.
    """
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await trio.sleep(0.005)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing above INFO, and no traceback, was logged."""
    loud = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info or r.stack_info]
    assert not loud, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]


def linger_reset(stream: trio.SocketStream) -> None:
    """Make closing ``stream`` send a TCP RST instead of a FIN (SO_LINGER 0)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
