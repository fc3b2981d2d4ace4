"""The memory broker's own rules, beyond the contract every broker keeps.

Its store bounds what one process holds (histories by count, least recently published
first; kept bytes for all queues together), numbers each history's epoch, and leaves
nothing of a node behind once it leaves; a node's lease keeps its names while it
renews it and frees them once it stops. These run under the autojump clock.
"""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from trio_ws._queue_model import PayloadKind, QueueOptions
from trio_ws.brokers import Claim, MemoryBroker, MemoryStore

KEEP = QueueOptions(history=100, max_history_bytes=None)


async def publish(broker: MemoryBroker, queue: str, text: str, options: QueueOptions = KEEP) -> int:
    return await broker.publish(
        queue, text.encode(), kind=PayloadKind.TEXT, key=None, options=options
    )


def kept(store: MemoryStore, queue: str) -> list[int]:
    return [m.seq for m in store.histories[queue].kept]


def kept_bytes(store: MemoryStore) -> int:
    """The bytes the store holds, counted afresh; also checks its own counts of them."""
    histories = store.histories.values()
    total = sum(len(m.frame) for h in histories for m in h.kept)
    assert store.history_bytes == total
    assert store._kept == sum(len(h.kept) for h in histories)
    return total


# ---------------------------------------------------------------- the store's limits


def test_the_store_defaults_and_refuses_bounds_that_hold_nothing() -> None:
    store = MemoryStore()
    assert (store.max_histories, store.max_history_bytes) == (10_000, 64 << 20)
    assert store.history_bytes == 0
    assert re.fullmatch(r"[0-9a-f]{12}", store.epoch)
    assert MemoryStore().epoch != store.epoch  # a new store, a new history
    with pytest.raises(ValueError, match=r"^max_history_bytes must be positive, not 0$"):
        MemoryStore(max_history_bytes=0)
    with pytest.raises(ValueError, match=r"^max_history_bytes must be positive, not -1$"):
        MemoryStore(max_history_bytes=-1)
    with pytest.raises(ValueError, match=r"^max_histories must be at least 1, not 0$"):
        MemoryStore(max_histories=0)
    assert MemoryStore(max_history_bytes=1).max_history_bytes == 1
    assert MemoryStore(max_history_bytes=None).max_history_bytes is None
    assert MemoryStore(max_histories=1).max_histories == 1


async def test_past_max_histories_the_least_recently_published_one_is_forgotten() -> None:
    store = MemoryStore(max_histories=2)
    node = MemoryBroker(store=store)
    await publish(node, "q1", "a")
    await publish(node, "q2", "b")
    await publish(node, "q2", "c")
    await publish(node, "q1", "d")
    await publish(node, "q1", "e")  # q1 is now the most recent, with more kept than q2
    assert [store.epochs["q1"], store.epochs["q2"]] == [f"{store.epoch}-1", f"{store.epoch}-2"]
    forgotten = store.histories["q2"]
    before = store.history_bytes
    await publish(node, "q3", "e")
    assert list(store.histories) == ["q1", "q3"]
    assert store.epochs == {"q1": f"{store.epoch}-1", "q3": f"{store.epoch}-3"}
    assert store.history_bytes == kept_bytes(store) < before
    assert (len(forgotten.kept), forgotten.bytes) == (0, 0)  # its memory goes with it
    assert kept(store, "q1") == [1, 2, 3]
    # q2 comes back under a new epoch, numbered from 1 again; a replay names that epoch.
    assert await publish(node, "q2", "f") == 1
    assert store.epochs["q2"] == f"{store.epoch}-4"
    replay = await node.replay("q2", None, epoch=None, options=KEEP)
    assert (replay.seq, replay.epoch) == (1, f"{store.epoch}-4")
    assert replay.epoch != store.epoch


