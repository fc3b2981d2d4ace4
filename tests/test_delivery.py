"""The delivery engine's own rules, each checked where a subscriber can see it.

The broadcast tests (``test_broadcast.py``) cover fan-out end to end; these pin down what
the engine promises in its docstrings and that those tests could not tell apart: who is
counted and how a too-slow subscriber is closed, what a flush leaves out, in which order
queues are flushed, what happens to work queued before the hub runs, and that a broker's
``gap`` travels in the stream like a message.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import trio
import trio.testing

from tests.test_broadcast import Reader, _SteppingBroker, count_compressions, memory_subscriber
from trio_ws import WebSocketConnection
from trio_ws._broadcast import BroadcastHub, QueueError
from trio_ws._delivery import _ROUND_BYTES, DeliveryEngine, LostMessages
from trio_ws._queue_model import Message
from trio_ws._subscriber import DRAINING, IDLE, ChannelSubscriber
from trio_ws._transport import SocketTransport
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._events import Close, TextMessage
from trio_ws.protocol._frames import Opcode, Role, encode_frame


class SocketPeer:
    """A subscriber's connection over a socket pair, and the client end the test reads."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.theirs.setblocking(False)
        self.conn = WebSocketConnection(SocketTransport(self.ours), WebSocketProtocol(Role.SERVER))
        self.client = WebSocketProtocol(Role.CLIENT)
        self.texts: list[Any] = []
        self.close: Close | None = None

    async def read_until(self, count: int) -> list[Any]:
        while len(self.texts) < count and self.close is None:
            await trio.lowlevel.wait_readable(self.theirs)
            self.client.receive_data(self.theirs.recv(1 << 20))
            for event in self.client.events_received():
                if isinstance(event, TextMessage):
                    self.texts.append(json.loads(event.data))
                elif isinstance(event, Close):
                    self.close = event
        return self.texts

    def __enter__(self) -> SocketPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ours.close()
        self.theirs.close()


async def read_close(reader: Reader) -> tuple[list[Any], Close]:
    """Read a lockstep subscriber's stream up to the Close frame: the messages before it,
    and the Close."""
    protocol = reader.protocol
    texts: list[Any] = []
    while True:
        protocol.receive_data(await reader.stream.receive_some(65536))
        for event in protocol.events_received():
            if isinstance(event, TextMessage):
                texts.append(json.loads(event.data))
            elif isinstance(event, Close):
                return texts, event


# ---------------------------------------------------------------------------------------
# Too slow: the disconnect policy


async def test_too_slow_subscribers_are_counted_and_told_1013_behind_what_they_had() -> None:
    hub = BroadcastHub(max_subscriber_buffer=4)
    queue = hub.queue("fast", policy="disconnect")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        one, one_reader = await memory_subscriber(hub, "one")
        two, _two_reader = await memory_subscriber(hub, "two")
        await hub.subscribe(queue, one)
        await hub.subscribe(queue, two)
        for i in range(10):  # nobody reads: the lanes (4) overflow, one flush at a time
            await queue.publish({"i": i})
            await trio.testing.wait_all_tasks_blocked()
        assert hub.kicked == 2
        assert hub.statistics().kicked == 2
        assert one.removed
        assert two.removed
        with trio.fail_after(5):
            before, close = await read_close(one_reader)
        assert (close.code, close.reason) == (1013, "subscriber too slow")
        # What was written before the kick went out first, whole and in order.
        assert [m["i"] for m in before] == list(range(len(before)))
        assert before
        nursery.cancel_scope.cancel()


async def test_a_too_slow_subscriber_that_takes_not_even_the_close_is_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = BroadcastHub(max_subscriber_buffer=2, close_timeout=3.0)
    queue = hub.queue("fast", policy="disconnect")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, _reader = await memory_subscriber(hub, "stuck")  # never reads a byte
        conn = sub.connection
        assert conn is not None
        await hub.subscribe(queue, sub)
        for i in range(5):
            await queue.publish({"i": i})
            await trio.testing.wait_all_tasks_blocked()
        assert hub.kicked == 1
        await trio.sleep(2.9)
        assert conn.closed is None  # the Close waits behind the first write, for 3 s
        await trio.sleep(0.2)
        assert conn.closed is not None
        assert (conn.closed.code, conn.closed.reason) == (1013, "subscriber too slow")
        nursery.cancel_scope.cancel()


