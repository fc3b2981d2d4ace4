"""The broker contract: what every :class:`~trio_ws.brokers.Broker` does, exactly.

Each case runs on every implementation (``memory``, ``redis``, ``redis-cluster``) through
the ``cluster`` fixture: three nodes ``a``, ``b``, ``c`` on one shared state (see
``conftest.py``).
Deliveries of a shared broker arrive from its own tasks, so the cases wait for them
(:meth:`Cluster.barrier`, :func:`eventually`) before asserting.
"""

from __future__ import annotations

import pytest
import trio

from trio_ws._queue_model import Gap, Message, PayloadKind, QueueOptions
from trio_ws.brokers import Broker, BrokerState, Claim, NodeInfo, RoutedClose

from .conftest import Cluster, eventually, wait_until

TIME_LIMIT = 15  # seconds for any one case, whatever hangs

KEEP = QueueOptions(history=100)


async def publish(broker: Broker, queue: str, text: str, **kwargs: object) -> int:
    options = kwargs.pop("options", KEEP)
    key = kwargs.pop("key", None)
    assert not kwargs
    return await broker.publish(
        queue,
        text.encode(),
        kind=PayloadKind.TEXT,
        key=key,  # type: ignore[arg-type]
        options=options,  # type: ignore[arg-type]
    )


def texts(messages: object) -> list[str]:
    return [bytes(m.payload).decode() for m in messages]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Publishing and live delivery


