"""The hub over each broker: subscribing with ``since`` meets the live stream exactly.

The hub listens before it reads the replay and drops live messages the replay holds
(:mod:`trio_ws._broadcast`); with a shared broker the replay is a round trip while
messages keep arriving, so this runs a publisher on one node and subscribers joining on
another node in the middle of the stream.
"""

from __future__ import annotations

import trio
import trio.lowlevel

from trio_ws._broadcast import BroadcastHub, QueueMessage

from .conftest import Cluster

COUNT = 200
JOIN_AT = (0, 10, 40, 41, 90, 150, 199)


async def test_subscribing_with_since_while_publishing_loses_and_repeats_nothing(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(30):
        publisher = BroadcastHub(broker=cluster.a)
        consumer = BroadcastHub(broker=cluster.b)
        publisher.queue("race", history=1000)
        consumer.queue("race", history=1000)
        received: dict[tuple[int, int], list[int]] = {}

        async def subscribe(since: int, joined_at: int) -> None:
            seqs: list[int] = []
            async with consumer.open_subscription("race", since=since) as channel:
                async for item in channel:
                    assert isinstance(item, QueueMessage), item  # a gap would be a loss
                    assert item.json()["i"] == item.seq
                    seqs.append(item.seq)
                    if item.seq == COUNT:
                        break
            received[(since, joined_at)] = seqs

        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await nursery.start(consumer.run)
            async with trio.open_nursery() as subscribers:
                for i in range(1, COUNT + 1):
                    if i - 1 in JOIN_AT:  # join behind, at, and (from the replay) ahead
                        for since in {max(i - 6, 0), i - 1}:
                            subscribers.start_soon(subscribe, since, i - 1)
                    assert await publisher.publish("race", {"i": i}) == i
                    await trio.lowlevel.checkpoint()  # the memory broker never checkpoints
            nursery.cancel_scope.cancel()
        assert len(received) == len({(s, j) for j in JOIN_AT for s in {max(j - 5, 0), j}})
        for (since, _joined_at), seqs in received.items():
            assert seqs == list(range(since + 1, COUNT + 1)), since