async def test_a_kick_before_the_hub_runs_aborts_the_connection_with_1013() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q", policy="disconnect")
    sub, _reader = await memory_subscriber(hub, "early")
    await hub.subscribe(queue, sub)
    conn = sub.connection
    assert conn is not None
    hub.engine.kick(sub, queue)
    assert hub.kicked == 1
    assert sub.removed
    assert conn.closed is not None
    assert (conn.closed.code, conn.closed.reason) == (1013, "subscriber too slow")
    hub.engine.kick(sub, queue)  # a second kick of the same subscriber counts nothing
    assert hub.kicked == 1


async def test_kicks_are_logged_with_who_and_which_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = BroadcastHub(max_subscriber_buffer=2)
    queue = hub.queue("ticks", policy="disconnect")
    caplog.set_level(logging.INFO, logger="trio_ws.broadcast")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, _reader = await memory_subscriber(hub, "slow")
        assert sub.connection is not None
        await hub.subscribe(queue, sub)
        async with hub.open_subscription(queue, name="bot") as channel:
            for i in range(5):
                await queue.publish({"i": i})
                await trio.testing.wait_all_tasks_blocked()

            async def take_all() -> None:
                while True:
                    await channel.receive()

            with pytest.raises(QueueError, match="too slow for queue ticks"):
                await take_all()
        nursery.cancel_scope.cancel()
    messages = {r.getMessage() for r in caplog.records if r.name == "trio_ws.broadcast"}
    assert f"#{sub.connection.id} too slow for queue ticks: closing (1013)" in messages
    assert "channel subscriber 'bot' too slow for queue ticks" in messages


async def test_a_channel_subscriber_starts_not_overflowed() -> None:
    sub = ChannelSubscriber("bot", 10)
    assert sub.overflowed is False
    assert sub.state is DRAINING
    assert repr(sub) == "<ChannelSubscriber 'bot' channel draining>"


async def test_a_subscriber_shows_its_name_connection_and_state() -> None:
    hub = BroadcastHub()
    sub, _reader = await memory_subscriber(hub, "ann")
    assert sub.connection is not None
    assert repr(sub) == f"<Subscriber 'ann' #{sub.connection.id} {sub.state.value}>"


# ---------------------------------------------------------------------------------------
# What a flush writes


