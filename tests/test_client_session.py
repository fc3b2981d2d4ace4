"""``trio_ws.open_session``: login, requests, and resuming through server restarts.

The servers are the demo app (``create_app``) served over in-memory streams, under the
autojump clock (backoff waits cost no real time), and stopped and started again on purpose:
with the memory broker a restart loses the history (a new epoch), so the session reports
it and takes the new history. The restarts on a real ``redis-server``, where the history
survives, are in ``tests/e2e/test_session_restarts.py``.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trio_ws
from trio_ws import Backoff, HistoryLost, QueueGap, Received
from trio_ws.demo.app import create_app
from trio_ws.testing import MemoryListener

FAST = Backoff(initial=0.5, maximum=2.0, jitter=0.5)


class RestartableServer:
    """An app served in memory that a test stops and starts again; ``make`` builds each
    incarnation (a new app: with the memory broker, a new history and epoch)."""

    def __init__(self, nursery: trio.Nursery, make: Callable[[], Any]) -> None:
        self._nursery = nursery
        self._make = make
        self.listener: MemoryListener | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        self.refusing = False
        self.attempts = 0
        self.app: Any = None

    async def start(self) -> None:
        assert self.listener is None
        self.app = self._make()
        self.listener = MemoryListener()
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            assert self._scope is not None
            assert self._stopped is not None
            try:
                with self._scope:
                    await self.app.serve(listeners=[self.listener], task_status=task_status)
            finally:
                self._stopped.set()

        await self._nursery.start(serve)

    async def stop(self) -> None:
        """Shut the server down (its clients get 1001) and refuse connections."""
        assert self._scope is not None
        assert self._stopped is not None
        assert self.listener is not None
        listener, self.listener = self.listener, None
        self._scope.cancel()
        await self._stopped.wait()
        await listener.aclose()

    async def connect(self) -> trio.abc.Stream:
        """``open_stream`` for a session: refused while stopped (or ``refusing``)."""
        self.attempts += 1
        if self.listener is None or self.refusing:
            raise ConnectionRefusedError("the server is down")
        return await self.listener.connect()

    @asynccontextmanager
    async def client(self, name: str) -> AsyncIterator[trio_ws.WebSocketConnection]:
        """A plain logged-in connection (a publisher that is not under test)."""
        assert self.listener is not None
        async with trio_ws.connect("ws://test/ws", stream=await self.listener.connect()) as ws:
            await ws.send({"type": "login", "name": name})
            assert (await receive_json(ws))["type"] == "welcome"
            yield ws


async def receive_json(ws: trio_ws.WebSocketConnection) -> Any:
    import json

    return json.loads(await ws.receive())


async def publish(ws: trio_ws.WebSocketConnection, group: str, *texts: str) -> None:
    """Publish ``texts`` and wait until the server has handled them (a ping after)."""
    for text in texts:
        await ws.send({"type": "grouped", "action": "publish", "group": group, "text": text})
    await ws.send({"type": "ping"})
    while (await receive_json(ws))["type"] != "pong":
        pass


@asynccontextmanager
async def restartable(make: Callable[[], Any] | None = None) -> AsyncIterator[RestartableServer]:
    async with trio.open_nursery() as nursery:
        make = make or functools.partial(create_app, ticks_per_second=1)
        server = RestartableServer(nursery, make)
        await server.start()
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def session(server: RestartableServer, name: str = "alice", **options: Any) -> Any:
    options.setdefault("reconnect", FAST)
    return trio_ws.open_session("ws://test/ws", name=name, open_stream=server.connect, **options)


async def take(sub: trio_ws.Subscription, count: int) -> list[Any]:
    return [await sub.receive() for _ in range(count)]


def texts(items: list[Any]) -> list[tuple[int, str]]:
    return [(item.seq, item.message["text"]) for item in items if isinstance(item, Received)]


# ------------------------------------------------------------------ requests


async def test_login_and_requests(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server) as alice, session(server, "bob") as bob:
        assert alice.name == "alice"
        assert alice.state is trio_ws.SessionState.CONNECTED
        assert await alice.echo("hi") == "hi"
        await alice.ping()
        assert await alice.who() == ["alice", "bob"]
        lobby = await bob.subscribe("lobby")
        assert await alice.members("lobby") == ["bob"]
        await alice.publish("lobby", "hello")
        item = await lobby.receive()
        assert isinstance(item, Received)
        assert (item.queue, item.seq, item.message["from"]) == ("lobby", 1, "alice")
        await alice.send_to("bob", "psst")
        assert await bob.receive() == {"type": "routed", "from": "alice", "text": "psst"}
        with pytest.raises(trio_ws.RequestFailed) as failed:
            await alice.send_to("nobody", "hi")
        assert failed.value.code == "unknown_recipient"
        with pytest.raises(trio_ws.RequestFailed) as failed:
            await alice.publish("no spaces allowed", "hi")
        assert failed.value.code == "bad_message"
        # The replies after an error still find their requests.
        assert await alice.echo("after") == "after"
        with pytest.raises(ValueError, match="subscribe"):
            await alice.request({"type": "grouped", "action": "subscribe", "group": "g"})
        with pytest.raises(RuntimeError, match="already subscribed"):
            await bob.subscribe("lobby")


async def test_pipelined_requests_from_many_tasks_get_their_own_replies(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            if i % 3 == 0:
                with pytest.raises(trio_ws.RequestFailed):
                    await alice.publish("bad group!", str(i))
                results[i] = "failed"
            else:
                results[i] = await alice.echo(str(i))

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        assert results == {i: "failed" if i % 3 == 0 else str(i) for i in range(30)}


async def test_subscribe_refused_raises_and_is_not_kept(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server) as alice:
        with pytest.raises(trio_ws.RequestFailed) as failed:
            await alice.subscribe("stream")  # reserved for the ticker
        assert failed.value.code == "bad_message"
        lobby = await alice.subscribe("lobby")  # the session still works
        assert lobby.seq == 0


# ------------------------------------------------------------------ restarts (memory broker)


async def test_memory_restart_reports_the_lost_history_and_takes_the_new_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        lobby = await alice.subscribe("lobby")
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "a", "b", "c")
        assert texts(await take(lobby, 3)) == [(1, "a"), (2, "b"), (3, "c")]
        first_epoch = lobby.epoch
        assert first_epoch is not None

        await server.stop()  # alice gets 1001 and starts reconnecting
        server.refusing = True
        await server.start()  # a new app: memory broker, new history
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "while", "away")  # alice is still away
        server.refusing = False

        lost = await lobby.receive()
        assert isinstance(lost, HistoryLost)
        assert (lost.queue, lost.last_seq, lost.previous_epoch) == ("lobby", 3, first_epoch)
        assert lost.epoch == lobby.epoch != first_epoch
        # What was published while away arrives, numbered in the new history.
        assert texts(await take(lobby, 2)) == [(1, "while"), (2, "away")]
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "live")
        assert texts(await take(lobby, 1)) == [(3, "live")]
        stats = alice.statistics()
        assert stats.connections == 2
        assert stats.duplicates == 0


async def test_memory_restart_with_more_than_history_while_away_is_a_gap(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        lobby = await alice.subscribe("lobby")
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "a")
        assert texts(await take(lobby, 1)) == [(1, "a")]
        await server.stop()
        server.refusing = True
        await server.start()
        async with server.client("bob") as bob:  # 105 while away; the queue keeps 100
            await publish(bob, "lobby", *(f"m{i}" for i in range(1, 106)))
        server.refusing = False
        lost = await lobby.receive()
        assert isinstance(lost, HistoryLost)
        assert lost.last_seq == 1
        assert await lobby.receive() == QueueGap("lobby", 1, 5)
        items = await take(lobby, 100)
        assert texts(items) == [(i, f"m{i}") for i in range(6, 106)]
        # Every message published while away arrived or is covered by the gap.
        assert alice.statistics().gaps == 1


async def test_restart_resumes_the_ticker_and_every_group(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server) as alice:
        groups = {name: await alice.subscribe(name) for name in ("g1", "g2")}
        stream = await alice.subscribe_stream()
        tick = await stream.receive()
        assert isinstance(tick, Received)
        assert tick.message["type"] == "streamed"
        await server.stop()
        await server.start()
        async with server.client("bob") as bob:
            for name in groups:
                await publish(bob, name, f"to {name}")
        for name, sub in groups.items():
            assert isinstance(await sub.receive(), HistoryLost)
            assert texts(await take(sub, 1)) == [(1, f"to {name}")]
        assert isinstance(await stream.receive(), HistoryLost)
        seqs = [item.seq for item in await take(stream, 3)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 3  # the new ticker, in order


async def test_a_request_during_an_outage_waits_for_the_reconnection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        await server.stop()
        async with trio.open_nursery() as nursery:
            replies: list[str] = []

            async def ask() -> None:
                replies.append(await alice.echo("later"))

            nursery.start_soon(ask)
            await trio.sleep(5)
            assert replies == []
            assert alice.state is trio_ws.SessionState.CONNECTING
            await server.start()
        assert replies == ["later"]


async def test_unsubscribed_queue_is_not_resumed(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server) as alice:
        lobby = await alice.subscribe("lobby")
        other = await alice.subscribe("other")
        async with lobby:
            pass  # unsubscribed
        with pytest.raises(trio.ClosedResourceError):
            await lobby.receive()
        await server.stop()
        await server.start()
        await alice.wait_connected()
        assert isinstance(await other.receive(), HistoryLost)  # resumed
        assert await alice.members("lobby") == []
        assert await alice.members("other") == ["alice"]


# ------------------------------------------------------------------ ends that are final


async def test_gives_up_after_max_attempts(autojump_clock: trio.abc.Clock) -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, jitter=0.0, max_attempts=4)
    async with restartable() as server:
        times: list[float] = []
        connect = server.connect

        async def counted() -> trio.abc.Stream:
            times.append(trio.current_time())
            return await connect()

        sessions: list[trio_ws.Session] = []

        async def stop_the_server() -> None:
            async with trio_ws.open_session(
                "ws://test/ws", name="alice", reconnect=backoff, open_stream=counted
            ) as alice:
                sessions.append(alice)
                await server.stop()
                await trio.sleep_forever()  # cancelled when the session gives up

        with pytest.raises(trio_ws.ReconnectFailed) as failed:
            await stop_the_server()
        (alice,) = sessions
        assert failed.value.attempts == 4
        assert isinstance(failed.value.__cause__, ConnectionRefusedError)
        assert alice.state is trio_ws.SessionState.CLOSED
        # One good connection, then 4 failed attempts: 1 s after the loss, then 2, 4 and
        # 4 s (the maximum) apart.
        waits = [round(b - a, 6) for a, b in itertools.pairwise(times[1:])]
        assert len(times) == 5
        assert waits == [2.0, 4.0, 4.0]


async def test_the_first_connection_is_retried_too(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server:
        server.refusing = True

        async def let_in() -> None:
            await trio.sleep(3)
            server.refusing = False

        async with trio.open_nursery() as nursery:
            nursery.start_soon(let_in)
            async with session(server) as alice:
                assert await alice.echo("in") == "in"
        assert server.attempts > 1


async def test_without_reconnect_a_lost_connection_ends_the_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server:

        async def lose_it() -> None:
            async with session(server, reconnect=False) as alice:
                lobby = await alice.subscribe("lobby")
                await server.stop()
                await lobby.receive()

        with pytest.raises(trio_ws.ConnectionLost):
            await lose_it()
        assert server.attempts == 1


async def test_bad_login_is_final(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server:
        with pytest.raises(trio_ws.LoginFailed) as failed:
            async with session(server, name="not a name!"):
                raise AssertionError("not reached")
        assert failed.value.code == "bad_name"
        assert server.attempts == 1


async def test_a_name_that_stays_taken_is_final(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, server.client("alice"):
        with pytest.raises(trio_ws.LoginFailed) as failed:
            async with session(server):
                raise AssertionError("not reached")
        assert failed.value.code == "name_taken"
        assert server.attempts == 1  # four logins on one connection, then given up


async def test_name_taken_briefly_is_retried_on_the_same_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, trio.open_nursery() as nursery:
        holder = trio.Event()
        release = trio.Event()

        async def hold() -> None:
            async with server.client("alice"):
                holder.set()
                await release.wait()

        nursery.start_soon(hold)
        await holder.wait()

        async def free_soon() -> None:
            await trio.sleep(0.7)
            release.set()

        nursery.start_soon(free_soon)
        async with session(server) as alice:
            assert alice.name == "alice"
        assert server.attempts == 1  # logins retried on one connection


async def test_a_name_taken_after_a_reconnection_is_retried_with_the_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A killed node keeps its names in a shared broker for a lease: the session's own
    ghost. Not final after a reconnection: retried until the name is free."""
    async with restartable() as server, trio.open_nursery() as nursery:
        async with session(server) as alice:
            await server.stop()
            await server.start()
            release = trio.Event()

            async def squat() -> None:
                async with server.client("alice"):
                    await release.wait()

            nursery.start_soon(squat)
            await trio.sleep(30)  # alice tries, and tries again later
            assert alice.state is trio_ws.SessionState.CONNECTING
            tried = server.attempts
            release.set()
            assert await alice.echo("back") == "back"
            assert tried > 3


