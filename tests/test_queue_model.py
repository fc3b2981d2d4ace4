"""The pure queue model: history and replay, rate limits, buffers, gaps, priority rounds."""

from __future__ import annotations

import json
import re

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_ws._queue_model import (
    DROPPED,
    MAX_PUBLISH_MANY,
    OFFERED,
    OVERFLOW,
    Gap,
    History,
    Lane,
    Message,
    PayloadKind,
    QueueError,
    QueueOptions,
    RateLimiter,
    SubscriberBuffer,
    check_queue_name,
    encode_batch,
    encode_body,
    make_message,
)
from trio_ws.protocol._frames import encode_frame


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


def test_encode_batch_checks_the_batch_then_encodes_each_message() -> None:
    from trio_ws._connection import dumps

    assert encode_batch(["t", b"b", {"x": 1, "seq": 9}], None, dumps) == [
        (b"t", PayloadKind.TEXT, None),
        (b"b", PayloadKind.BINARY, None),
        (b'{"x":1}', PayloadKind.JSON, None),
    ]
    assert encode_batch(["a", "b"], ["k", None], dumps) == [
        (b"a", PayloadKind.TEXT, "k"),
        (b"b", PayloadKind.TEXT, None),
    ]
    assert encode_batch(["one"], None, dumps) == [(b"one", PayloadKind.TEXT, None)]
    assert len(encode_batch(["x"] * MAX_PUBLISH_MANY, None, dumps)) == MAX_PUBLISH_MANY == 1000
    with pytest.raises(ValueError, match=r"^publish_many\(\) takes 1 to 1000 messages, not 0$"):
        encode_batch([], None, dumps)
    with pytest.raises(ValueError, match=r"^publish_many\(\) takes 1 to 1000 messages, not 1001$"):
        encode_batch(["x"] * 1001, None, dumps)
    with pytest.raises(ValueError, match=r"^1 keys for 2 messages$"):
        encode_batch(["x", "y"], ["k"], dumps)
    with pytest.raises(ValueError, match=r"^3 keys for 2 messages$"):
        encode_batch(["x", "y"], ["k", "l", "m"], dumps)
    with pytest.raises(TypeError, match="cannot publish int"):
        encode_batch(["x", 3], None, dumps)  # type: ignore[list-item]


def test_rate_limiter_takes_several_tokens_all_or_none() -> None:
    limiter = RateLimiter(5, 1.0)
    assert limiter.allow(0.0, 3) is True
    assert limiter.allow(0.0, 3) is False  # 2 left: none taken
    assert limiter.allow(0.0, 2) is True
    assert limiter.allow(0.0) is False
    assert limiter.allow(0.6, 3) is True  # 3 back after 0.6 s
    assert limiter.allow(100.0, 6) is False  # never more than the burst
    assert limiter.allow(100.0, 5) is True


# ---------------------------------------------------------------------------------------
# Buffers


def exactly(text: str) -> str:
    """A ``match`` pattern for exactly ``text``."""
    return f"^{re.escape(text)}$"


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
    bare = Lane("q", priority=0, quota=None)
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


# ---------------------------------------------------------------------------------------
# Queue options


def test_queue_options_defaults() -> None:
    options = QueueOptions()
    assert attrs.asdict(options, recurse=False) == {
        "history": 100,
        "max_history_bytes": 1 << 20,
        "ttl": None,
        "policy": "drop",
        "priority": 0,
        "quota": None,
        "max_publish_rate": None,
        "auto_subscribe": False,
    }
    assert options.max_history_bytes == 1048576
    with pytest.raises(TypeError):
        QueueOptions(5)  # type: ignore[misc]  # keywords only
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.history = 5  # type: ignore[misc]