async def test_a_flush_leaves_out_what_was_retracted_before_it() -> None:
    """Messages retracted while they waited for the flusher never leave: a lone one, the
    first of several, one in the middle, the second of two."""
    hub = BroadcastHub()
    queue = hub.queue("q")
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        await hub.subscribe(queue, sub)
        # The hub is not running: what is published waits for the flusher.
        await queue.publish({"d": "lone"}, key="a")
        assert await queue.retract("a") == 1
        async with trio.open_nursery() as nursery:  # a flush of that one message alone
            await nursery.start(hub.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert peer.conn.messages_out == 0
        with pytest.raises(BlockingIOError):
            peer.theirs.recv(1)
        await queue.publish_many([{"d": "kept"}, {"d": "gone"}], keys=[None, "e"])
        assert await queue.retract("e") == 1
        async with trio.open_nursery() as nursery:  # a flush of two
            await nursery.start(hub.run)
            with trio.fail_after(5):
                assert [t["d"] for t in await peer.read_until(1)] == ["kept"]
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert peer.conn.messages_out == 1
        peer.texts.clear()
        await queue.publish_many(
            [{"d": "first"}, {"d": "second"}, {"d": "third"}], keys=["b", None, "c"]
        )
        await queue.publish_many([{"d": "x"}, {"d": "y"}, {"d": "z"}], keys=[None, "d", None])
        assert await queue.retract("b") == 1
        assert await queue.retract("d") == 1
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            with trio.fail_after(5):
                texts = await peer.read_until(4)
            await trio.testing.wait_all_tasks_blocked()
            assert peer.conn.messages_out == 5
            nursery.cancel_scope.cancel()
        assert [t["d"] for t in texts] == ["second", "third", "x", "z"]
        assert [t["seq"] for t in texts] == [5, 6, 7, 9]


async def test_a_message_retracted_before_the_flush_takes_no_room_in_a_busy_lane() -> None:
    """A busy subscriber's lane holds only what it will get: a retracted message offered
    to it would fill a lane of 2 and make the third message overflow (policy disconnect:
    a kick for a message it would never have received)."""
    hub = BroadcastHub(max_subscriber_buffer=2)
    queue = hub.queue("q", policy="disconnect")
    sub, reader = await memory_subscriber(hub, "busy")
    await hub.subscribe(queue, sub, reply=True)  # busy: the reply waits for the reader
    assert sub.state is DRAINING
    await queue.publish_many([{"d": "one"}, {"d": "gone"}, {"d": "two"}], keys=[None, "k", None])
    assert await queue.retract("k") == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.kicked == 0
        with trio.fail_after(5):
            got = await reader.read_until(3)
        assert [m.get("d") for m in got] == [None, "one", "two"]  # subscribed, then the two
        nursery.cancel_scope.cancel()


async def test_one_write_of_many_messages_counts_each_message() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        await hub.subscribe(queue, sub)
        await queue.publish_many([{"i": i} for i in range(5)])  # one flush, one write
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            with trio.fail_after(5):
                await peer.read_until(5)
            assert peer.conn.messages_out == 5
            nursery.cancel_scope.cancel()


async def test_queues_waiting_together_are_flushed_by_priority() -> None:
    hub = BroadcastHub()
    low = hub.queue("low", priority=0)
    high = hub.queue("high", priority=5)
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        await hub.subscribe(low, sub)
        await hub.subscribe(high, sub)
        await low.publish({"q": "low"})  # first in, but waits behind the higher priority
        await high.publish({"q": "high"})
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            with trio.fail_after(5):
                texts = await peer.read_until(2)
            nursery.cancel_scope.cancel()
        assert [t["q"] for t in texts] == ["high", "low"]


async def test_a_subscriber_whose_socket_broke_is_removed_and_the_others_still_get_it() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    with SocketPeer() as broken, SocketPeer() as fine:
        gone = await hub.subscriber(broken.conn, "gone")
        here = await hub.subscriber(fine.conn, "here")
        await hub.subscribe(queue, gone)
        await hub.subscribe(queue, here)
        broken.theirs.close()  # the next write to it fails (EPIPE)
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await queue.publish({"d": "one"})
            with trio.fail_after(5):
                assert [t["d"] for t in await fine.read_until(1)] == ["one"]
            await trio.testing.wait_all_tasks_blocked()
            assert gone.removed
            assert not here.removed
            assert queue.local_members() == ["here"]
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# The engine's life


async def test_work_queued_before_the_hub_runs_goes_out_when_it_starts() -> None:
    """A subscriber made busy before run() (its ``subscribed`` reply could not be written
    at once) gets its send task when the hub starts, and a publish before then too."""
    hub = BroadcastHub()
    queue = hub.queue("q")
    sub, reader = await memory_subscriber(hub, "early")
    await hub.subscribe(queue, sub, reply=True)  # a memory stream takes nothing at once
    assert sub.state is DRAINING
    await queue.publish({"d": "before"})
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        with trio.fail_after(5):
            messages = await reader.read_until(2)
        assert messages[0]["type"] == "subscribed"
        assert messages[1]["d"] == "before"
        await trio.testing.wait_all_tasks_blocked()
        assert sub.state is IDLE
        nursery.cancel_scope.cancel()


async def test_a_hub_runs_once_at_a_time_and_again_after_it_stopped() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.engine.run)
        with pytest.raises(RuntimeError, match=r"^this hub is running already$"):
            await hub.engine.run()
        nursery.cancel_scope.cancel()
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        await hub.subscribe(queue, sub)
        async with trio.open_nursery() as nursery:  # the second run delivers as the first
            await nursery.start(hub.run)
            await queue.publish({"d": "again"})
            with trio.fail_after(5):
                assert [t["d"] for t in await peer.read_until(1)] == ["again"]
            nursery.cancel_scope.cancel()