async def test_a_history_some_node_listens_to_is_not_forgotten() -> None:
    store = MemoryStore(max_histories=2)
    node = MemoryBroker(store=store)
    await node.listen("q1")
    await publish(node, "q1", "a")
    await publish(node, "q2", "b")
    await publish(node, "q3", "c")  # q1 is the oldest, but listened to: q2 goes
    assert list(store.histories) == ["q1", "q3"]
    store.max_histories = 1
    await node.listen("q3")
    await publish(node, "q4", "d")  # nothing can go: over the bound rather than lose q1, q3
    assert list(store.histories) == ["q1", "q3", "q4"]
    assert store.history_bytes == kept_bytes(store)


async def test_a_history_follows_the_options_it_is_published_with() -> None:
    store = MemoryStore()
    node = MemoryBroker(store=store)
    first = QueueOptions(history=3, max_history_bytes=4096, ttl=30.0)
    await publish(node, "q", "a", first)
    history = store.histories["q"]
    assert (history.size, history.ttl, history.max_bytes) == (3, 30.0, 4096)
    await publish(node, "q", "b", QueueOptions(history=5, max_history_bytes=8192, ttl=60.0))
    assert store.histories["q"] is history
    assert (history.size, history.ttl, history.max_bytes) == (5, 60.0, 8192)
    await publish(node, "q", "c", QueueOptions(history=5, max_history_bytes=None, ttl=None))
    assert (history.size, history.ttl, history.max_bytes) == (5, None, None)


async def test_over_the_store_budget_the_oldest_kept_message_of_any_queue_goes() -> None:
    frame = len(b"\x81\x01a")  # one text frame of one byte: every message here is one
    store = MemoryStore(max_history_bytes=3 * frame)
    node = MemoryBroker(store=store)
    for queue, text in [("a", "1"), ("b", "1"), ("a", "2")]:
        await publish(node, queue, text)
    assert store.history_bytes == 3 * frame  # exactly at the budget: all kept
    assert (kept(store, "a"), kept(store, "b")) == ([1, 2], [1])
    await publish(node, "b", "2")
    assert (kept(store, "a"), kept(store, "b")) == ([2], [1, 2])  # a's first went
    await publish(node, "b", "3")
    assert (kept(store, "a"), kept(store, "b")) == ([2], [2, 3])
    assert store.history_bytes == kept_bytes(store) == 3 * frame


async def test_the_budget_skips_what_a_queue_evicted_itself() -> None:
    frame = len(b"\x81\x01a")
    store = MemoryStore(max_history_bytes=2 * frame)
    node = MemoryBroker(store=store)
    one = QueueOptions(history=1, max_history_bytes=None)
    await publish(node, "a", "1", one)
    await publish(node, "b", "1")
    await publish(node, "a", "2", one)  # a's own limit dropped a1; the store holds a2, b1
    assert (kept(store, "a"), kept(store, "b")) == ([2], [1])
    assert store.history_bytes == 2 * frame
    await publish(node, "b", "2")  # over the budget: a1 is gone already, so b1 goes
    assert (kept(store, "a"), kept(store, "b")) == ([2], [2])
    assert store.history_bytes == kept_bytes(store) == 2 * frame


async def test_the_publish_order_is_pruned_so_it_stays_bounded() -> None:
    store = MemoryStore()
    node = MemoryBroker(store=store)
    three = QueueOptions(history=3, max_history_bytes=None)
    lengths = []
    for i in range(71):
        await publish(node, "q", str(i), three)
        lengths.append(len(store._order))
    # Three kept: pruned once it holds more than 2 * 3 + 64 entries, down to the three.
    assert max(lengths) == 2 * 3 + 64
    assert lengths[68:] == [69, 70, 3]
    history = store.histories["q"]
    assert [m for _, m in store._order] == list(history.kept)
    assert all(h is history for h, _ in store._order)
    assert store.history_bytes == kept_bytes(store)


