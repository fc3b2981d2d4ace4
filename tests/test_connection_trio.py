"""WebSocketConnection on in-memory streams: reading, writing, pings, closing, timeouts.

Both ends are :class:`WebSocketConnection` objects (one per role) over
``trio.testing.memory_stream_pair`` with :class:`StreamTransport`. Every timeout runs on
``autojump_clock``: no test sleeps for real.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest
import trio
import trio.testing

from trio_ws import ConnectionClosed, WebSocketConnection
from trio_ws._transport import StreamTransport
from trio_ws.demo.app import create_app
from trio_ws.protocol._connection import ConnectionState, WebSocketProtocol
from trio_ws.protocol._frames import Role
from trio_ws.protocol._handshake import ClientHandshake

Pair = tuple[WebSocketConnection, WebSocketConnection]


def client_close_frame(code: int) -> bytes:
    """A masked Close frame as a client sends it (RFC 6455 §5.5.1), with a zero mask."""
    return b"\x88\x82\x00\x00\x00\x00" + code.to_bytes(2, "big")


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


async def test_close_handshake_both_sides_see_the_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = make_pair(close_timeout=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose, 1000, "bye")
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
    assert (info.value.code, info.value.reason) == (1000, "bye")
    # RFC 6455 §5.5.1: the server echoed the Close, so the client did not wait it out.
    assert trio.current_time() < 5
    assert client.protocol.close_received is not None
    assert client.protocol.close_received.code == 1000
    assert client.closed is not None
    assert client.closed.code == 1000
    assert client.state is ConnectionState.CLOSED


async def test_a_close_received_during_a_read_is_answered_even_by_an_idle_receiver() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    await client_stream.send_all(client_close_frame(1001))
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1001
    reply = await client_stream.receive_some()
    assert reply[:4] == b"\x88\x02\x03\xe9"  # Close 1001, unmasked (server to client)


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
    client_saw: list[int] = []

    async def client_reads_the_close() -> None:
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
        client_saw.append(closed.value.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_reads_the_close)
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
        assert info.value.code == 1009
    assert client_saw == [1009]


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
    _client, server = make_pair()
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

    async def send_many() -> None:
        for _ in range(10):
            await server.send("x" * 100)

    with trio.fail_after(60), pytest.raises(ConnectionClosed):
        await send_many()
    assert trio.current_time() - start <= 2 + 0.1
    assert server.closed is not None


async def test_other_senders_to_a_slow_peer_time_out_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client, server = make_pair(
        stream_pair=trio.testing.lockstep_stream_pair, send_timeout=2, write_buffer_size=10
    )
    outcomes: list[str] = []
    start = trio.current_time()

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
    assert trio.current_time() - start <= 2 + 0.1


async def test_bytes_fed_from_outside_are_settled_by_the_next_receive() -> None:
    # What arrived behind the handshake is fed before anyone reads: a protocol error in it
    # must still close the connection (with its Close sent), not leave receive() waiting.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketConnection(
        StreamTransport(server_stream), WebSocketProtocol(Role.SERVER, max_message_size=10)
    )
    mask = b"\x00\x00\x00\x00"
    server.feed(b"\x81\x85" + mask + b"hello" + b"\x81\x8b" + mask + b"hello world")
    assert await server.receive() == "hello"
    with trio.fail_after(1), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1009
    reply = await client_stream.receive_some()
    assert reply[0] == 0x88
    assert reply[2:4] == b"\x03\xf1"  # Close 1009 (and a reason)


async def test_receive_nowait_hands_out_what_one_read_brought_and_never_reads() -> None:
    from trio_ws._connection import _MESSAGES_PER_CHECKPOINT

    client, server = make_pair()
    with pytest.raises(trio.WouldBlock):
        server.receive_nowait()  # nothing read yet, and it does not read
    for text in ("a", "b", "c"):
        client.protocol.send_text(text)
    client.protocol.send_bytes(b"d")
    await client.transport.send_all(client.protocol.data_to_send())  # one chunk
    with trio.fail_after(5):
        assert await server.receive() == "a"
        assert [server.receive_nowait(), server.receive_nowait(), server.receive_nowait()] == [
            "b",
            "c",
            b"d",
        ]
        assert server.messages_in == 4
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        await client.send("e")  # arrives, but only a receive() reads it
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        assert await server.receive() == "e"
        # Messages taken without waiting count toward the receiver's next checkpoint.
        for i in range(2 * _MESSAGES_PER_CHECKPOINT):
            client.protocol.send_text(str(i))
        await client.transport.send_all(client.protocol.data_to_send())
        me = trio.lowlevel.current_task()

        class Steps(trio.abc.Instrument):
            count = 0  # our task's steps: each ends at a checkpoint

            def after_task_step(self, task: trio.lowlevel.Task) -> None:
                if task is me:
                    self.count += 1

        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        try:
            assert await server.receive() == "0"  # reads: a checkpoint
            seen = steps.count
            for i in range(1, _MESSAGES_PER_CHECKPOINT):
                assert server.receive_nowait() == str(i)
            assert steps.count == seen  # no checkpoint without waiting
            assert await server.receive() == str(_MESSAGES_PER_CHECKPOINT)
            assert steps.count > seen  # the 17th message since the read: a checkpoint first
        finally:
            trio.lowlevel.remove_instrument(steps)
        while True:
            try:
                server.receive_nowait()
            except trio.WouldBlock:
                break
        # Closed: what was received before is still handed out, then the close.
        client.protocol.send_text("last")
        await client.transport.send_all(client.protocol.data_to_send())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            assert await server.receive() == "last"
            with pytest.raises(ConnectionClosed):
                await server.receive()
        with pytest.raises(ConnectionClosed) as info:
            server.receive_nowait()
        assert info.value.code == 1000


async def test_a_close_fed_from_outside_is_answered() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketConnection(StreamTransport(server_stream), WebSocketProtocol(Role.SERVER))
    server.feed(client_close_frame(1000))
    with trio.fail_after(1), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1000
    reply = await client_stream.receive_some()
    assert reply[:4] == b"\x88\x02\x03\xe8"


# ---------------------------------------------------------------------------------------
# The whole server on memory streams, on virtual time: the DESIGN.md defaults exactly


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are memory stream pairs made by :meth:`connect`."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        await self._send.aclose()

    def connect_raw(self) -> trio.abc.Stream:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._send.send_nowait(server_stream)
        return client_stream

    async def connect(self, target: str = "/ws") -> WebSocketConnection:
        """Open a WebSocket client connection (no compression) through the listener."""
        transport = StreamTransport(self.connect_raw())
        handshake = ClientHandshake("memory", target)
        await transport.send_all(handshake.data_to_send())
        response = None
        while response is None:
            response = handshake.receive_data(await transport.receive_some())
        conn = WebSocketConnection(transport, WebSocketProtocol(Role.CLIENT))
        if handshake.trailing_data:
            conn.feed(handshake.trailing_data)
        return conn


async def login(conn: WebSocketConnection, name: str) -> None:
    await conn.send({"type": "login", "name": name})
    assert json.loads(await conn.receive()) == {"type": "welcome", "name": name}


async def test_default_login_time_is_30_seconds(autojump_clock: trio.testing.MockClock) -> None:
    listener = MemoryListener()
    app = create_app()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        conn = await listener.connect()
        start = trio.current_time()
        with pytest.raises(ConnectionClosed) as info:
            await conn.receive()
        assert info.value.code == 1008
        assert trio.current_time() - start == pytest.approx(30, abs=0.01)
        nursery.cancel_scope.cancel()


async def test_default_handshake_time_is_10_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    app = create_app()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        stream = listener.connect_raw()
        await stream.send_all(b"GET /ws HTTP/1.1\r\n")
        start = trio.current_time()
        assert await stream.receive_some() == b""  # dropped without a response
        assert trio.current_time() - start == pytest.approx(10, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert app.server.statistics().sockets == 0
        nursery.cancel_scope.cancel()


async def test_default_keepalive_pings_after_20_s_and_closes_1011_20_s_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    app = create_app()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.serve, listeners=[listener]))
        mute = await listener.connect()
        await login(mute, "mute")
        mute.protocol.auto_pong = False  # this client will never answer a ping
        alive = await listener.connect()
        await login(alive, "alive")
        start = trio.current_time()
        alive_task_done = trio.Event()

        async def keep_reading() -> None:
            with trio.move_on_after(200):
                await alive.receive()  # answers pings while it waits
            alive_task_done.set()

        nursery.start_soon(keep_reading)
        with pytest.raises(ConnectionClosed) as info:
            await mute.receive()
        elapsed = trio.current_time() - start
        assert info.value.code == 1011
        # Ping after 20 s of silence, close 20 s after an unanswered ping; the keepalive
        # task checks every interval / 4, so each step may come up to one tick late.
        assert 40 < elapsed <= 40 + 2 * 20 / 4 + 0.01
        # The client that answers is still there long after.
        await alive_task_done.wait()
        assert alive.closed is None
        await alive.send({"type": "ping"})
        assert json.loads(await alive.receive()) == {"type": "pong"}
        assert app.clients.names() == ["alive"]
        nursery.cancel_scope.cancel()


async def test_shutdown_on_streams_sends_1001_and_keeps_to_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    app = create_app()
    codes: list[int] = []
    async with trio.open_nursery() as outer:
        scope = trio.CancelScope()
        done = trio.Event()

        async def serve() -> None:
            with scope:
                await app.serve(listeners=[listener])
            done.set()

        outer.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        clients = [await listener.connect() for _ in range(5)]
        for i, conn in enumerate(clients):
            await login(conn, f"m{i}")

        async def read(conn: WebSocketConnection) -> None:
            try:
                await conn.receive()
            except ConnectionClosed as exc:
                codes.append(exc.code)

        for conn in clients[:4]:
            outer.start_soon(read, conn)  # the fifth never reads: no Close reply from it
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        scope.cancel()
        await done.wait()
        assert trio.current_time() - start == pytest.approx(5, abs=0.01)  # close_timeout
    assert codes == [1001] * 4
    assert len(app.clients) == 0


async def test_cancelling_a_receive_while_its_pong_is_written_keeps_the_connection() -> None:
    # Lockstep streams: a write waits until the peer reads, as a TLS write can.
    client, server = make_pair(stream_pair=trio.testing.lockstep_stream_pair)
    cancelled = trio.Event()
    pongs: list[trio.Event] = []

    async def server_side() -> None:
        pongs.append(await server.ping(b"are you there"))
        await cancelled.wait()  # not reading: the client's Pong write waits
        await server.receive()  # reads the Pong (then waits for more)

    async def cancel_when_blocked(scope: trio.CancelScope) -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        cancelled.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        with trio.CancelScope() as receive_scope:
            nursery.start_soon(cancel_when_blocked, receive_scope)
            await client.receive()  # reads the Ping, then blocks writing the Pong
        assert receive_scope.cancelled_caught
        assert client.closed is None  # the cancel did not cut the Pong off
        with trio.fail_after(1):
            await pongs[0].wait()
        await client.send("still open")
        nursery.cancel_scope.cancel()


async def test_a_write_during_a_drain_waits_behind_the_frame_being_written() -> None:
    """A write that finds the kernel buffer free while a drain is mid-chunk must queue.

    The drainer takes the pending bytes out of the queue while it writes them; a second
    writer that found the queue empty used to write at once, into the middle of a frame.
    """
    import socket

    from trio_ws._transport import SocketTransport

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        server = WebSocketConnection(SocketTransport(ours), WebSocketProtocol(Role.SERVER))
        big = b"x" * 500_000
        received = bytearray()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send, big)  # partly written, the rest drains
                await trio.testing.wait_all_tasks_blocked()
                assert server._draining
                received += theirs.recv(65536)  # room in the kernel buffer, drainer asleep
                server.send_nowait("hello")
                while len(received) < (10 + len(big)) + (2 + 5):  # the two frames
                    await trio.lowlevel.wait_readable(theirs)
                    received += theirs.recv(1 << 20)
        client = WebSocketProtocol(Role.CLIENT)
        client.receive_data(bytes(received))
        messages = [event.data for event in client.events_received()]  # type: ignore[attr-defined]
        assert messages == [big, "hello"]


async def test_a_chunk_of_many_messages_is_handed_out_with_checkpoints() -> None:
    """A flooder's 64 KiB of tiny messages must not hold the loop for all of them."""
    from trio_ws._connection import _MESSAGES_PER_CHECKPOINT

    client, server = make_pair()
    for i in range(2000):
        client.protocol.send_text(str(i))
    await client.transport.send_all(client.protocol.data_to_send())  # one burst
    ran = 0
    longest = 0

    async def neighbour() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(neighbour)
            streak, seen = 0, ran
            for i in range(2000):
                assert await server.receive() == str(i)
                if ran == seen:
                    streak += 1
                    longest = max(longest, streak)
                else:
                    streak, seen = 0, ran
            nursery.cancel_scope.cancel()
    # Each checkpoint lets the neighbour run once; trio may run us first in that batch.
    assert longest <= 2 * _MESSAGES_PER_CHECKPOINT