def test_queue_options_accept_the_edges() -> None:
    options = QueueOptions(
        history=0,
        max_history_bytes=1,
        ttl=0.001,
        policy="disconnect",
        priority=-3,
        quota=1,
        max_publish_rate=(1, 0.5),
        auto_subscribe=True,
    )
    assert (options.history, options.max_history_bytes, options.ttl) == (0, 1, 0.001)
    assert (options.policy, options.priority, options.quota) == ("disconnect", -3, 1)
    assert (options.max_publish_rate, options.auto_subscribe) == ((1, 0.5), True)
    assert QueueOptions(max_history_bytes=None, ttl=None, quota=None).max_history_bytes is None
    assert QueueOptions(max_publish_rate=(2, 1)).max_publish_rate == (2, 1)


@pytest.mark.parametrize("value", [-1, 1.0, True, "1", None])
def test_queue_options_refuse_a_bad_history(value: object) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"history must be an integer >= 0, not {value!r}")
    ):
        QueueOptions(history=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["max_history_bytes", "ttl", "quota"])
@pytest.mark.parametrize("value", [0, -1, 0.0, True, False])
def test_queue_options_refuse_a_non_positive_bound(name: str, value: object) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"{name} must be positive or None, not {value!r}")
    ):
        QueueOptions(**{name: value})


@pytest.mark.parametrize("value", ["Drop", "", None, "dropXX"])
def test_queue_options_refuse_an_unknown_policy(value: object) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"policy must be one of ('drop', 'disconnect'), not {value!r}")
    ):
        QueueOptions(policy=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [[1, 1.0], (1,), (1, 1.0, 1), (1.0, 1.0), (True, 1.0), (0, 1.0), (1, 0), (1, -1.0)]
)
def test_queue_options_refuse_a_bad_rate(value: object) -> None:
    with pytest.raises(
        ValueError,
        match=exactly(f"max_publish_rate must be (count >= 1, seconds > 0), not {value!r}"),
    ):
        QueueOptions(max_publish_rate=value)  # type: ignore[arg-type]


