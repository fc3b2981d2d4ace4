"""WebSocketConnection on in-memory streams: reading, writing, pings, closing, timeouts.

Both ends are :class:`WebSocketConnection` objects (one per role) over
``trio.testing.memory_stream_pair`` with :class:`StreamTransport`. Every timeout runs on
``autojump_clock``: no test sleeps for real.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from trio_ws import ConnectionClosed, WebSocketConnection
from trio_ws._transport import StreamTransport
from trio_ws.protocol._connection import ConnectionState, WebSocketProtocol
from trio_ws.protocol._frames import Role

Pair = tuple[WebSocketConnection, WebSocketConnection]


def make_pair(
    *,
    stream_pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]] = (
        trio.testing.memory_stream_pair
    ),
    server_max_message_size: int | None = 1 << 20,
    send_timeout: float | None = 10.0,
    write_buffer_size: int = 1 << 20,
    close_timeout: float = 5.0,
) -> Pair:
    """A (client, server) pair of connections talking through memory streams."""
    client_stream, server_stream = stream_pair()
    client = WebSocketConnection(
        StreamTransport(client_stream),
        WebSocketProtocol(Role.CLIENT),
        close_timeout=close_timeout,
        send_timeout=send_timeout,
        write_buffer_size=write_buffer_size,
    )
    server = WebSocketConnection(
        StreamTransport(server_stream),
        WebSocketProtocol(Role.SERVER, max_message_size=server_max_message_size),
        close_timeout=close_timeout,
        send_timeout=send_timeout,
        write_buffer_size=write_buffer_size,
    )
    return client, server


async def test_text_binary_and_json_round_trip() -> None:
    client, server = make_pair()
    await client.send("héllo")
    await client.send(b"\x00\xff")
    await client.send({"type": "echo", "text": "hi"})
    assert await server.receive() == "héllo"
    assert await server.receive() == b"\x00\xff"
    assert await server.receive() == '{"type":"echo","text":"hi"}'
    await server.send("back")
    assert await client.receive() == "back"
    assert (client.messages_out, server.messages_in) == (3, 3)
    assert server.bytes_in > 0


async def test_send_rejects_other_types() -> None:
    client, _server = make_pair()
    with pytest.raises(TypeError, match="cannot send int"):
        await client.send(42)  # type: ignore[arg-type]


async def test_ping_event_is_set_when_the_pong_arrives() -> None:
    client, server = make_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive)  # the server answers pings while it reads
        pong = await client.ping(b"abc")
        with trio.fail_after(1):
            # The pong is seen by whichever task receives on the client side.
            nursery.start_soon(client.receive)
            await pong.wait()
        nursery.cancel_scope.cancel()
    assert client.state is ConnectionState.OPEN


async def test_receive_is_cancellable_and_the_connection_stays_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = make_pair()
    with trio.move_on_after(1):
        await server.receive()
    await client.send("later")
    assert await server.receive() == "later"


async def test_close_handshake_both_sides_see_the_code() -> None:
    client, server = make_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose, 1000, "bye")
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
    assert (info.value.code, info.value.reason) == (1000, "bye")
    assert client.closed is not None
    assert client.closed.code == 1000
    assert client.state is ConnectionState.CLOSED


async def test_async_iteration_ends_on_a_normal_close() -> None:
    client, server = make_pair()
    received = []

    async def read_all() -> None:
        async for message in server:
            received.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await client.send("a")
        await client.send(b"b")
        await client.aclose(1001)
    assert received == ["a", b"b"]


async def test_async_iteration_raises_on_an_error_close() -> None:
    client, server = make_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose, 1011, "oops")
        with pytest.raises(ConnectionClosed) as info:
            async for _message in server:
                pass
    assert info.value.code == 1011


async def test_send_after_close_raises_connection_closed() -> None:
    client, server = make_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        with pytest.raises(ConnectionClosed):
            await server.receive()
    with pytest.raises(ConnectionClosed):
        await client.send("too late")
    with pytest.raises(ConnectionClosed):
        await server.send("too late")


async def test_aclose_gives_up_after_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _server = make_pair(close_timeout=3)  # the server never reads nor replies
    start = trio.current_time()
    await client.aclose(1000)
    assert trio.current_time() - start == pytest.approx(3)
    assert client.closed is not None
    assert client.closed.code == 1000


async def test_garbage_closes_with_1002() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    # An unmasked frame from a client is a protocol error (RFC 6455 §5.1).
    await client_stream.send_all(b"\x81\x02hi")
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1002
    # The server told the peer why before giving up: a Close frame with 1002.
    reply = await client_stream.receive_some()
    assert reply[0] == 0x88
    assert int.from_bytes(reply[2:4], "big") == 1002


async def test_message_over_the_limit_closes_with_1009() -> None:
    client, server = make_pair(server_max_message_size=100)
    await client.send("x" * 101)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive)  # reads the server's Close
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
        assert info.value.code == 1009
        nursery.cancel_scope.cancel()


async def test_message_at_the_limit_passes() -> None:
    client, server = make_pair(server_max_message_size=100)
    await client.send("x" * 100)
    assert await server.receive() == "x" * 100


async def test_peer_eof_without_close_is_1006() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    await client_stream.aclose()
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1006


async def test_abort_wakes_the_reader_side_with_the_code() -> None:
    client, server = make_pair()
    server.abort(1011, "keepalive ping timeout")
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert (info.value.code, info.value.reason) == (1011, "keepalive ping timeout")
    with pytest.raises(ConnectionClosed):
        await server.send("no")


async def test_writes_from_many_tasks_never_interleave() -> None:
    client, server = make_pair(stream_pair=trio.testing.lockstep_stream_pair)
    messages = {f"{i}:" + chr(ord("a") + i) * 5000 for i in range(20)}
    received: set[str] = set()

    async def reader() -> None:
        while len(received) < len(messages):
            message = await server.receive()
            assert isinstance(message, str)
            received.add(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        async with trio.open_nursery() as writers:
            for message in messages:
                writers.start_soon(client.send, message)
    assert received == messages


async def test_a_peer_that_never_reads_cannot_block_a_sender_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # lockstep streams: send_all waits until the peer reads, and the client never does.
    _client, server = make_pair(
        stream_pair=trio.testing.lockstep_stream_pair, send_timeout=2, write_buffer_size=10
    )
    start = trio.current_time()
    with pytest.raises(ConnectionClosed):
        with trio.fail_after(60):
            for _ in range(10):
                await server.send("x" * 100)
    assert trio.current_time() - start <= 2 + 0.1
    assert server.closed is not None


async def test_other_senders_to_a_slow_peer_time_out_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client, server = make_pair(
        stream_pair=trio.testing.lockstep_stream_pair, send_timeout=2, write_buffer_size=10
    )
    outcomes: list[str] = []

    async def sender() -> None:
        try:
            await server.send("y" * 100)
            outcomes.append("sent")
        except ConnectionClosed:
            outcomes.append("closed")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(sender)
    assert len(outcomes) == 5
    assert "closed" in outcomes
    assert trio.current_time() <= 2 + 0.1 + autojump_clock.current_time() * 0  # bounded