def test_a_broker_that_delivers_in_steps_makes_the_flusher_gather() -> None:
    assert BroadcastHub(broker=_SteppingBroker()).engine.gather is True
    assert BroadcastHub().engine.gather is False
    assert _engine(6).gather is False


# ---------------------------------------------------------------------------------------
# A broker's gap travels in the stream


async def test_messages_a_broker_lost_reach_subscribers_as_a_gap_in_order() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q", history=10)
    sub, reader = await memory_subscriber(hub, "busy")  # always behind: through its buffer
    with SocketPeer() as peer:
        idle = await hub.subscriber(peer.conn, "idle")
        await hub.subscribe(queue, idle)
        await hub.subscribe(queue, sub)
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await queue.publish({"d": "one"})
            await trio.testing.wait_all_tasks_blocked()
            hub.broker.on_gap("q", 2, 4)  # what a broker that was away could not bring
            await queue.publish({"d": "five"})
            with trio.fail_after(5):
                seen = await peer.read_until(3)
                busy = await reader.read_until(3)
            nursery.cancel_scope.cancel()
        gap = {"type": "gap", "group": "q", "from": 2, "to": 4}
        for stream in (seen, busy):
            assert stream[0]["d"] == "one"
            assert stream[1] == gap
            assert stream[2]["d"] == "five"


def test_a_lost_range_is_numbered_by_its_last_seq_and_carries_its_notice() -> None:
    lost = LostMessages("q", 3, 7)
    assert (lost.first, lost.seq) == (3, 7)
    client = WebSocketProtocol(Role.CLIENT)
    client.receive_data(lost.frame)
    (event,) = client.events_received()
    assert isinstance(event, TextMessage)
    assert json.loads(event.data) == {"type": "gap", "group": "q", "from": 3, "to": 7}
    assert bytes(lost.payload) == event.data.encode()


async def test_a_second_subscribe_while_busy_queues_its_reply_behind_the_first() -> None:
    """deliver_now() for a connection subscriber already draining leaves the new reply to
    its send task: no write of its own, nothing raised, both replies in order."""
    hub = BroadcastHub()
    first = hub.queue("first")
    second = hub.queue("second")
    sub, reader = await memory_subscriber(hub, "busy")
    await hub.subscribe(first, sub, reply=True)  # busy: the reply waits for the reader
    assert sub.state is DRAINING
    await hub.subscribe(second, sub, reply=True)
    assert sub.state is DRAINING
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        with trio.fail_after(5):
            got = await reader.read_until(2)
        assert [(m.get("type"), m.get("group")) for m in got] == [
            ("subscribed", "first"),
            ("subscribed", "second"),
        ]
        nursery.cancel_scope.cancel()


async def test_a_subscribe_reply_to_a_broken_socket_removes_the_subscriber() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        peer.theirs.close()
        await hub.subscribe(queue, sub, reply=True)  # the reply is written at once: EPIPE
        assert sub.removed
        assert len(queue) == 0


# ---------------------------------------------------------------------------------------
# A backlogged subscriber's rounds


async def test_a_backlog_goes_out_in_bounded_rounds_each_counting_its_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = BroadcastHub(max_subscriber_buffer=200, max_subscriber_bytes=1 << 24)
    queue = hub.queue("q")
    body = "x" * 10_000
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "slow")
        conn = sub.connection
        assert conn is not None
        writes: list[int] = []
        original = WebSocketConnection.send_frames_nowait

        def recording(self: WebSocketConnection, frames: bytes, count: int = 1) -> bool:
            writes.append(len(frames))
            return original(self, frames, count)

        monkeypatch.setattr(WebSocketConnection, "send_frames_nowait", recording)
        await hub.subscribe(queue, sub)
        await queue.publish({"i": 0, "b": body})  # the first write: the reader is not reading
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 101):  # a backlog of about 1 MB behind it
            await queue.publish({"i": i, "b": body})
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            got = await reader.read_until(101)
        assert [m["i"] for m in got] == list(range(101))
        assert conn.messages_out == 101
        assert len(writes) >= 4  # about 1 MB in rounds of 256 KiB
        assert max(writes) <= _ROUND_BYTES + 10_100
        nursery.cancel_scope.cancel()