def test_queue_options_check_the_types_of_priority_and_auto_subscribe() -> None:
    with pytest.raises(TypeError):
        QueueOptions(priority="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QueueOptions(auto_subscribe=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Publishing: bodies and messages


class Dumps:
    """A ``dumps`` that records what it was given."""

    def __init__(self) -> None:
        self.given: list[object] = []

    def __call__(self, value: object) -> str:
        self.given.append(value)
        return json.dumps(value, separators=(",", ":"))


def test_encode_body_of_each_kind() -> None:
    dumps = Dumps()
    assert PayloadKind.TEXT == 1
    assert PayloadKind.BINARY == 2
    assert PayloadKind.JSON == 3
    assert encode_body("héllo", dumps) == ("héllo".encode(), 1)
    assert encode_body({"a": 1}, dumps) == (b'{"a":1}', 3)
    for raw in (b"\x00b", bytearray(b"\x00b"), memoryview(b"\x00b")):
        body, kind = encode_body(raw, dumps)
        assert (type(body), body, kind) == (bytes, b"\x00b", 2)
    assert dumps.given == [{"a": 1}]


def test_encode_body_leaves_the_seq_out_of_a_json_body() -> None:
    dumps = Dumps()
    given = {"a": 1, "seq": 9, "b": 2}
    assert encode_body(given, dumps) == (b'{"a":1,"b":2}', 3)
    assert given == {"a": 1, "seq": 9, "b": 2}  # the caller's dict is not changed
    assert encode_body({"seq": 9}, dumps) == (b"{}", 3)
    assert dumps.given == [{"a": 1, "b": 2}, {}]
    kept = {"a": 1}
    encode_body(kept, dumps)
    assert dumps.given[-1] is kept  # no copy without a seq to leave out


def test_encode_body_of_a_str_subclass_and_of_other_types() -> None:
    class Name(str):
        pass

    assert encode_body(Name("ab"), Dumps()) == (b"ab", 1)
    for bad, typename in ((3, "int"), (None, "NoneType"), ([1], "list")):
        with pytest.raises(TypeError) as info:
            encode_body(bad, Dumps())  # type: ignore[arg-type]
        assert str(info.value) == f"cannot publish {typename}; use dict, str or bytes"


def test_make_message_splices_the_seq_into_a_json_body() -> None:
    message = make_message(7, b'{"a":1}', PayloadKind.JSON, key="k", time=2.5)
    assert bytes(message.payload) == b'{"a":1,"seq":7}'
    assert message.frame == encode_frame(1, b'{"a":1,"seq":7}')
    assert (message.seq, message.opcode, message.key, message.time) == (7, 1, "k", 2.5)
    assert json.loads(bytes(message.payload)) == {"a": 1, "seq": 7}
    empty = make_message(12, b"{}", PayloadKind.JSON)
    assert bytes(empty.payload) == b'{"seq":12}'
    assert (empty.key, empty.time) == (None, 0.0)


def test_make_message_of_text_and_binary_bodies() -> None:
    text = make_message(1, b"hi", PayloadKind.TEXT)
    assert (text.opcode, text.frame, bytes(text.payload)) == (1, b"\x81\x02hi", b"hi")
    binary = make_message(2, b"\x00\x01", PayloadKind.BINARY)
    assert (binary.opcode, binary.frame, bytes(binary.payload)) == (
        2,
        b"\x82\x02\x00\x01",
        b"\x00\x01",
    )
    blank = make_message(3, b"", PayloadKind.BINARY)
    assert (blank.frame, bytes(blank.payload)) == (b"\x82\x00", b"")


@pytest.mark.parametrize("size", [1, 125, 126, 70000])
def test_the_payload_of_a_message_is_a_view_of_its_frame(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    message = make_message(1, body, PayloadKind.BINARY)
    assert isinstance(message.payload, memoryview)
    assert message.payload.obj is message.frame
    assert bytes(message.payload) == body
    assert message.frame == encode_frame(2, body)


# ---------------------------------------------------------------------------------------
# History: the byte budget


def frame_msg(seq: int, size: int, *, key: str | None = None) -> Message:
    return Message(seq, b"x" * size, key=key)


def test_history_counts_the_bytes_it_keeps() -> None:
    history = History(3)
    assert (history.max_bytes, history.bytes) == (None, 0)
    for seq, size in ((1, 10), (2, 20), (3, 30)):
        history.append(frame_msg(seq, size))
    assert history.bytes == 60
    history.append(frame_msg(4, 40))  # evicts 1 (10 bytes)
    assert history.bytes == 90
    assert seqs(list(history.kept)) == [2, 3, 4]
    nothing = History(0)
    nothing.append(frame_msg(1, 10))
    assert (nothing.bytes, len(nothing.kept), nothing.seq) == (0, 0, 1)


def test_history_evicts_the_oldest_over_its_byte_budget() -> None:
    history = History(100, max_bytes=100)
    assert history.max_bytes == 100
    for seq in range(1, 5):
        history.append(frame_msg(seq, 25))
    assert (history.bytes, seqs(list(history.kept))) == (100, [1, 2, 3, 4])  # exactly full
    history.append(frame_msg(5, 50))  # 150: evicts 1 and 2
    assert (history.bytes, seqs(list(history.kept))) == (100, [3, 4, 5])
    history.append(frame_msg(6, 101))  # larger than the budget alone: nothing is kept
    assert (history.bytes, list(history.kept), history.seq) == (0, [], 6)
    assert history.replay(2) == (Gap(3, 6), [])
    history.append(frame_msg(7, 1))
    assert (history.bytes, seqs(list(history.kept))) == (1, [7])


def test_evict_oldest_returns_the_bytes_it_freed() -> None:
    history = History(10)
    assert history.evict_oldest() == 0
    assert history.bytes == 0
    history.append(frame_msg(1, 7))
    history.append(frame_msg(2, 5))
    assert history.evict_oldest() == 7
    assert (history.bytes, seqs(list(history.kept))) == (5, [2])
    assert history.evict_oldest() == 5
    assert history.evict_oldest() == 0
    assert (history.bytes, list(history.kept)) == (0, [])
    assert history.replay(0) == (Gap(1, 2), [])


def test_evict_oldest_forgets_the_key_of_what_it_evicts() -> None:
    history = History(10)
    history.append(frame_msg(1, 1, key="k"))
    history.append(frame_msg(2, 1, key="k"))
    history.append(frame_msg(3, 1, key="j"))
    history.evict_oldest()
    assert [m.seq for m in history._keyed["k"]] == [2]
    history.evict_oldest()
    assert sorted(history._keyed) == ["j"]
    assert history.retract("k") == 0
    assert history.retract("j") == 1


def test_evict_oldest_keeps_a_newer_message_of_a_retracted_key() -> None:
    history = History(10)
    history.append(frame_msg(1, 1, key="k"))
    assert history.retract("k") == 1  # forgets the key
    history.append(frame_msg(2, 1, key="k"))
    assert history.evict_oldest() == 1  # the retracted 1: the key's deque starts with 2
    assert [m.seq for m in history._keyed["k"]] == [2]
    assert history.retract("k") == 1


# ---------------------------------------------------------------------------------------
# Held lanes and their release


def sized(seq: int, size: int = 10) -> Message:
    return Message(seq, b"x" * size)


def test_a_lane_is_not_held_unless_told() -> None:
    assert Lane("q", priority=0, quota=None).held is False
    buffer = SubscriberBuffer(4)
    assert buffer.add_lane("q").held is False
    assert buffer.add_lane("h", held=True).held is True


def test_a_held_lane_collects_but_hands_out_nothing() -> None:
    buffer = SubscriberBuffer(4)
    held = buffer.add_lane("held", priority=9, notices=[b"n"], held=True)
    other = buffer.add_lane("other")
    assert buffer.offer(held, sized(5), "drop") == OFFERED
    assert buffer.offer(other, sized(1), "drop") == OFFERED
    assert buffer.take_round() == [msg_like(1)]  # the held lane, first by priority, is skipped
    assert (buffer.size, buffer.bytes) == (1, 10)
    assert held.notices == [b"n"]
    assert seqs(list(held.messages)) == [5]


def test_release_puts_the_replay_ahead_and_drops_duplicates() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", notices=[b"live"], held=True)
    for seq in (5, 6, 7):
        buffer.offer(lane, sized(seq), "drop")
    assert (buffer.size, buffer.bytes) == (3, 30)
    replay = [sized(seq, 3) for seq in (3, 4, 5, 6)] + [sized(7, 3)]  # 7 is past seq: left out
    released = buffer.release_lane(
        "q", seq=6, notices=[b"subscribed", b"more"], gap=Gap(1, 2), messages=replay
    )
    assert released is lane
    assert lane.held is False
    assert lane.gap == Gap(1, 2, "q")
    assert [(m.seq, len(m.frame)) for m in lane.messages] == [
        (3, 3),
        (4, 3),
        (5, 3),
        (6, 3),
        (7, 10),
    ]
    assert (buffer.size, buffer.bytes) == (5, 22)
    assert buffer.take_round() == [
        b"subscribed",
        b"more",
        b"live",
        Gap(1, 2, "q"),
        replay[0],
        replay[1],
        replay[2],
        replay[3],
        msg_like(7),
    ]
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_release_without_a_replay_keeps_the_live_messages_after_seq() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", held=True)
    for seq in (4, 5):
        buffer.offer(lane, sized(seq), "drop")
    buffer.release_lane("q", seq=4)
    assert lane.gap is None
    assert lane.notices == []
    assert seqs(list(lane.messages)) == [5]
    assert (buffer.size, buffer.bytes) == (1, 10)
    assert buffer.take_round() == [msg_like(5)]


def test_release_drops_every_live_message_the_replay_covers() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", held=True)
    for seq in (4, 5):
        buffer.offer(lane, sized(seq), "drop")
    buffer.release_lane("q", seq=9, messages=[sized(seq, 2) for seq in range(4, 10)])
    assert [(m.seq, len(m.frame)) for m in lane.messages] == [(s, 2) for s in range(4, 10)]
    assert (buffer.size, buffer.bytes) == (6, 12)


def test_release_ignores_a_held_gap_the_replay_covers() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", held=True)
    for seq in (5, 6, 7):
        buffer.offer(lane, sized(seq), "drop")  # 5 and 6 are dropped: gap 5-6, then 7
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(5, 6, "q"), [7])
    buffer.release_lane("q", seq=6, messages=[sized(seq, 1) for seq in (5, 6)])
    assert lane.gap is None
    assert [(m.seq, len(m.frame)) for m in lane.messages] == [(5, 1), (6, 1), (7, 10)]
    assert (buffer.size, buffer.bytes) == (3, 12)


@pytest.mark.parametrize(
    ("gap", "replay", "seq", "widened"),
    [
        (Gap(1, 2), [3, 4], 4, Gap(1, 6, "q")),  # from the replay's gap
        (None, [3, 4], 4, Gap(3, 6, "q")),  # from its first message
        (None, [], 4, Gap(5, 6, "q")),  # nothing replayed: from seq + 1
        (Gap(2, 2), [3, 4, 5], 4, Gap(2, 6, "q")),  # replay messages past seq do not count
    ],
)
def test_release_widens_the_gap_of_live_messages_dropped_while_held(
    gap: Gap | None, replay: list[int], seq: int, widened: Gap
) -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", held=True)
    for live in (5, 6, 7):
        buffer.offer(lane, sized(live), "drop")
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(5, 6, "q"), [7])
    buffer.release_lane(
        "q", seq=seq, notices=[b"s"], gap=gap, messages=[sized(s, 1) for s in replay]
    )
    assert lane.gap == widened
    assert seqs(list(lane.messages)) == [7]  # the replay is inside the gap: not handed out
    assert (buffer.size, buffer.bytes) == (1, 10)
    assert buffer.take_round() == [b"s", widened, msg_like(7)]