async def test_takeover_close_1008_is_final(autojump_clock: trio.abc.Clock) -> None:
    secret = b"s" * 32
    token = trio_ws.make_token(secret, "alice", 4102444800)

    def make() -> trio_ws.App:
        return trio_ws.App(login=trio_ws.signed_tokens(secret), on_name_conflict="takeover")

    async with restartable(make) as server:
        sessions: list[trio_ws.Session] = []

        async def taken_over() -> None:
            async with session(server, token=token) as first:
                sessions.append(first)
                async with session(server, token=token) as second:
                    assert second.name == "alice"
                    await trio.sleep_forever()  # `first` ends, and cancels this block

        with pytest.raises(trio_ws.SessionRefused) as refused:
            await taken_over()
        assert refused.value.code == 1008
        assert sessions[0].state is trio_ws.SessionState.CLOSED
        assert server.attempts == 2  # first never came back to take the name again


async def test_an_error_of_the_block_is_raised_unchanged(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server:
        with pytest.raises(KeyError):
            async with session(server):
                raise KeyError("mine")


# ------------------------------------------------------------------ seq bookkeeping


def _scripted_app(script: list[dict[str, Any]]) -> trio_ws.App:
    """An app whose subscribe answers with ``script`` (messages a broken server might send)."""
    app = trio_ws.App()

    @app.service("grouped")
    async def grouped(client: trio_ws.Client, message: dict[str, Any]) -> None:
        if message["action"] == "subscribe":
            for item in script:
                await client.send(item)

    return app


async def test_duplicates_are_dropped_and_unannounced_holes_become_gaps(
    autojump_clock: trio.abc.Clock,
) -> None:
    def grouped(seq: int) -> dict[str, Any]:
        return {"type": "grouped", "group": "g", "from": "x", "seq": seq, "text": str(seq)}

    script = [
        {"type": "subscribed", "group": "g", "seq": 0, "epoch": "e1"},
        grouped(1),
        grouped(1),
        grouped(3),
        {"type": "gap", "group": "g", "from": 2, "to": 3},  # covered already
        {"type": "gap", "group": "g", "from": 4, "to": 6},
        grouped(5),
        grouped(7),
        {"type": "grouped", "group": "other", "from": "x", "seq": 9, "text": "not ours"},
    ]
    async with restartable(lambda: _scripted_app(script)) as server, session(server) as alice:
        g = await alice.subscribe("g")
        assert await take(g, 5) == [
            Received("g", 1, grouped(1)),
            QueueGap("g", 2, 2),
            Received("g", 3, grouped(3)),
            QueueGap("g", 4, 6),
            Received("g", 7, grouped(7)),
        ]
        assert alice.statistics().duplicates == 2
        with pytest.raises(trio.WouldBlock):
            g.receive_nowait()


async def test_a_full_buffer_turns_messages_into_a_gap(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server, max_buffer=2) as alice:
        lobby = await alice.subscribe("lobby")
        async with server.client("bob") as bob:
            await publish(bob, "lobby", *"abcde")
        await alice.ping()  # everything published has arrived
        assert texts(await take(lobby, 2)) == [(1, "a"), (2, "b")]
        assert await lobby.receive() == QueueGap("lobby", 3, 5)
        assert alice.statistics().dropped == 3
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "f")
        assert texts(await take(lobby, 1)) == [(6, "f")]


