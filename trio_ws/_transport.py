"""The byte pipe under one connection: a fast path for plain TCP, trio streams for the rest.

A :class:`Transport` reads chunks, tries to write without waiting, and waits only when it
must. Plain TCP sockets take the fast path measured in the runtime's design notes: read
before waiting for readability, and write with a plain non-blocking ``send()``, waiting via
:func:`trio.lowlevel.wait_writable` only when the kernel buffer is full. TLS and in-memory
streams go through :class:`StreamTransport`, which wraps any :class:`trio.abc.Stream`.
"""

from __future__ import annotations

import errno
import socket
from typing import Protocol

import trio

# A reader that always finds data waiting never reaches the scheduler; after this many reads
# without waiting it yields once, so one busy connection cannot starve the others.
_READS_PER_CHECKPOINT = 16
RECEIVE_SIZE = 65536


class TransportClosed(Exception):
    """The transport is gone: reset, broken pipe, closed locally."""


class Transport(Protocol):
    """What a connection needs from the bytes underneath it."""

    async def receive_some(self) -> bytes:
        """Return the next chunk; ``b""`` at end of stream. Raises TransportClosed."""

    def send_nowait(self, data: bytes) -> int:
        """Write what fits without waiting; return the number of bytes written (maybe 0)."""

    async def send_all(self, data: bytes) -> None:
        """Write everything, waiting as needed. One caller at a time."""

    async def aclose(self) -> None:
        """Close; never raises. Idempotent."""

    def abort(self) -> None:
        """Close now without waiting (drop pending bytes). Idempotent."""


class SocketTransport:
    """A connected, non-blocking stdlib TCP socket driven with trio's low-level waits."""

    __slots__ = ("_fast_reads", "_speculate", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - the peer may already be gone
                pass
        self.sock = sock
        self._fast_reads = 0
        self._speculate = True

    async def receive_some(self) -> bytes:
        sock = self.sock
        if self._speculate:
            # Read before waiting: when the peer pipelines, data is usually there already
            # and one scheduler pass is saved. When that guess failed last time (a
            # request/response peer), wait first and save the failing recv() instead.
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                self._speculate = False
            except OSError as exc:
                raise TransportClosed(str(exc)) from exc
            else:
                self._fast_reads += 1
                if self._fast_reads >= _READS_PER_CHECKPOINT:
                    self._fast_reads = 0
                    await trio.lowlevel.checkpoint()
                return data
        self._fast_reads = 0
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from exc
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportClosed(str(exc)) from exc
            # A full read suggests more is queued: try reading first next time.
            self._speculate = len(data) == RECEIVE_SIZE
            return data

    def send_nowait(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TransportClosed(str(exc)) from exc

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        sock = self.sock
        while view:
            try:
                await trio.lowlevel.wait_writable(sock)
            except (trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from exc
            try:
                n = sock.send(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportClosed(str(exc)) from exc
            view = view[n:]

    async def aclose(self) -> None:
        self.abort()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class StreamTransport:
    """Any trio stream: ``trio.SSLStream`` for TLS, memory streams in tests.

    A generic stream has no synchronous close, so :meth:`abort` cancels whatever receive or
    send is waiting on it (they raise :class:`TransportClosed`); the owner's :meth:`aclose`
    then closes the stream itself.
    """

    __slots__ = ("_closed", "_receive_scope", "_send_scope", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._closed = False
        self._receive_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None

    async def receive_some(self) -> bytes:
        if self._closed:
            raise TransportClosed("transport closed")
        with trio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportClosed(str(exc)) from exc
            finally:
                self._receive_scope = None
        raise TransportClosed("transport aborted")

    def send_nowait(self, data: bytes) -> int:
        if self._closed:
            raise TransportClosed("transport closed")
        return 0  # a generic stream has no non-blocking write; the caller awaits send_all

    async def send_all(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed("transport closed")
        with trio.CancelScope() as scope:
            self._send_scope = scope
            try:
                await self.stream.send_all(data)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportClosed(str(exc)) from exc
            finally:
                self._send_scope = None
        raise TransportClosed("transport aborted")

    async def aclose(self) -> None:
        self._closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream)

    def abort(self) -> None:
        self._closed = True
        # Wake a task blocked in receive_some() or send_all(); the owner's aclose() follows.
        for scope in (self._receive_scope, self._send_scope):
            if scope is not None:
                scope.cancel()


def is_fd_exhaustion(exc: OSError) -> bool:
    """EMFILE/ENFILE/ENOBUFS/ENOMEM from accept(): back off instead of crashing."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