def test_release_widens_a_held_gap_that_starts_after_seq() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", held=True)
    for live in (8, 9, 10):
        buffer.offer(lane, sized(live), "drop")
    assert lane.gap == Gap(8, 9, "q")
    buffer.release_lane("q", seq=4)  # 5-7 were never offered: the gap covers them too
    assert lane.gap == Gap(5, 9, "q")
    buffer2 = SubscriberBuffer(1)
    lane2 = buffer2.add_lane("q", held=True)
    for live in (8, 9, 10):
        buffer2.offer(lane2, sized(live), "drop")
    buffer2.release_lane("q", seq=4, messages=[sized(4, 1)])
    assert lane2.gap == Gap(4, 9, "q")  # the replayed 4 is not handed out: the gap has it


def test_release_of_a_held_gap_ending_at_seq_uses_the_replay() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", held=True)
    for live in (5, 6):
        buffer.offer(lane, sized(live), "drop")
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(5, 5, "q"), [6])
    buffer.release_lane("q", seq=6, gap=Gap(1, 4), messages=[sized(5, 1), sized(6, 1)])
    assert lane.gap == Gap(1, 4, "q")
    assert [(m.seq, len(m.frame)) for m in lane.messages] == [(5, 1), (6, 1)]
    assert (buffer.size, buffer.bytes) == (2, 2)