async def test_resume_from_a_seq_kept_by_an_earlier_run(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server:
        async with server.client("bob") as bob:
            await publish(bob, "lobby", *"abc")
        async with session(server) as alice:
            first = await alice.subscribe("lobby")
            assert first.seq == 3
            epoch = first.epoch
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "d", "e")
        async with session(server) as alice:
            lobby = await alice.subscribe("lobby", since=3, epoch=epoch)
            assert texts(await take(lobby, 2)) == [(4, "d"), (5, "e")]


# ------------------------------------------------------------------ Backoff


def test_backoff_delays_grow_are_bounded_and_jittered() -> None:
    backoff = Backoff(initial=0.5, maximum=10.0, factor=2.0, jitter=0.25)
    rng = random.Random(7)
    for attempt in range(2000):
        base = min(10.0, 0.5 * 2.0 ** min(attempt, 10))
        assert 0.75 * base <= backoff.delay(attempt, rng) <= base
    assert Backoff(jitter=0.0).delay(3) == 4.0
    assert Backoff(jitter=0.0).delay(10**6) == 10.0  # no overflow
    assert len({backoff.delay(5, rng) for _ in range(20)}) > 1  # jittered


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0},
        {"initial": 2.0, "maximum": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"maximum": float("inf")},
    ],
)
def test_backoff_refuses_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        Backoff(**options)