async def test_a_fragmented_message_that_never_ends_is_closed_1008(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Empty continuations hold no memory, and keep the keepalive content: the message
    deadline still ends them."""
    from tests.conftest import demo_app, in_memory

    app = demo_app(message_timeout=30, ping_interval=5)
    async with in_memory(app) as connect, connect() as conn:
        await conn.send({"type": "login", "name": "trickle"})
        await conn.receive()
        start = trio.current_time()
        conn.protocol.send_text("never", final=False)
        await conn.transport.send_all(conn.protocol.data_to_send())

        async def trickle() -> ConnectionClosed:
            while True:
                conn.protocol.send_text("", final=False)  # an empty continuation a second
                await conn.transport.send_all(conn.protocol.data_to_send())
                with trio.move_on_after(1):
                    try:
                        await conn.receive()
                    except ConnectionClosed as exc:
                        return exc

        closed = await trickle()
        assert closed.code == 1008
        assert closed.reason == "message timeout"
        assert 30 <= trio.current_time() - start <= 40


async def test_large_messages_behind_a_full_socket_arrive_whole_and_in_order() -> None:
    """A large payload is written apart from its header (sendmsg) and, once the kernel's
    buffer is full, drained as the buffers it is (vectored writes, cut anywhere): several
    of them, with small messages in between, queued while the peer does not read, arrive
    whole and in order."""
    import socket

    from trio_ws._transport import SocketTransport

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    b.setblocking(False)
    big = [bytes([n]) * (3 << 20) for n in range(3)]
    expected: list[str | bytes] = []
    reader = WebSocketProtocol(Role.CLIENT, max_message_size=None)
    got: list[object] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = WebSocketConnection(
                SocketTransport(a),
                WebSocketProtocol(Role.SERVER),
                write_buffer_size=64 << 20,
                background=nursery,
            )
            for n, payload in enumerate(big):
                expected.extend([payload, f"small {n}"])
                server.send_nowait(payload)
                server.send_nowait(f"small {n}")
            assert server.pending_size > 4 << 20  # queued: the peer has read nothing
            while len(got) < len(expected):
                await trio.lowlevel.wait_readable(b)
                try:
                    reader.receive_data(b.recv(100_003))  # an odd size: cuts anywhere
                except BlockingIOError:
                    continue
                got += [e.data for e in reader.events_received()]  # type: ignore[union-attr]
            await server.drain()
    assert got == expected
    assert server.pending_size == 0
    a.close()
    b.close()


async def test_a_full_read_lets_only_the_next_one_skip_its_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a read that filled its buffer the next read goes straight to recv() (the
    rest of a large message is there); the one after it checkpoints again, so a peer that
    keeps the buffer full cannot hold the loop. A short read never lets the next skip."""
    import socket

    from trio_ws import _transport

    checkpoints: list[int] = []
    real = trio.lowlevel.cancel_shielded_checkpoint

    async def counted() -> None:
        checkpoints.append(1)
        await real()

    monkeypatch.setattr(trio.lowlevel, "cancel_shielded_checkpoint", counted)
    a, b = socket.socketpair()
    transport = _transport.SocketTransport(a)
    size = _transport.RECEIVE_SIZE
    took = []
    for _ in range(2):  # two full reads' worth at a time: what the socket buffer holds
        b.sendall(b"x" * (2 * size))
        for _ in range(2):
            before = len(checkpoints)
            data = await transport.receive_some()
            took.append((len(data), len(checkpoints) - before))
    assert took == [(size, 1), (size, 0), (size, 1), (size, 0)]
    b.sendall(b"y" * 10)
    before = len(checkpoints)
    assert await transport.receive_some() == b"y" * 10
    b.sendall(b"z" * 10)
    assert await transport.receive_some() == b"z" * 10
    assert len(checkpoints) - before == 2  # short reads: each one checkpointed
    a.close()
    b.close()