async def test_publish_numbers_per_queue_in_one_order_seen_once_by_each_listener(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        await a.listen("q")
        await b.listen("q")
        await b.listen("q")  # idempotent: still one delivery per message
        seqs = [await publish(node, "q", f"m{i}") for i, node in enumerate([a, b, c, a, c])]
        assert seqs == [1, 2, 3, 4, 5]
        assert await publish(c, "other", "x") == 1  # numbered per queue
        # Concurrent publishers from every node: each seq once, in one order everywhere.
        sent: dict[int, str] = {}

        async def burst(node: Broker, tag: str) -> None:
            for i in range(10):
                sent[await publish(node, "q", f"{tag}{i}")] = f"{tag}{i}"

        async with trio.open_nursery() as nursery:
            for node, tag in ((a, "a"), (b, "b"), (c, "c")):
                nursery.start_soon(burst, node, tag)
        assert sorted(sent) == list(range(6, 36))
        await cluster.barrier()
        expected = [f"m{i}" for i in range(5)] + [sent[s] for s in range(6, 36)]
        for node in (a, b):
            seen = cluster.seen(node)
            assert seen.seqs("q") == list(range(1, 36))  # each once (counted), in seq order
            assert [p.decode() for p in seen.payloads("q")] == expected
        assert cluster.seen(c).messages.get("q") is None  # c never listened
        assert cluster.seen(a).messages.get("other") is None


async def test_message_kinds_and_keys_are_delivered_as_published(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        await b.listen("k")
        await a.publish("k", b'{"x":1}', kind=PayloadKind.JSON, key="j", options=KEEP)
        await a.publish("k", b"\x00\xffbin", kind=PayloadKind.BINARY, key=None, options=KEEP)
        await a.publish("k", "é".encode(), kind=PayloadKind.TEXT, key="", options=KEEP)
        await cluster.barrier()
        got = cluster.seen(b).messages["k"]
        assert [bytes(m.payload) for m in got] == [b'{"x":1,"seq":1}', b"\x00\xffbin", "é".encode()]
        assert [m.opcode for m in got] == [1, 2, 1]
        assert [m.key for m in got] == ["j", None, ""]
        assert [m.retracted for m in got] == [False, False, False]
        assert got[1].frame == b"\x82\x05\x00\xffbin"  # the encoded frame, built once


async def test_publish_many_numbers_consecutively_and_delivers_in_order(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        await b.listen("q")
        await publish(a, "q", "first")
        items = [
            (b'{"x":1}', PayloadKind.JSON, "j"),
            (b"\x00bin", PayloadKind.BINARY, None),
            ("é".encode(), PayloadKind.TEXT, ""),
        ]
        assert await c.publish_many("q", items, options=KEEP) == 4  # the last one's seq
        assert await publish(a, "q", "after") == 5
        assert await a.publish_many("new", [(b"one", PayloadKind.TEXT, None)], options=KEEP) == 1
        await cluster.barrier()
        got = cluster.seen(b).messages["q"]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        assert [bytes(m.payload) for m in got] == [
            b"first",
            b'{"x":1,"seq":2}',
            b"\x00bin",
            "é".encode(),
            b"after",
        ]
        assert [m.opcode for m in got] == [1, 1, 2, 1, 1]
        assert [m.key for m in got] == [None, "j", None, "", None]
        # Kept like single publishes: replayed, and retractable by key.
        replay = await a.replay("q", 1, epoch=None, options=KEEP)
        assert [m.seq for m in replay.messages] == [2, 3, 4, 5]
        assert [bytes(m.payload) for m in replay.messages] == [bytes(m.payload) for m in got[1:]]
        assert await a.retract("q", "j") == 1
        # The history's bound holds for a batch longer than it.
        three = QueueOptions(history=3)
        batch = [(f"m{i}".encode(), PayloadKind.TEXT, None) for i in range(5)]
        assert await a.publish_many("short", batch, options=three) == 5
        short = await b.replay("short", 0, epoch=None, options=three)
        assert (short.gap, texts(short.messages)) == (Gap(1, 2), ["m2", "m3", "m4"])
        none = QueueOptions(history=0)
        assert await a.publish_many("none", batch, options=none) == 5
        assert (await b.replay("none", 0, epoch=None, options=none)).gap == Gap(1, 5)
        with pytest.raises(ValueError, match=r"^publish_many\(\) needs at least one message$"):
            await a.publish_many("q", [], options=KEEP)


async def test_publish_many_batches_never_interleave_with_other_publishers(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        await c.listen("q")
        batches: dict[int, list[str]] = {}  # last seq -> the batch's texts

        async def publisher(node: Broker, tag: str) -> None:
            for i in range(8):
                texts_ = [f"{tag}{i}.{j}" for j in range(1 + i % 4)]
                items = [(t.encode(), PayloadKind.TEXT, None) for t in texts_]
                batches[await node.publish_many("q", items, options=KEEP)] = texts_
                await publish(node, "q", f"{tag}{i}.single")

        async with trio.open_nursery() as nursery:
            for node, tag in ((a, "a"), (b, "b"), (c, "c")):
                nursery.start_soon(publisher, node, tag)
        await cluster.barrier()
        seen = cluster.seen(c)
        total = 3 * (8 + sum(1 + i % 4 for i in range(8)))
        assert seen.seqs("q") == list(range(1, total + 1))  # each once, in seq order
        by_seq = dict(zip(seen.seqs("q"), (p.decode() for p in seen.payloads("q")), strict=True))
        for last, texts_ in batches.items():
            first = last - len(texts_) + 1
            assert [by_seq[s] for s in range(first, last + 1)] == texts_  # consecutive


async def test_messages_published_together_expire_together(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        ttl = 2.0 if cluster.kind == "memory" else 0.4
        options = QueueOptions(history=10, ttl=ttl)
        batch = [(f"m{i}".encode(), PayloadKind.TEXT, None) for i in range(3)]
        await trio.sleep(ttl * 2)  # a ttl counts from the publish, not from any other time
        await a.publish_many("q", batch, options=options)
        await trio.sleep(ttl * 0.5)
        assert texts((await b.replay("q", 0, epoch=None, options=options)).messages) == [
            "m0",
            "m1",
            "m2",
        ]
        await trio.sleep(ttl * 0.75)
        await publish(a, "q", "new", options=options)
        replay = await b.replay("q", 0, epoch=None, options=options)
        assert (replay.gap, texts(replay.messages)) == (Gap(1, 3), ["new"])


async def test_the_default_publish_many_publishes_one_at_a_time_in_order(
    cluster: Cluster, clock: object
) -> None:
    """What a broker that does not override publish_many() gets from the base class."""
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        await b.listen("q")
        items = [(f"m{i}".encode(), PayloadKind.TEXT, f"k{i}") for i in range(3)]
        assert await Broker.publish_many(a, "q", items, options=KEEP) == 3
        await cluster.barrier()
        assert texts(cluster.seen(b).messages["q"]) == ["m0", "m1", "m2"]
        assert [m.key for m in cluster.seen(b).messages["q"]] == ["k0", "k1", "k2"]
        with pytest.raises(ValueError, match=r"^publish_many\(\) needs at least one message$"):
            await Broker.publish_many(a, "q", [], options=KEEP)


async def test_unlisten_stops_delivery(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        await a.listen("q")
        await b.listen("q")
        await publish(b, "q", "one")
        await cluster.barrier()
        a.unlisten("q")
        a.unlisten("q")  # idempotent
        await publish(b, "q", "two")
        await cluster.barrier()
        assert cluster.seen(a).seqs("q") == [1]
        assert cluster.seen(b).seqs("q") == [1, 2]
        await a.listen("q")  # listening again resumes with what comes next
        await publish(b, "q", "three")
        await cluster.barrier()
        assert cluster.seen(a).seqs("q") == [1, 3]


# ---------------------------------------------------------------------------------------
# Replay


async def test_a_replay_on_a_listening_node_follows_the_live_messages_it_counts(
    cluster: Cluster, clock: object
) -> None:
    """The hub's listen-then-replay: once replay() returns seq S on a node listening to the
    queue, that node's on_message has had every message up to S (none arrives later)."""
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        await b.listen("q")
        for i in range(30):
            await publish(a, "q", f"m{i}")
            replay = await b.replay("q", None if i % 2 else i // 2, epoch=None, options=KEEP)
            assert replay.seq == i + 1
            assert cluster.seen(b).seqs("q") == list(range(1, i + 2))


async def test_replay_without_since_gives_the_current_seq_and_epoch(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        empty = await a.replay("fresh", None, epoch=None, options=KEEP)
        assert (empty.seq, empty.gap, tuple(empty.messages)) == (0, None, ())
        for i in range(3):
            await publish(a, "q", f"m{i}")
        replay = await b.replay("q", None, epoch=None, options=KEEP)
        assert replay.seq == 3
        assert replay.gap is None
        assert tuple(replay.messages) == ()
        assert isinstance(replay.epoch, str)
        assert replay.epoch
        # One queue's epoch is the same from every node and every call.
        assert (await a.replay("q", None, epoch=None, options=KEEP)).epoch == replay.epoch
        assert (await b.replay("fresh", None, epoch=None, options=KEEP)).epoch == empty.epoch
        if cluster.kind == "redis":
            assert replay.epoch == empty.epoch  # one epoch for all (cluster, memory: per queue)


async def test_replay_since_inside_at_and_beyond_the_kept_history(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        three = QueueOptions(history=3)
        for i in range(1, 6):
            await publish(a, "q", f"m{i}", options=three, key=f"k{i}")

        async def replay(since: int) -> tuple[Gap | None, list[int], list[str]]:
            r = await b.replay("q", since, epoch=None, options=three)
            assert r.seq == 5
            return r.gap, [m.seq for m in r.messages], texts(r.messages)

        assert await replay(0) == (Gap(1, 2), [3, 4, 5], ["m3", "m4", "m5"])
        assert await replay(1) == (Gap(2, 2), [3, 4, 5], ["m3", "m4", "m5"])
        assert await replay(2) == (None, [3, 4, 5], ["m3", "m4", "m5"])
        assert await replay(4) == (None, [5], ["m5"])
        assert await replay(5) == (None, [], [])  # at the last seq
        assert await replay(9) == (None, [], [])  # beyond it
        messages = (await b.replay("q", 3, epoch=None, options=three)).messages
        assert [m.key for m in messages] == ["k4", "k5"]
        assert all(isinstance(m, Message) and not m.retracted for m in messages)


async def test_history_of_zero_keeps_nothing_but_numbers_and_delivers(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        none = QueueOptions(history=0)
        await b.listen("q")
        assert [await publish(a, "q", f"m{i}", options=none) for i in range(3)] == [1, 2, 3]
        replay = await b.replay("q", 0, epoch=None, options=none)
        assert (replay.seq, replay.gap, list(replay.messages)) == (3, Gap(1, 3), [])
        assert (await b.replay("q", 2, epoch=None, options=none)).gap == Gap(3, 3)
        await cluster.barrier()
        assert cluster.seen(b).seqs("q") == [1, 2, 3]


async def test_expired_messages_are_a_gap(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        ttl = 2.0 if cluster.kind == "memory" else 0.4
        options = QueueOptions(history=10, ttl=ttl)
        await publish(a, "q", "old1", options=options)
        await publish(a, "q", "old2", options=options)
        await trio.sleep(ttl * 0.5)
        await publish(a, "q", "mid", options=options)
        await trio.sleep(ttl * 0.75)  # old1 and old2 are past the ttl, mid is not
        await publish(a, "q", "new", options=options)
        replay = await b.replay("q", 0, epoch=None, options=options)
        assert replay.seq == 4
        assert replay.gap == Gap(1, 2)
        assert texts(replay.messages) == ["mid", "new"]
        await trio.sleep(ttl * 1.5)  # everything expired
        replay = await b.replay("q", 1, epoch=None, options=options)
        assert (replay.seq, replay.gap, list(replay.messages)) == (4, Gap(2, 4), [])


async def test_a_since_from_another_epoch_is_taken_as_zero(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        for i in range(1, 5):
            await publish(a, "q", f"m{i}")
        epoch = (await a.replay("q", None, epoch=None, options=KEEP)).epoch
        same = await b.replay("q", 2, epoch=epoch, options=KEEP)
        assert [m.seq for m in same.messages] == [3, 4]
        other = await b.replay("q", 2, epoch=epoch + "x", options=KEEP)
        assert (other.seq, other.epoch, other.gap) == (4, epoch, None)
        assert [m.seq for m in other.messages] == [1, 2, 3, 4]
        beyond = await b.replay("q", 9, epoch="elsewhere", options=KEEP)  # beyond seq, too
        assert beyond.gap is None
        assert [m.seq for m in beyond.messages] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------
# Retraction


async def test_retract_counts_and_marks_the_kept_messages_and_tells_listeners(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        await a.listen("q")
        await b.listen("q")
        four = QueueOptions(history=4)
        await publish(a, "q", "gone", key="z", options=four)  # falls out of the history
        for text, key in (("x1", "x"), ("y1", "y"), ("x2", "x"), ("plain", None)):
            await publish(a, "q", text, key=key, options=four)
        assert await c.retract("q", "z") == 0  # no longer kept
        assert await c.retract("q", "x") == 2
        assert await b.retract("q", "x") == 0  # retracted already
        assert await b.retract("q", "nothing") == 0
        replay = await c.replay("q", 0, epoch=None, options=four)
        assert [(m.seq, m.retracted) for m in replay.messages] == [
            (2, True),
            (3, False),
            (4, True),
            (5, False),
        ]
        await publish(a, "q", "x3", key="x", options=four)
        assert await a.retract("q", "x") == 1  # only the new one
        await cluster.barrier()
        expected = [("q", "z"), ("q", "x"), ("q", "x"), ("q", "nothing"), ("q", "x")]
        assert cluster.seen(a).retracts == expected
        assert cluster.seen(b).retracts == expected
        assert cluster.seen(c).retracts == []  # not listening


# ---------------------------------------------------------------------------------------
# Names


async def test_claims_are_unique_case_insensitively_across_nodes(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        alice_a, alice_b = a.owner(1), b.owner(7)
        assert await a.claim("Alice", alice_a) == Claim(True, None)
        assert await b.claim("ALICE", alice_b) == Claim(False, alice_a, "Alice")
        assert await a.claim("alice", a.owner(2)) == Claim(False, alice_a, "Alice")  # same node
        assert await a.claim("aLiCe", alice_a) == Claim(True, None)  # the holder again
        assert await b.claim("Bob", alice_b) == Claim(True, None)  # other names are free
        assert cluster.seen(a).displaced == cluster.seen(b).displaced == []


async def test_takeover_displaces_the_previous_owner_on_its_node_only(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        assert await a.claim("Alice", a.owner(1)) == Claim(True)
        assert await b.claim("alice", b.owner(2), takeover=True) == Claim(True, a.owner(1), "Alice")
        await wait_until(lambda: cluster.seen(a).displaced != [])
        assert cluster.seen(a).displaced == [("Alice", a.owner(1))]  # as a claimed it
        assert await a.claim("Alice", a.owner(1)) == Claim(False, b.owner(2), "alice")
        # A takeover from the same node: the caller handles its own connection.
        assert await b.claim("ALICE", b.owner(3), takeover=True) == Claim(True, b.owner(2), "alice")
        assert await b.claim("Alice", b.owner(3)) == Claim(True, None)
        # A takeover of a free name is a plain claim.
        assert await c.claim("Carol", c.owner(1), takeover=True) == Claim(True, None)
        await cluster.barrier()
        assert cluster.seen(a).displaced == [("Alice", a.owner(1))]
        assert cluster.seen(b).displaced == []
        assert cluster.seen(c).displaced == []


async def test_release_only_by_the_holder(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        assert (await a.claim("Bob", a.owner(1))).granted
        b.release("bob", b.owner(1))  # not the holder: nothing happens
        a.release("bob", a.owner(2))  # not the holder either
        await cluster.barrier()
        await trio.sleep(0.05)
        claim_bob = await c.claim("BOB", c.owner(1))
        assert (claim_bob.granted, claim_bob.previous) == (False, a.owner(1))
        a.release("bob", a.owner(1))
        claim = await eventually(lambda: c.claim("BOB", c.owner(1)), lambda r: r.granted)
        assert claim == Claim(True, None)


async def test_a_released_name_can_be_claimed_again_at_once_on_the_same_node(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        assert (await a.claim("Carol", a.owner(1))).granted
        a.release("Carol", a.owner(1))
        assert await a.claim("carol", a.owner(2)) == Claim(True, None)  # a re-login
        await cluster.barrier()
        await trio.sleep(0.05)
        claim_carol = await b.claim("Carol", b.owner(1))
        assert (claim_carol.granted, claim_carol.previous) == (False, a.owner(2))


# ---------------------------------------------------------------------------------------
# Routing


async def test_route_reaches_the_holders_node_and_returns_its_answer(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        assert (await a.claim("Dave", a.owner(1))).granted
        assert await b.route("dave", "hello") is True
        assert await c.route("DAVE", b"\x00\x01") is True
        assert await a.route("dAvE", "self") is True  # from the holder's own node
        assert cluster.seen(a).routed == [
            ("Dave", "hello"),
            ("Dave", b"\x00\x01"),
            ("Dave", "self"),
        ]
        cluster.seen(a).refuse.add("Dave")  # the holder's node does not take it
        assert await b.route("dave", "refused") is False
        assert await b.route("nobody", "hello") is False
        assert cluster.seen(b).routed == cluster.seen(c).routed == []


async def test_a_routed_close_reaches_the_holders_node_as_a_close(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b = cluster.a, cluster.b
        assert (await a.claim("Erin", a.owner(1))).granted
        assert await b.route("erin", RoutedClose(4001, "bye now")) is True
        assert await a.route("ERIN", RoutedClose(1000)) is True
        assert await b.route("erin", RoutedClose(4002, "x y 4003")) is True
        # A text that looks like the close's encoding stays a text.
        assert await b.route("erin", "4001 bye now") is True
        assert cluster.seen(a).routed == [
            ("Erin", RoutedClose(4001, "bye now")),
            ("Erin", RoutedClose(1000, "")),
            ("Erin", RoutedClose(4002, "x y 4003")),
            ("Erin", "4001 bye now"),
        ]
        assert await b.route("nobody", RoutedClose(1000)) is False


# ---------------------------------------------------------------------------------------
# Presence and nodes


async def test_presence_counts_subscribers_per_name_across_nodes(
    cluster: Cluster, clock: object
) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c

        async def members(queue: str, expected: list[str]) -> None:
            await eventually(lambda: c.members(queue), lambda r: r == expected)
            assert await a.members(queue) == expected

        assert await c.members("q") == []
        a.note_presence("q", "zed", 1)
        a.note_presence("q", "zed", 1)  # two subscribers of one name on one node
        b.note_presence("q", "amy", 1)
        b.note_presence("q", "zed", 1)
        a.note_presence("other", "bo", 1)
        await members("q", ["amy", "zed"])  # sorted, each name once
        a.note_presence("q", "zed", -1)  # one of the two leaves: still there
        b.note_presence("q", "zed", -1)
        await cluster.barrier()
        await trio.sleep(0.05)
        await members("q", ["amy", "zed"])
        a.note_presence("q", "zed", -1)
        await members("q", ["amy"])
        b.note_presence("q", "amy", -1)
        await members("q", [])
        await members("other", ["bo"])


async def test_nodes_lists_every_live_node_with_its_counts(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        expected = [
            NodeInfo("node-a", 10, 0),
            NodeInfo("node-b", 11, 1),
            NodeInfo("node-c", 12, 2),
        ]
        assert await cluster.a.nodes() == expected
        assert await cluster.c.nodes() == expected


async def test_a_leaving_node_frees_its_names_and_presence(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a, b, c = cluster.a, cluster.b, cluster.c
        assert (await a.claim("Eve", a.owner(1))).granted
        a.note_presence("q", "Eve", 1)
        b.note_presence("q", "Bea", 1)
        await eventually(lambda: c.members("q"), lambda r: r == ["Bea", "Eve"])
        await cluster.node(a).stop()
        assert await c.members("q") == ["Bea"]
        assert await c.claim("eve", c.owner(1)) == Claim(True, None)
        assert await b.route("EVE", "x") is True  # c holds it now
        assert cluster.seen(c).routed == [("eve", "x")]
        assert [n.node_id for n in await b.nodes()] == ["node-b", "node-c"]
        assert cluster.seen(a).displaced == []


async def test_state_and_statistics(cluster: Cluster, clock: object) -> None:
    with trio.fail_after(TIME_LIMIT):
        a = cluster.a
        await publish(a, "q", "x")
        for node, node_id in ((cluster.a, "node-a"), (cluster.b, "node-b")):
            assert node.state is BrokerState.UP
            stats = node.statistics()
            assert (stats.kind, stats.state, stats.node_id) == (
                cluster.kind.partition("-")[0],  # redis-cluster: a RedisBroker too
                BrokerState.UP,
                node_id,
            )
            assert (stats.errors, stats.outages) == (0, 0)
            assert node.describe()["state"] == "up"
        stats = a.statistics()
        if cluster.kind == "memory":
            assert (stats.round_trips, stats.latency_seconds) == (0, 0.0)
        else:
            assert stats.round_trips >= 1
            assert 0 < stats.latency_seconds < 1
