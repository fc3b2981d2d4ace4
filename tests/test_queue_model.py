"""The pure queue model: history and replay, rate limits, buffers, gaps, priority rounds."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_ws._queue_model import (
    DROPPED,
    OFFERED,
    OVERFLOW,
    Gap,
    History,
    Lane,
    Message,
    QueueError,
    RateLimiter,
    SubscriberBuffer,
    check_queue_name,
)


def publish(history: History, n: int = 1, *, key: str | None = None, time: float = 0.0) -> None:
    for _ in range(n):
        seq = history.next_seq()
        history.append(Message(seq, b"m%d" % seq, key=key, time=time))


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


# ---------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", ["g", "g1", "a.b-c_d", "A" * 64, "stream"])
def test_good_queue_names(name: str) -> None:
    assert check_queue_name(name) == name


@pytest.mark.parametrize("name", ["", "A" * 65, "a b", "é", "a/b", None, 3, b"g1"])
def test_bad_queue_names(name: object) -> None:
    with pytest.raises(QueueError) as info:
        check_queue_name(name)
    assert info.value.code == "bad_group"
    assert str(info.value) == info.value.message
    assert info.value.message == "group names are 1-64 characters of A-Z a-z 0-9 _ . -"


def test_a_message_starts_live_with_nothing_cached() -> None:
    message = Message(7, b"frame")
    assert (message.payload, message.opcode, message.key, message.time) == (b"", 1, None, 0.0)
    assert message.retracted is False
    assert message.compressed is None
    assert repr(message) == "<Message 7>"
    message.retracted = True
    assert repr(message) == "<Message 7 retracted>"
    given = Message(8, b"f", payload=b"p", opcode=2, key="k", time=3.0)
    assert (given.payload, given.opcode, given.key, given.time) == (b"p", 2, "k", 3.0)


# ---------------------------------------------------------------------------------------
# History and replay


def test_replay_inside_history() -> None:
    history = History(10)
    publish(history, 25)
    gap, messages = history.replay(20)
    assert gap is None
    assert seqs(messages) == [21, 22, 23, 24, 25]


def test_replay_at_the_edge_of_history() -> None:
    history = History(10)
    publish(history, 25)  # keeps 16..25
    gap, messages = history.replay(15)
    assert gap is None
    assert seqs(messages) == list(range(16, 26))


def test_replay_of_the_last_message_alone() -> None:
    history = History(10)
    publish(history, 25)
    assert seqs(history.replay(24)[1]) == [25]


def test_a_gap_of_one_message() -> None:
    history = History(2)
    publish(history, 5)  # keeps 4 and 5
    gap, messages = history.replay(2)
    assert gap == Gap(3, 3)
    assert seqs(messages) == [4, 5]


def test_history_defaults_and_limits() -> None:
    assert History().size == 100
    assert History().ttl is None
    with pytest.raises(ValueError, match=r"^history must be >= 0, not -1$"):
        History(-1)
    for ttl in (0, -1.0):
        with pytest.raises(ValueError, match=rf"^ttl must be positive or None, not {ttl}$"):
            History(ttl=ttl)
    assert History(ttl=0.5).ttl == 0.5


def test_a_history_of_one_keeps_the_last_message() -> None:
    history = History(1)
    publish(history, 2)
    gap, messages = history.replay(0)
    assert gap == Gap(1, 1)
    assert seqs(messages) == [2]


def test_replay_beyond_history_starts_with_a_gap() -> None:
    history = History(10)
    publish(history, 25)
    gap, messages = history.replay(3)
    assert gap == Gap(4, 15)
    assert seqs(messages) == list(range(16, 26))


@pytest.mark.parametrize("since", [25, 26, 1000])
def test_replay_at_or_after_the_last_seq_is_empty(since: int) -> None:
    history = History(10)
    publish(history, 25)
    assert history.replay(since) == (None, [])


def test_replay_without_history_is_all_gap() -> None:
    history = History(0)
    publish(history, 5)
    assert history.replay(2) == (Gap(3, 5), [])
    assert history.replay(-7) == (Gap(1, 5), [])


def test_ttl_expired_messages_are_not_replayed() -> None:
    history = History(10, ttl=5.0)
    publish(history, 3, time=0.0)
    publish(history, 2, time=4.0)
    gap, messages = history.replay(0, now=6.0)
    assert gap == Gap(1, 3)
    assert seqs(messages) == [4, 5]
    assert history.replay(0, now=20.0) == (Gap(1, 5), [])


def test_a_message_exactly_ttl_old_is_still_replayed() -> None:
    history = History(10, ttl=5.0)
    publish(history, 1, time=1.0)
    assert seqs(history.replay(0, now=6.0)[1]) == [1]
    assert history.replay(0, now=6.5) == (Gap(1, 1), [])


def test_replay_is_at_time_zero_unless_told() -> None:
    history = History(10, ttl=1.0)
    publish(history, 1, time=-0.5)  # 0.5 s old at time 0
    assert seqs(history.replay(0)[1]) == [1]


def test_retract_kills_kept_messages_by_key() -> None:
    history = History(10)
    publish(history, 1, key="price")
    publish(history, 1)
    publish(history, 1, key="price")
    assert history.retract("price") == 2
    assert history.retract("price") == 0
    gap, messages = history.replay(0)
    assert gap is None
    assert [m.seq for m in messages if not m.retracted] == [2]


def test_retract_forgets_messages_evicted_from_history() -> None:
    history = History(2)
    publish(history, 1, key="k")
    publish(history, 2)
    assert history.retract("k") == 0
    assert history._keyed == {}


def test_retract_still_finds_the_kept_messages_of_a_key_partly_evicted() -> None:
    history = History(2)
    publish(history, 2, key="k")
    publish(history, 1)  # evicts the first "k"; the second is kept
    assert history.retract("k") == 1
    assert [m.seq for m in history.replay(0)[1] if not m.retracted] == [3]


def test_rate_limiter_token_bucket() -> None:
    limiter = RateLimiter(3, 1.0)  # bursts of 3, then 3 per second (one per 1/3 s)
    assert [limiter.allow(t) for t in (0.0, 0.0, 0.0, 0.0)] == [True, True, True, False]
    assert limiter.allow(0.3) is False  # 0.9 of a token back
    assert limiter.allow(0.34) is True
    assert limiter.allow(0.34) is False
    assert [limiter.allow(10.0) for _ in range(4)] == [True, True, True, False]  # at most 3 saved
    assert limiter.allow(5.0) is False  # a clock going back gives nothing back
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(1, 0.0)


# ---------------------------------------------------------------------------------------
# Buffers


def msg(seq: int) -> Message:
    return Message(seq, b"m%d" % seq)


def test_buffer_and_lane_defaults() -> None:
    with pytest.raises(ValueError, match=r"^capacity must be positive, not 0$"):
        SubscriberBuffer(0)
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q")
    assert (lane.priority, lane.quota, lane.gap) == (0, None, None)
    assert not lane
    assert buffer.remove_lane("missing") is None
    bare = Lane("q", priority=0, quota=None, order=1)
    assert bare.gap is None
    assert not bare


def test_a_lane_holding_only_a_notice_is_waiting() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", notices=[b"subscribed"])
    assert lane
    assert buffer


def test_position_of_a_lane_without_a_gap() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", messages=[msg(3), msg(4)])
    assert lane.position(4) == 2
    buffer.take_round()
    assert lane.position(4) == 4


def test_size_counts_the_replays_of_every_lane() -> None:
    buffer = SubscriberBuffer(10)
    buffer.add_lane("a", messages=[msg(1)])
    buffer.add_lane("b", messages=[msg(1), msg(2)])
    assert buffer.size == 3


def test_a_round_goes_on_past_a_lane_with_no_messages() -> None:
    buffer = SubscriberBuffer(10)
    buffer.add_lane("a", notices=[b"subscribed"])
    b = buffer.add_lane("b")
    buffer.offer(b, msg(1), "drop")
    assert buffer.take_round() == [b"subscribed", msg_like(1)]


def test_clear_forgets_every_lane() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("a", notices=[b"subscribed"], messages=[msg(1)])
    buffer.offer(lane, msg(2), "drop")
    buffer.clear()
    assert (buffer.size, buffer.lanes) == (0, {})
    assert not buffer
    assert buffer.take_round() == []


def test_drop_skips_ahead_with_an_exact_gap() -> None:
    buffer = SubscriberBuffer(3)
    lane = buffer.add_lane("q")
    results = [buffer.offer(lane, msg(seq), "drop") for seq in range(1, 8)]
    assert results == [OFFERED] * 3 + [DROPPED] * 4
    assert buffer.size == 3
    assert buffer.take_round() == [Gap(1, 4, "q"), msg_like(5), msg_like(6), msg_like(7)]


def msg_like(seq: int) -> object:
    class Same:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Message) and other.seq == seq

    return Same()


def test_each_lane_is_bounded_on_its_own() -> None:
    buffer = SubscriberBuffer(2)
    a = buffer.add_lane("a")
    b = buffer.add_lane("b")
    for seq in (1, 2, 3):
        buffer.offer(a, msg(seq), "drop")
    assert buffer.offer(b, msg(1), "drop") == OFFERED
    assert buffer.size == 3
    assert buffer.take_round() == [Gap(1, 1, "a"), msg_like(2), msg_like(3), msg_like(1)]


def test_drop_of_a_lane_holding_only_a_replay_gap() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", gap=Gap(1, 4), messages=[msg(5), msg(6)])  # replay > capacity
    assert buffer.offer(lane, msg(7), "drop") == DROPPED
    assert buffer.take_round() == [Gap(1, 5, "q"), msg_like(6), msg_like(7)]


def test_disconnect_policy_reports_overflow_and_changes_nothing() -> None:
    buffer = SubscriberBuffer(2)
    lane = buffer.add_lane("q")
    buffer.offer(lane, msg(1), "disconnect")
    buffer.offer(lane, msg(2), "disconnect")
    assert buffer.offer(lane, msg(3), "disconnect") == OVERFLOW
    assert buffer.size == 2
    assert lane.gap is None


def test_round_order_is_priority_then_subscription_order_with_quotas() -> None:
    buffer = SubscriberBuffer(100)
    low = buffer.add_lane("low", priority=0, quota=1)
    high = buffer.add_lane("high", priority=5, quota=2)
    other = buffer.add_lane("other", priority=0, quota=None)
    for seq in range(1, 6):
        for lane in (low, high, other):
            buffer.offer(lane, Message(seq, f"{lane.queue}{seq}".encode()), "drop")
    taken = [[m.frame for m in buffer.take_round() if isinstance(m, Message)] for _ in range(3)]
    assert taken == [
        [b"high1", b"high2", b"low1", b"other1", b"other2", b"other3", b"other4", b"other5"],
        [b"high3", b"high4", b"low2"],
        [b"high5", b"low3"],
    ]


def test_saturated_queues_are_served_in_the_proportion_of_their_quotas() -> None:
    buffer = SubscriberBuffer(40)
    high = buffer.add_lane("high", priority=1, quota=3)
    low = buffer.add_lane("low", priority=0, quota=1)
    got = {b"h": 0, b"l": 0}
    for seq in range(1, 2001):  # the publishers outpace the reader: 5 of each per round
        buffer.offer(high, Message(seq, b"h"), "drop")
        buffer.offer(low, Message(seq, b"l"), "drop")
        if seq % 5 == 0:
            for item in buffer.take_round():
                if isinstance(item, Message):
                    got[item.frame] += 1
    assert got == {b"h": 3 * 400, b"l": 400}


def test_retracted_messages_are_skipped_and_not_counted_in_the_quota() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", quota=2)
    messages = [msg(seq) for seq in range(1, 6)]
    for m in messages:
        buffer.offer(lane, m, "drop")
    messages[0].retracted = messages[2].retracted = True
    assert [m.seq for m in buffer.take_round() if isinstance(m, Message)] == [2, 4]
    assert [m.seq for m in buffer.take_round() if isinstance(m, Message)] == [5]
    assert buffer.size == 0


def test_notices_come_first_and_remove_lane_forgets_everything() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", notices=[b"hello"], gap=Gap(1, 2), messages=[msg(3)])
    assert lane.position(3) == 0
    buffer.offer(lane, msg(4), "drop")
    assert buffer.size == 2
    assert buffer.remove_lane("q") is lane
    assert buffer.size == 0
    assert not buffer
    assert buffer.take_round() == []
    buffer.add_lane("q", notices=[b"hello"], gap=Gap(1, 2), messages=[msg(3)])
    assert buffer.take_round() == [b"hello", Gap(1, 2, "q"), msg_like(3)]


# ---------------------------------------------------------------------------------------
# The property: any interleaving keeps every subscriber's stream a gap-marked subsequence


class QueueMachine(RuleBasedStateMachine):
    """One queue, three subscribers; publish, subscribe(since), unsubscribe, slow reads.

    Every subscriber's stream, per subscription, must cover ``start+1, start+2, ...`` in
    order, each seq exactly once: as a message, inside a gap notice, or skipped because it
    was retracted. Nothing arrives after an unsubscribe. Reading everything leaves nobody
    behind (no silent loss).
    """

    def __init__(self) -> None:
        super().__init__()
        self.history = History(5)
        self.all: dict[int, Message] = {}
        self.buffers: dict[int, SubscriberBuffer] = {}
        self.expected: dict[int, int] = {}  # next seq owed, per subscribed subscriber
        self.capacity = {0: 1, 1: 3, 2: 8}
        self.keys = 0

    @rule(n=st.integers(1, 6), keyed=st.booleans())
    def publish(self, n: int, keyed: bool) -> None:
        for _ in range(n):
            seq = self.history.next_seq()
            message = Message(seq, b"", key="k" if keyed else None)
            self.history.append(message)
            self.all[seq] = message
            for sub, buffer in self.buffers.items():
                buffer.offer(buffer.lanes["q"], message, "drop")
                assert buffer.size <= max(self.capacity[sub], self.history.size)

    @rule()
    def retract(self) -> None:
        self.history.retract("k")

    @rule(sub=st.integers(0, 2), since=st.none() | st.integers(-2, 40))
    def subscribe(self, sub: int, since: int | None) -> None:
        if sub in self.buffers:
            return
        buffer = SubscriberBuffer(self.capacity[sub])
        gap, messages = (None, []) if since is None else self.history.replay(since)
        buffer.add_lane("q", notices=[b"subscribed"], gap=gap, messages=messages)
        self.buffers[sub] = buffer
        start = self.history.seq if since is None else min(max(since, 0), self.history.seq)
        self.expected[sub] = start + 1

    @rule(sub=st.integers(0, 2))
    def unsubscribe(self, sub: int) -> None:
        buffer = self.buffers.pop(sub, None)
        if buffer is not None:
            buffer.remove_lane("q")
            assert buffer.take_round() == []
            del self.expected[sub]

    @rule(sub=st.integers(0, 2), rounds=st.integers(1, 3))
    def read(self, sub: int, rounds: int) -> None:
        if sub in self.buffers:
            for _ in range(rounds):
                self.check(sub, self.buffers[sub].take_round())

    def check(self, sub: int, items: list[Message | Gap | bytes]) -> None:
        for item in items:
            nxt = self.expected[sub]
            if isinstance(item, bytes):
                assert item == b"subscribed"
                continue
            first = item.first if isinstance(item, Gap) else item.seq
            assert first >= nxt, (item, nxt)
            assert all(self.all[s].retracted for s in range(nxt, first)), (item, nxt)
            self.expected[sub] = (item.last if isinstance(item, Gap) else item.seq) + 1

    @precondition(lambda self: bool(self.buffers))
    @rule()
    def read_everything(self) -> None:
        for sub, buffer in self.buffers.items():
            while buffer:
                self.check(sub, buffer.take_round())
            assert buffer.size == 0
            nxt = self.expected[sub]
            assert all(self.all[s].retracted for s in range(nxt, self.history.seq + 1))

    @invariant()
    def bounded(self) -> None:
        for sub, buffer in self.buffers.items():
            assert buffer.size <= max(self.capacity[sub], self.history.size)


QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
test_queue_model_property = QueueMachine.TestCase


def test_a_byte_budget_drops_the_oldest_of_the_lane_and_reports_them() -> None:
    buffer = SubscriberBuffer(100, max_bytes=250)
    lane = buffer.add_lane("q")
    big = [Message(seq, b"x" * 100) for seq in range(1, 5)]
    assert [buffer.offer(lane, m, "drop") for m in big] == [OFFERED, OFFERED, DROPPED, DROPPED]
    assert buffer.bytes == 200  # never over 250
    assert buffer.take_round() == [Gap(1, 2, "q"), big[2], big[3]]
    assert buffer.bytes == 0
    other = buffer.add_lane("other")
    assert buffer.offer(other, Message(1, b"y" * 200), "drop") == OFFERED
    # The budget is held by the other lane: the new message itself is missed.
    assert buffer.offer(lane, Message(5, b"x" * 100), "drop") == DROPPED
    assert buffer.take_round() == [Gap(5, 5, "q"), msg_like(1)]
    kick = SubscriberBuffer(100, max_bytes=150)
    kick_lane = kick.add_lane("k")
    assert kick.offer(kick_lane, Message(1, b"x" * 100), "disconnect") == OFFERED
    assert kick.offer(kick_lane, Message(2, b"x" * 100), "disconnect") == OVERFLOW


def test_a_round_can_be_bounded_in_bytes() -> None:
    buffer = SubscriberBuffer(100)
    lane = buffer.add_lane("q")
    for seq in range(1, 11):
        buffer.offer(lane, Message(seq, b"x" * 100), "drop")
    first = buffer.take_round(max_bytes=250)
    assert [m.seq for m in first] == [1, 2, 3]  # reaches 250 with the third
    assert buffer.size == 7
    assert buffer.bytes == 700
    assert [m.seq for m in buffer.take_round()] == list(range(4, 11))