async def test_a_queue_that_keeps_nothing_holds_no_bytes() -> None:
    store = MemoryStore()
    node = MemoryBroker(store=store)
    none = QueueOptions(history=0)
    for text in "abc":
        await publish(node, "q", text, none)
    assert (store.history_bytes, len(store._order), kept(store, "q")) == (0, 0, [])


async def test_retract_on_a_queue_nobody_published_to_counts_nothing() -> None:
    node = MemoryBroker()
    assert await node.retract("never", "k") == 0
    await node.listen("listened")
    assert await node.retract("listened", "k") == 0


# ---------------------------------------------------------------- nodes and leases


def test_a_node_defaults_and_refuses_a_bad_lease_or_a_taken_id() -> None:
    node = MemoryBroker()
    assert node.lease_seconds == 10.0
    assert re.fullmatch(r"node-[0-9a-f]{8}", node.node_id)
    assert node.store.nodes == {node.node_id: node}
    with pytest.raises(ValueError, match=r"^node 'x' is on this store already$"):
        MemoryBroker(store=MemoryBroker(node_id="x").store, node_id="x")
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"^lease_seconds must be positive, not {bad!r}$"):
            MemoryBroker(lease_seconds=bad)
    assert MemoryBroker(lease_seconds=0.5).lease_seconds == 0.5
    peer = MemoryBroker(lease_seconds=2.5).peer("p")
    assert (peer.node_id, peer.lease_seconds) == ("p", 2.5)


async def test_a_node_that_never_runs_keeps_its_names_for_ever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = MemoryBroker(node_id="a")
    b = a.peer("b")
    assert (await a.claim("Ann", a.owner(1))).granted
    await trio.sleep(3000)  # three hundred leases
    assert await b.claim("ann", b.owner(1)) == Claim(False, a.owner(1), "Ann")


async def test_a_running_node_renews_its_lease_and_a_stopped_one_frees_its_names_at_its_end(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    a = MemoryBroker(node_id="a", lease_seconds=3.0)
    b = a.peer("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert (await a.claim("Ann", a.owner(1))).granted
        for _ in range(10):  # more than three leases: renewed every second
            await trio.sleep(1)
            assert await b.claim("ann", b.owner(1)) == Claim(False, a.owner(1), "Ann")
        assert await b.route("Ann", "hello") is False  # a's callback refuses by default
        monkeypatch.setattr(a, "_leave", lambda: None)  # it dies without a word
        nursery.cancel_scope.cancel()
    monkeypatch.undo()  # the store makes it leave once its lease ran out
    await trio.sleep_until(a._alive_until)
    assert await b.claim("ann", b.owner(1)) == Claim(False, a.owner(1), "Ann")  # not yet
    await trio.sleep(0.001)
    assert not await b.route("Ann", "hello")  # its node is gone
    assert await b.claim("ann", b.owner(1)) == Claim(True)
    assert "a" not in b.store.nodes


async def test_a_leaving_node_leaves_nothing_of_its_own_behind() -> None:
    n1 = MemoryBroker(node_id="n1")
    n10 = n1.peer("n10")  # its id starts with the other's
    got: list[str] = []
    n1.on_message = lambda queue, message: got.append(queue)
    for node in (n1, n10):
        await node.listen("q")
        node.note_presence("q", "Zed" if node is n1 else "Ten", 1)
    assert (await n1.claim("Zed", n1.owner(1))).granted
    assert (await n10.claim("Ten", n10.owner(1))).granted
    async with trio.open_nursery() as nursery:
        await nursery.start(n1.run)
        nursery.cancel_scope.cancel()  # n1 leaves
    store = n1.store
    assert list(store.nodes) == ["n10"]
    assert [owner for _, owner in store.names.values()] == [n10.owner(1)]
    assert store.presence == {"q": {"n10": {"Ten": 1}}}
    assert list(store.listeners["q"]) == [n10]
    await publish(n10, "q", "after")
    assert got == []
    assert await n10.members("q") == ["Ten"]