# ---------------------------------------------------------------------------------------
# The buffer's byte budget


def test_buffer_byte_budget_defaults_and_limits() -> None:
    assert SubscriberBuffer(1).max_bytes is None
    assert SubscriberBuffer(1, max_bytes=1).max_bytes == 1
    for bad in (0, -5):
        with pytest.raises(
            ValueError, match=exactly(f"max_bytes must be positive or None, not {bad}")
        ):
            SubscriberBuffer(1, max_bytes=bad)
    with pytest.raises(ValueError, match=exactly("capacity must be positive, not -1")):
        SubscriberBuffer(-1)


def test_buffer_bytes_follow_every_change() -> None:
    buffer = SubscriberBuffer(10)
    assert buffer.bytes == 0
    a = buffer.add_lane("a", messages=[sized(1, 3), sized(2, 4)])
    assert (buffer.size, buffer.bytes) == (2, 7)
    buffer.add_lane("b", messages=[sized(1, 5)])
    assert (buffer.size, buffer.bytes) == (3, 12)
    assert buffer.offer(a, sized(3, 6), "drop") == OFFERED
    assert (buffer.size, buffer.bytes) == (4, 18)
    buffer.remove_lane("b")
    assert (buffer.size, buffer.bytes) == (3, 13)
    buffer.clear()
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_a_message_that_fits_the_byte_budget_exactly_is_offered() -> None:
    buffer = SubscriberBuffer(10, max_bytes=30)
    lane = buffer.add_lane("q")
    assert buffer.offer(lane, sized(1, 10), "drop") == OFFERED
    assert buffer.offer(lane, sized(2, 20), "drop") == OFFERED
    assert (buffer.size, buffer.bytes, lane.gap) == (2, 30, None)
    assert buffer.offer(lane, sized(3, 1), "disconnect") == OVERFLOW
    assert (buffer.size, buffer.bytes, lane.gap) == (2, 30, None)