async def test_a_backlog_is_dropped_once_the_connection_closes() -> None:
    hub = BroadcastHub()
    queue = hub.queue("q")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub, reader = await memory_subscriber(hub, "slow")
        conn = sub.connection
        assert conn is not None
        await hub.subscribe(queue, sub)
        await queue.publish({"i": 0})
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 5):
            await queue.publish({"i": i})
        await trio.testing.wait_all_tasks_blocked()
        assert sub.buffered == 4
        conn.close_nowait(1001, "going away")
        with trio.fail_after(5):
            before, close = await read_close(reader)
            await trio.testing.wait_all_tasks_blocked()  # the send task ended, not spinning
        assert [m["i"] for m in before] == [0]  # only what was written before the Close
        assert close.code == 1001
        assert sub.buffered == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# Shared compressed frames


def _engine(level: int) -> DeliveryEngine:
    """An engine of its own (the hub's defaults are the hub's: it passes them)."""
    return DeliveryEngine(lambda sub: None, close_timeout=5.0, compression_level=level)


def _message(text: str) -> Message:
    body = text.encode()
    frame = encode_frame(Opcode.TEXT, body)
    return Message(1, frame, payload=memoryview(frame)[len(frame) - len(body) :])


def test_a_message_is_compressed_once_per_window_by_one_compressor_per_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_compressions(monkeypatch)
    engine = _engine(6)
    first, second = _message("a" * 500), _message("b" * 500)
    frame = engine._compressed(first, 15)
    assert engine._compressed(first, 15) is frame
    assert calls() == 1
    assert frame[0] & 0x40  # RSV1: a compressed message
    compressor = engine._compressors[15]
    engine._compressed(second, 15)
    assert engine._compressors == {15: compressor}
    engine._compressed(first, 9)
    assert sorted(engine._compressors) == [9, 15]
    assert calls() == 3
    assert first.compressed is not None
    assert sorted(first.compressed) == [9, 15]


def test_the_compression_level_is_the_engines() -> None:
    text = "".join(chr(65 + (i * 7919) % 26) for i in range(4000))  # compresses, not to nothing
    stored = _engine(0)._compressed(_message(text), 15)
    best = _engine(9)._compressed(_message(text), 15)
    assert len(stored) > len(text) > len(best)


async def test_a_backlogged_deflate_subscriber_gets_the_shared_compressed_frames() -> None:
    hub = BroadcastHub()
    sub, _reader = await memory_subscriber(hub, "deflate")
    sub._variant = 15  # as negotiated with server_no_context_takeover
    message = _message("compress me " * 50)
    rendered = hub.engine._render(sub, [message])
    assert rendered == hub.engine._compressed(message, 15)
    assert rendered[0] & 0x40
    sub._variant = 0
    assert hub.engine._render(sub, [message]) == message.frame


# ---------------------------------------------------------------------------------------
# Gathering is bounded


async def test_a_lone_message_through_a_stepping_broker_waits_a_few_passes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("trio_ws._delivery.GATHER_SECONDS", 60.0)  # count passes only
    broker = _SteppingBroker()
    hub = BroadcastHub(broker=broker)
    broker.take_node_callback()
    queue = hub.queue("g")
    with SocketPeer() as peer:
        sub = await hub.subscriber(peer.conn, "s")
        await hub.subscribe(queue, sub)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.hand_over)
            await nursery.start(hub.run)
            await trio.testing.wait_all_tasks_blocked()
            await queue.publish({"d": "lone"})
            passes = 0
            while peer.conn.messages_out == 0:
                await trio.lowlevel.checkpoint()
                passes += 1
                assert passes < 10, "a lone message waited for a burst that never came"
            nursery.cancel_scope.cancel()
