"""Helpers for testing trio_ws applications with pytest-trio, without sockets.

:class:`MemoryListener` is a :class:`trio.abc.Listener` whose connections are in-memory
streams, so an :class:`~trio_ws.App` can be served and reached under trio's virtual clock
(``autojump_clock``), where real sockets would let the clock jump while bytes are in
flight::

    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        async with trio_ws.connect("ws://test/ws", stream=await listener.connect()) as ws:
            ...
"""

from __future__ import annotations

import math

import trio
import trio.testing

__all__ = ["MemoryListener"]


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs (see the module docstring)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)
        self._closed = False

    async def connect(self) -> trio.abc.Stream:
        """Open a connection: return the client's end; the server's end is accepted."""
        if self._closed:
            raise trio.ClosedResourceError("the listener is closed")
        client, server = trio.testing.memory_stream_pair()
        self._send.send_nowait(server)
        await trio.lowlevel.checkpoint()
        return client

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("the listener is closed") from None

    async def aclose(self) -> None:
        self._closed = True
        await self._send.aclose()
        await self._receive.aclose()
