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
from collections.abc import Callable
from typing import Any, Protocol

import trio

RECEIVE_SIZE = 65536
# The most one read asks for when the frame being received says it needs more (a large
# frame collected in pieces): a 1 MiB message in two or three reads, not sixteen. The
# buffer of a read is as large as asked until the bytes arrive, so this bounds that too.
MAX_RECEIVE_SIZE = 1 << 20


def read_size(wanted: int) -> int:
    """How much one read asks for when the caller wants ``wanted`` bytes (0: unknown)."""
    return RECEIVE_SIZE if wanted <= RECEIVE_SIZE else min(wanted, MAX_RECEIVE_SIZE)


# The most buffers one sendmsg() is given (Linux's IOV_MAX is 1024).
_IOV_MAX = 512


class TransportClosed(Exception):
    """The transport is gone: reset, broken pipe, closed locally."""


class Transport(Protocol):
    """What a connection needs from the bytes underneath it."""

    async def receive_some(self, wanted: int = 0) -> bytes:
        """Return the next chunk; ``b""`` at end of stream. Raises TransportClosed.

        A read asks for :data:`RECEIVE_SIZE` bytes, or for ``wanted`` (at most
        :data:`MAX_RECEIVE_SIZE`) when the caller knows it needs more than that."""

    def send_nowait(self, data: bytes) -> int:
        """Write what fits without waiting; return the number of bytes written (maybe 0)."""

    def send_parts_nowait(self, parts: list[bytes]) -> int:
        """:meth:`send_nowait` for buffers written in order (one vectored write where the
        transport has one); return the number of bytes written (maybe 0)."""

    resumable: bool
    """Whether :meth:`send_some` can be cancelled without losing track of what was sent
    (a plain socket: yes; a TLS stream: no, a cancelled write leaves it unusable)."""

    async def send_some(self, data: bytes | memoryview) -> int:
        """Wait until some of ``data`` can be written, write it, return how much."""

    async def send_some_parts(self, parts: list[memoryview]) -> int:
        """:meth:`send_some` for buffers written in order (one vectored write where the
        transport has one)."""

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write everything, waiting as needed. One caller at a time."""

    async def aclose(self) -> None:
        """Close; never raises. Idempotent."""

    def abort(self) -> None:
        """Close now without waiting (drop pending bytes). Idempotent."""

    async def linger(self, *, max_bytes: int) -> None:
        """After a last response: stop sending, then read and discard what the peer still
        sends (an unread request body), at most ``max_bytes``, so that closing does not
        reset the connection under the response. The caller bounds its time."""


async def _discard(receive: Any, max_bytes: int) -> None:
    left = max_bytes
    while left > 0:
        data = await receive()
        if not data:
            return
        left -= len(data)


class SocketTransport:
    """A connected, non-blocking stdlib TCP socket driven with trio's low-level waits."""

    __slots__ = ("_yielded", "sock")
    resumable = True

    def __init__(self, sock: socket.socket) -> None:
        self._yielded = True  # whether the last read began with a checkpoint
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - the peer may already be gone
                pass
        self.sock = sock

    async def receive_some(self, wanted: int = 0) -> bytes:
        # read_size(), inlined: this runs once per read.
        max_bytes = RECEIVE_SIZE if wanted <= RECEIVE_SIZE else min(wanted, MAX_RECEIVE_SIZE)
        sock = self.sock
        # Yield first, then read before waiting. After one pass of the scheduler over the
        # other connections, a busy peer's next message is usually there already, and the
        # epoll registration of wait_readable() (two system calls and a second scheduler
        # pass) is saved; measured 1.3-1.5x the throughput of waiting first at 50 and 500
        # connections. The two calls together are a full checkpoint.
        #
        # One exception: right after a checkpointed read that filled its buffer, the rest
        # of what the peer sent is almost surely there (a 64 KiB message arrives as two
        # loopback segments), so that one next read goes straight to recv(). The read
        # after it checkpoints again: a peer that keeps the buffer full cannot hold the
        # loop.
        checkpointed = self._yielded
        if checkpointed:
            await trio.lowlevel.checkpoint_if_cancelled()
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._yielded = True
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise TransportClosed(str(exc)) from exc
            else:
                if checkpointed and len(data) == max_bytes:
                    self._yielded = False  # the next read may skip its checkpoint
                return data
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from exc
            checkpointed = True

    def send_nowait(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TransportClosed(str(exc)) from exc

    def send_parts_nowait(self, parts: list[bytes]) -> int:
        try:
            return self.sock.sendmsg(parts[:_IOV_MAX])
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TransportClosed(str(exc)) from exc

    async def send_some_parts(self, parts: list[memoryview]) -> int:
        return await self._write_when_writable(self.sock.sendmsg, parts[:_IOV_MAX])

    async def send_some(self, data: bytes | memoryview) -> int:
        return await self._write_when_writable(self.sock.send, data)

    async def _write_when_writable(self, write: Callable[[Any], int], data: Any) -> int:
        """Wait until the socket is writable, then ``write(data)``; again if it was not."""
        sock = self.sock
        while True:
            try:
                await trio.lowlevel.wait_writable(sock)
            except (trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from exc
            try:
                return write(data)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportClosed(str(exc)) from exc

    async def send_all(self, data: bytes | memoryview) -> None:
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

    async def linger(self, *, max_bytes: int) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)  # the response is complete: FIN after it
        except OSError:
            return
        try:
            await _discard(self.receive_some, max_bytes)
        except TransportClosed:
            pass


class StreamTransport:
    """Any trio stream: ``trio.SSLStream`` for TLS, memory streams in tests.

    A generic stream has no synchronous close, so :meth:`abort` cancels whatever receive or
    send is waiting on it (they raise :class:`TransportClosed`); the owner's :meth:`aclose`
    then closes the stream itself.
    """

    __slots__ = ("_closed", "_receive_scope", "_send_scope", "stream")
    resumable = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._closed = False
        self._receive_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None

    async def receive_some(self, wanted: int = 0) -> bytes:
        if self._closed:
            raise TransportClosed("transport closed")
        with trio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                return bytes(await self.stream.receive_some(read_size(wanted)))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportClosed(str(exc)) from exc
            finally:
                self._receive_scope = None
        raise TransportClosed("transport aborted")

    def send_nowait(self, data: bytes) -> int:
        if self._closed:
            raise TransportClosed("transport closed")
        return 0  # a generic stream has no non-blocking write; the caller awaits send_all

    def send_parts_nowait(self, parts: list[bytes]) -> int:
        if self._closed:
            raise TransportClosed("transport closed")
        return 0  # as send_nowait(): the caller awaits send_some_parts()

    async def send_some(self, data: bytes | memoryview) -> int:
        await self.send_all(data)  # all or, cancelled, an unusable stream
        return len(data)

    async def send_some_parts(self, parts: list[memoryview]) -> int:
        data = b"".join(parts)  # TLS copies what it encrypts anyway
        await self.send_all(data)
        return len(data)

    async def send_all(self, data: bytes | memoryview) -> None:
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

    async def linger(self, *, max_bytes: int) -> None:
        try:
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
            await _discard(self.receive_some, max_bytes)
        except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def abort(self) -> None:
        self._closed = True
        # Wake a task blocked in receive_some() or send_all(); the owner's aclose() follows.
        for scope in (self._receive_scope, self._send_scope):
            if scope is not None:
                scope.cancel()


def is_fd_exhaustion(exc: OSError) -> bool:
    """EMFILE/ENFILE/ENOBUFS/ENOMEM from accept(): back off instead of crashing."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# Errors accept() reports for a connection that failed before it was accepted (the peer
# reset it, the network went away, a firewall refused it): that connection is lost, the
# listener is fine. The same list as trio's own listener (trio/_highlevel_socket.py).
_LOST_BEFORE_ACCEPT = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "ECONNRESET",
        "EPERM",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
    )
    if hasattr(errno, name)
)


def is_lost_before_accept(exc: OSError) -> bool:
    """Whether accept() failed for that one connection only (skip it, accept the next)."""
    return exc.errno in _LOST_BEFORE_ACCEPT