def test_a_drop_for_bytes_drops_no_more_than_it_needs() -> None:
    buffer = SubscriberBuffer(10, max_bytes=30)
    lane = buffer.add_lane("q")
    for seq, size in ((1, 10), (2, 10), (3, 10)):
        buffer.offer(lane, sized(seq, size), "drop")
    assert buffer.offer(lane, sized(4, 20), "drop") == DROPPED  # 10 + 20 fits exactly
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(1, 2, "q"), [3, 4])
    assert (buffer.size, buffer.bytes) == (2, 30)


def test_a_full_lane_drops_one_for_one_within_the_byte_budget() -> None:
    buffer = SubscriberBuffer(2, max_bytes=100)
    lane = buffer.add_lane("q")
    for seq in (1, 2, 3):
        buffer.offer(lane, sized(seq, 10), "drop")
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(1, 1, "q"), [2, 3])
    assert (buffer.size, buffer.bytes) == (2, 20)


def test_a_replay_over_capacity_stays_until_bytes_run_short() -> None:
    buffer = SubscriberBuffer(2, max_bytes=45)
    lane = buffer.add_lane("q", messages=[sized(seq) for seq in (1, 2, 3)])  # over capacity
    assert buffer.offer(lane, sized(4), "drop") == DROPPED  # one for one: 2, 3, 4 = 30 bytes
    assert (lane.gap, seqs(list(lane.messages)), buffer.bytes) == (Gap(1, 1, "q"), [2, 3, 4], 30)
    assert buffer.offer(lane, sized(5, 26), "drop") == DROPPED  # one for one, then bytes
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(1, 3, "q"), [4, 5])
    assert (buffer.size, buffer.bytes) == (2, 36)


def test_a_message_missed_for_bytes_held_elsewhere_joins_the_gap() -> None:
    buffer = SubscriberBuffer(10, max_bytes=30)
    a = buffer.add_lane("a")
    b = buffer.add_lane("b")
    buffer.offer(b, sized(1, 25), "drop")
    buffer.offer(a, sized(1, 5), "drop")
    assert buffer.offer(a, sized(2, 10), "drop") == DROPPED  # drops 1 of a, still short
    assert (a.gap, list(a.messages)) == (Gap(1, 2, "a"), [])
    assert (buffer.size, buffer.bytes) == (1, 25)
    assert buffer.offer(a, sized(3, 5), "drop") == OFFERED  # fits exactly
    assert (buffer.size, buffer.bytes) == (2, 30)


def test_a_message_larger_than_the_budget_is_missed() -> None:
    buffer = SubscriberBuffer(10, max_bytes=30)
    lane = buffer.add_lane("q")
    buffer.offer(lane, sized(1, 10), "drop")
    assert buffer.offer(lane, sized(2, 31), "drop") == DROPPED
    assert (lane.gap, list(lane.messages), buffer.size, buffer.bytes) == (Gap(1, 2, "q"), [], 0, 0)


# ---------------------------------------------------------------------------------------
# Rounds bounded in bytes