async def test_open_session_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="login_attempts"):
        async with trio_ws.open_session("ws://x/ws", name="a", login_attempts=5):
            pass
    with pytest.raises(TypeError, match="reconnect"):
        async with trio_ws.open_session("ws://x/ws", name="a", reconnect=3):  # type: ignore[arg-type]
            pass


async def test_a_buffer_is_bounded_in_bytes_too(autojump_clock: trio.abc.Clock) -> None:
    async with restartable() as server, session(server, max_buffer_bytes=400) as alice:
        lobby = await alice.subscribe("lobby")
        async with server.client("bob") as bob:
            await publish(bob, "lobby", *(c * 100 for c in "abcde"))  # ~165 bytes each
        await alice.ping()
        items = await take(lobby, 3)
        assert texts(items[:2]) == [(1, "a" * 100), (2, "b" * 100)]
        assert items[2] == QueueGap("lobby", 3, 5)
        with pytest.raises(trio.WouldBlock):
            lobby.receive_nowait()


async def test_a_server_that_leaves_requests_unanswered_is_left(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trio_ws._client_session.MAX_IN_FLIGHT", 3)

    def make() -> trio_ws.App:
        app = trio_ws.App()

        @app.service("silent")
        async def silent(client: trio_ws.Client, message: dict[str, Any]) -> None:
            pass  # never answers

        @app.service("echo")
        async def echo(client: trio_ws.Client, message: dict[str, Any]) -> None:
            await client.send(message)

        return app

    async with restartable(make) as server, session(server, request_timeout=1.0) as alice:
        for _ in range(3):
            with pytest.raises(trio.TooSlowError):
                await alice.request({"type": "silent"}, reply="never")
        with pytest.raises(trio_ws.ConnectionLost):
            await alice.request({"type": "silent"}, reply="never")
        assert await alice.echo("again") == "again"  # on a new connection
        assert alice.statistics().connections == 2


async def test_a_subscribe_during_an_outage_completes_on_the_next_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        await server.stop()
        subs: list[trio_ws.Subscription] = []

        async def join() -> None:
            subs.append(await alice.subscribe("lobby"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join)
            await trio.sleep(3)
            assert subs == []
            await server.start()
        (lobby,) = subs
        assert lobby.seq == 0
        async with server.client("bob") as bob:
            await publish(bob, "lobby", "hi")
        assert texts(await take(lobby, 1)) == [(1, "hi")]


async def test_closing_a_subscription_while_it_resumes_unsubscribes_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with restartable() as server, session(server) as alice:
        for round_ in range(8):  # the resume's subscribe may or may not be out already
            group = f"g{round_}"
            sub = await alice.subscribe(group)
            await server.stop()
            await server.start()
            await alice.wait_connected()  # the resume is starting
            await sub.aclose()
            await trio.sleep(1)
            assert await alice.members(group) == []
