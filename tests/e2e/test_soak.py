"""Soak: publishers send numbered, checksummed messages while subscribers come and go; every
subscriber's stream is complete or carries a ``gap`` naming what it missed (issue 10).

The demo app is served on loopback. ``PUBLISHERS`` clients publish to ``GROUPS`` groups
for ``TRIO_WS_SOAK_SECONDS`` seconds (20 by default), each text ``"<publisher>:<n>:<body>:
<sha256 of the rest>"`` with ``n`` counting that publisher's messages to that group.
``SUBSCRIBERS`` loops each live a series of lives: connect (with or without
permessage-deflate), log in, subscribe to some groups, with a ``since`` taken from a
previous life (so it resumes), from far in the past (so the kept history of 100 does not
cover it and a ``gap`` must say so), or none; read for a while; then leave by a Close, by a
reset (no Close), by unsubscribing first, or after a stall: with a 4 KiB receive window it
stops reading for two seconds, so that its buffer (64 messages a queue here) overflows and
the drop policy's ``gap`` follows. The checker, per life and per group:

* after ``subscribed`` (seq ``S``), the next seq is ``since + 1`` (or ``S + 1``);
* a ``gap`` starts exactly at the next seq expected, and the next seq is its ``to + 1``;
* every ``grouped`` message has exactly the seq expected: seqs strictly increase, and
  every hole was announced;
* each payload's checksum is right, and one publisher's numbers grow in each group;
* nothing of a group follows its ``unsubscribed``.

When the publishers stop, every subscriber then live reads up to the last seq of each of
its groups: the stream is complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import socket
import struct
from typing import Any

import attrs
import pytest
import trio

import trio_ws

from ..conftest import demo_app

SECONDS = float(os.environ.get("TRIO_WS_SOAK_SECONDS", "20"))
PUBLISHERS = 4
SUBSCRIBERS = 12
GROUPS = ("soak-a", "soak-b", "soak-c")


def last_seq(app: trio_ws.App, group: str) -> int:
    """The last seq published to ``group`` (the broker's count: a queue nobody here is
    subscribed to is dropped by the hub)."""
    history = app.broker.store.histories.get(group)  # type: ignore[attr-defined]
    return history.seq if history is not None else 0


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def payload(publisher: int, n: int, rng: random.Random) -> str:
    body = "".join(rng.choice("abcé€😀 ") for _ in range(rng.randrange(0, 600)))
    head = f"{publisher}:{n}:{body}"
    return f"{head}:{checksum(head)}"


@attrs.define
class Totals:
    lives: int = 0
    messages: int = 0
    gaps: int = 0
    gapped: int = 0
    drop_gaps: int = 0
    resumed: int = 0
    endings: dict[str, int] = attrs.Factory(dict)


@attrs.define
class GroupStream:
    """What one life expects next of one group, and what it saw."""

    next_seq: int
    last_n: dict[int, int] = attrs.Factory(dict)
    closed: bool = False
    received: int = 0

    def check(self, message: dict[str, Any], totals: Totals) -> None:
        assert not self.closed, f"a message after unsubscribed: {message}"
        if message["type"] == "gap":
            assert message["from"] == self.next_seq, (message, self.next_seq)
            assert message["to"] >= message["from"], message
            totals.gaps += 1
            if self.received:
                totals.drop_gaps += 1  # in the live stream: it was dropped for a slow reader
            totals.gapped += message["to"] - message["from"] + 1
            self.next_seq = message["to"] + 1
            return
        assert message["type"] == "grouped", message
        assert message["seq"] == self.next_seq, (message["seq"], self.next_seq)
        self.next_seq += 1
        self.received += 1
        head, _, digest = message["text"].rpartition(":")
        assert checksum(head) == digest, message
        publisher, n = map(int, head.split(":", 2)[:2])
        assert n > self.last_n.get(publisher, 0), (message, self.last_n)
        self.last_n[publisher] = n
        totals.messages += 1


async def publisher(address: str, index: int, stop: trio.Event) -> None:
    rng = random.Random(1000 + index)
    counts = dict.fromkeys(GROUPS, 0)
    async with trio_ws.connect(f"ws://{address}/ws", compression=index % 2 == 0) as conn:
        await conn.send({"type": "login", "name": f"pub{index}"})
        assert json.loads(await conn.receive())["type"] == "welcome"
        while not stop.is_set():
            group = rng.choice(GROUPS)
            counts[group] += 1
            text = payload(index, counts[group], rng)
            await conn.send({"type": "grouped", "action": "publish", "group": group, "text": text})
            await trio.sleep(rng.uniform(0, 0.01))


async def subscriber(
    address: str, app: trio_ws.App, index: int, stop: trio.Event, totals: Totals
) -> None:
    rng = random.Random(index)
    last_seen: dict[str, int] = {}
    life = 0
    while True:
        life += 1
        final = stop.is_set()
        groups = rng.sample(GROUPS, rng.randrange(1, len(GROUPS) + 1))
        streams: dict[str, GroupStream] = {}
        ending = "final" if final else rng.choice(("close", "reset", "unsubscribe", "stall"))
        host, _, port = address.rpartition(":")
        sock = trio.socket.socket()
        if ending == "stall":  # a small window: the server's writes back up at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        stream = trio.SocketStream(sock)
        try:
            async with trio_ws.connect(
                f"ws://{address}/ws", stream=stream, compression=rng.random() < 0.5
            ) as conn:
                await conn.send({"type": "login", "name": f"sub{index}-{life}"})
                assert json.loads(await conn.receive())["type"] == "welcome"
                sinces: dict[str, int | None] = {}
                for group in groups:
                    choice = rng.random()
                    if group in last_seen and choice < 0.6:
                        since: int | None = last_seen[group]  # resume where the last life ended
                        totals.resumed += 1
                    elif choice < 0.8:
                        # From far back: maybe beyond the kept history (a gap is due).
                        since = max(0, last_seq(app, group) - rng.randrange(50, 400))
                    else:
                        since = None
                    sinces[group] = since
                    request: dict[str, Any] = {
                        "type": "grouped",
                        "action": "subscribe",
                        "group": group,
                    }
                    if since is not None:
                        request["since"] = since
                    await conn.send(request)

                async def read(
                    sinces: dict[str, int | None] = sinces,
                    streams: dict[str, GroupStream] = streams,
                ) -> None:
                    while True:
                        message = json.loads(await conn.receive())
                        group = message.get("group")
                        if message["type"] == "subscribed":
                            since = sinces[group]
                            start = message["seq"] if since is None else min(since, message["seq"])
                            streams[group] = GroupStream(next_seq=start + 1)
                        elif message["type"] == "unsubscribed":
                            streams[group].closed = True
                        else:
                            streams[group].check(message, totals)
                            last_seen[group] = streams[group].next_seq - 1

                if final:
                    # The publishers have stopped: read up to each group's last seq.
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read)
                        with trio.fail_after(20):
                            while len(streams) < len(groups) or any(  # noqa: ASYNC110
                                s.next_seq <= last_seq(app, g) for g, s in streams.items()
                            ):
                                await trio.sleep(0.05)
                        nursery.cancel_scope.cancel()
                else:
                    with trio.move_on_after(rng.uniform(0.1, 1.5)):
                        await read()
                    if ending == "unsubscribe":
                        for group in groups:
                            await conn.send(
                                {"type": "grouped", "action": "unsubscribe", "group": group}
                            )
                        with trio.move_on_after(0.3):
                            await read()  # what follows must carry no message of those groups
                    elif ending == "stall":
                        await trio.sleep(rng.uniform(1.5, 2.5))  # not reading: buffers fill up
                        with trio.move_on_after(1):
                            await read()  # then a gap for what was dropped, and the rest
                    elif ending == "reset":
                        sock = stream.socket
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        sock.close()
        except (trio_ws.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            if ending != "reset":  # only our own reset may end a life this way
                raise
        totals.lives += 1
        totals.endings[ending] = totals.endings.get(ending, 0) + 1
        if final:
            return


@pytest.mark.timeout(SECONDS + 60)
async def test_soak_every_stream_complete_or_gapped() -> None:
    # A small per-queue buffer, so that a stalled subscriber overflows within a second
    # and the drop policy's gaps are checked too, not only those of replays.
    app = demo_app(max_subscriber_buffer=64)
    totals = Totals()
    stop = trio.Event()
    # A small kernel send buffer for every accepted socket (inherited from the listener),
    # so that what a stalled reader leaves unread reaches the server's own buffers soon.
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 10)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    listener = trio.SocketListener(sock)
    with trio.fail_after(SECONDS + 40):
        async with trio.open_nursery() as server:
            await server.start(functools.partial(app.serve, listeners=[listener]))
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as publishers:
                    for i in range(PUBLISHERS):
                        publishers.start_soon(publisher, address, i, stop)
                    for i in range(SUBSCRIBERS):
                        nursery.start_soon(subscriber, address, app, i, stop, totals)
                    await trio.sleep(SECONDS)
                    stop.set()
            published = sum(last_seq(app, g) for g in GROUPS)
            server.cancel_scope.cancel()
    print(
        f"\nsoak {SECONDS:.0f} s: {published} messages published, {totals.lives} subscriber"
        f" lives {totals.endings}, {totals.messages} messages checked, {totals.resumed}"
        f" resumes, {totals.gaps} gaps ({totals.drop_gaps} for slow readers) naming"
        f" {totals.gapped} messages"
    )
    assert totals.lives >= 3 * SUBSCRIBERS
    assert totals.messages > published
    assert totals.gaps > totals.drop_gaps > 0  # replays and slow readers both got gaps