def test_a_round_stops_when_its_bytes_reach_the_bound_exactly() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", quota=5)
    for seq in range(1, 5):
        buffer.offer(lane, sized(seq, 100), "drop")
    assert seqs(buffer.take_round(max_bytes=200)) == [1, 2]
    assert (buffer.size, buffer.bytes) == (2, 200)
    assert seqs(buffer.take_round(max_bytes=201)) == [3, 4]
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_a_round_bounded_in_bytes_keeps_the_quota() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", quota=2)
    for seq in range(1, 6):
        buffer.offer(lane, sized(seq, 1), "drop")
    assert seqs(buffer.take_round(max_bytes=1000)) == [1, 2]
    assert (buffer.size, buffer.bytes) == (3, 3)
    lane.quota = None
    assert seqs(buffer.take_round(max_bytes=1000)) == [3, 4, 5]
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_a_round_always_holds_one_message() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q")
    buffer.offer(lane, sized(1, 50), "drop")
    buffer.offer(lane, sized(2, 50), "drop")
    assert seqs(buffer.take_round(max_bytes=1)) == [1]
    assert (buffer.size, buffer.bytes) == (1, 50)


def test_a_round_out_of_bytes_leaves_the_next_lanes_untouched() -> None:
    buffer = SubscriberBuffer(10)
    first = buffer.add_lane("first", priority=1)
    second = buffer.add_lane("second", notices=[b"n"], gap=Gap(1, 1))
    buffer.offer(first, sized(1, 100), "drop")
    buffer.offer(second, sized(2, 100), "drop")
    assert seqs(buffer.take_round(max_bytes=100)) == [1]
    assert (second.notices, second.gap, seqs(list(second.messages))) == (
        [b"n"],
        Gap(1, 1, "second"),
        [2],
    )
    assert buffer.take_round(max_bytes=100) == [b"n", Gap(1, 1, "second"), msg_like(2)]


def test_a_round_with_bytes_left_goes_on_to_the_next_lane() -> None:
    buffer = SubscriberBuffer(10)
    first = buffer.add_lane("first", priority=1)
    second = buffer.add_lane("second")
    buffer.offer(first, sized(1, 100), "drop")
    buffer.offer(second, sized(1, 100), "drop")
    buffer.offer(second, sized(2, 100), "drop")
    assert [
        (m.queue if isinstance(m, Gap) else m.seq) for m in buffer.take_round(max_bytes=101)
    ] == [1, 1]
    assert (buffer.size, buffer.bytes) == (1, 100)


def test_retracted_messages_leave_the_bytes_without_spending_the_bound() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q")
    messages = [sized(seq, 10) for seq in range(1, 6)]
    for m in messages:
        buffer.offer(lane, m, "drop")
    messages[0].retracted = messages[1].retracted = True
    assert seqs(buffer.take_round(max_bytes=20)) == [3, 4]
    assert (buffer.size, buffer.bytes) == (1, 10)
    messages[4].retracted = True
    assert buffer.take_round() == []
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_an_unbounded_round_takes_the_bytes_of_retracted_messages_too() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q", quota=3)
    messages = [sized(seq, seq) for seq in range(1, 4)]
    for m in messages:
        buffer.offer(lane, m, "drop")
    messages[1].retracted = True
    assert seqs(buffer.take_round()) == [1, 3]
    assert (buffer.size, buffer.bytes) == (0, 0)


def test_release_reports_none_of_the_held_drops_an_empty_replay_covers() -> None:
    buffer = SubscriberBuffer(1)
    lane = buffer.add_lane("q", held=True)
    for live in (3, 4, 5, 6, 7):
        buffer.offer(lane, sized(live), "drop")
    assert (lane.gap, seqs(list(lane.messages))) == (Gap(3, 6, "q"), [7])
    buffer.release_lane("q", seq=4)  # up to date at 4: only 5 and 6 are missed
    assert lane.gap == Gap(5, 6, "q")
    assert buffer.take_round() == [Gap(5, 6, "q"), msg_like(7)]


def test_a_round_with_one_byte_left_takes_one_more_message() -> None:
    buffer = SubscriberBuffer(10)
    lane = buffer.add_lane("q")
    for seq in range(1, 5):
        buffer.offer(lane, sized(seq, 100), "drop")
    assert seqs(buffer.take_round(max_bytes=201)) == [1, 2, 3]
    assert (buffer.size, buffer.bytes) == (1, 100)
