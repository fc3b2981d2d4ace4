"""The session stage machine: every stage against every input, login tries, misuse."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol._errors import LocalProtocolError
from trio_ws.protocol._stages import (
    _TRANSITIONS,
    MAX_LOGIN_TRIES,
    Action,
    AttemptLogin,
    CloseConnection,
    Dispatch,
    Reply,
    Session,
    Stage,
    _Event,
    _State,
    error_message,
)


def in_handshake() -> Session:
    return Session()


def in_login() -> Session:
    session = Session()
    session.handshake_complete()
    return session


def login_pending() -> Session:
    session = in_login()
    assert session.receive_text('{"type": "login", "name": "alice"}') == [
        AttemptLogin({"type": "login", "name": "alice"})
    ]
    return session


def connected() -> Session:
    session = login_pending()
    session.login_succeeded("alice")
    return session


def closed() -> Session:
    session = connected()
    session.closed()
    return session


def error(code: str) -> Callable[[list[Action]], bool]:
    def check(actions: list[Action]) -> bool:
        return (
            len(actions) == 1
            and isinstance(actions[0], Reply)
            and actions[0].message["type"] == "error"
            and actions[0].message["code"] == code
            and isinstance(actions[0].message["message"], str)
        )

    return check


# ---------------------------------------------------------------------------------------
# Stages and the transition table


def test_a_new_session_is_in_handshake() -> None:
    session = Session()
    assert session.stage is Stage.HANDSHAKE
    assert session.name is None
    assert session.login_tries == 0
    assert not session.login_pending


def test_handshake_complete_moves_to_login() -> None:
    session = in_login()
    assert session.stage is Stage.LOGIN
    assert not session.login_pending


def test_the_table_covers_every_state() -> None:
    assert set(_TRANSITIONS) == set(_State)
    for row in _TRANSITIONS.values():
        assert _Event.CLOSED in row  # closing is legal from anywhere


def test_max_login_tries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Session(max_login_tries=0)


def test_repr_shows_stage_and_name() -> None:
    assert "CONNECTED" in repr(connected())
    assert "'alice'" in repr(connected())


# Every (stage, call) pair the table leaves out must raise, naming the call and the stage.
CALLS: dict[str, Callable[[Session], object]] = {
    "handshake_complete": lambda s: s.handshake_complete(),
    "receive_text": lambda s: s.receive_text('{"type": "echo"}'),
    "receive_bytes": lambda s: s.receive_bytes(b"x"),
    "login_succeeded": lambda s: s.login_succeeded("bob"),
    "login_failed": lambda s: s.login_failed("bad_name", "no"),
    "login_timed_out": lambda s: s.login_timed_out(),
}
ILLEGAL = [
    (in_handshake, "HANDSHAKE", ""),
    (in_login, "LOGIN", ""),
    (login_pending, "LOGIN", " while a login attempt is pending"),
    (connected, "CONNECTED", ""),
    (closed, "CLOSED", ""),
]
LEGAL = {
    in_handshake: {"handshake_complete"},
    in_login: {"receive_text", "receive_bytes", "login_timed_out"},
    login_pending: {"login_succeeded", "login_failed", "login_timed_out"},
    connected: {"receive_text", "receive_bytes"},
    closed: set(),
}


# The legal pairs are left out here: each has tests of its own below.
ILLEGAL_STEPS = [
    pytest.param(make, stage, suffix, call, id=f"{make.__name__}-{call}")
    for make, stage, suffix in ILLEGAL
    for call in sorted(CALLS)
    if call not in LEGAL[make]
]


@pytest.mark.parametrize(("make", "stage", "suffix", "call"), ILLEGAL_STEPS)
def test_illegal_steps_raise_naming_event_and_stage(
    make: Callable[[], Session], stage: str, suffix: str, call: str
) -> None:
    session = make()
    before = session.stage
    with pytest.raises(LocalProtocolError, match=rf"^cannot {call} in stage {stage}{suffix}$"):
        CALLS[call](session)
    assert session.stage is before  # an illegal step changes nothing


@pytest.mark.parametrize("make", [in_handshake, in_login, login_pending, connected, closed])
def test_closed_from_anywhere_and_idempotent(make: Callable[[], Session]) -> None:
    session = make()
    session.closed()
    assert session.stage is Stage.CLOSED
    session.closed()
    assert session.stage is Stage.CLOSED
    assert not session.login_pending


# ---------------------------------------------------------------------------------------
# LOGIN stage


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        '{"type": "login"',
        "{'type': 'login'}",
        "NaN",
        '{"type": "login", "name": Infinity}',
        "[" * 100_000,  # deeper than the decoder's recursion limit
        "1" * 5000,  # longer than int()'s digit limit
    ],
)
@pytest.mark.parametrize("make", [in_login, connected])
def test_invalid_json_is_bad_message(make: Callable[[], Session], text: str) -> None:
    session = make()
    stage = session.stage
    assert error("bad_message")(session.receive_text(text))
    assert session.stage is stage
    assert session.login_tries == 0


@pytest.mark.parametrize("text", ["[]", '["login"]', '"login"', "42", "null", "true"])
@pytest.mark.parametrize("make", [in_login, connected])
def test_json_that_is_not_an_object_is_bad_message(make: Callable[[], Session], text: str) -> None:
    session = make()
    assert error("bad_message")(session.receive_text(text))


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"name": "alice"},
        {"type": None, "name": "alice"},
        {"type": ["login"]},
        {"type": "LOGIN", "name": "alice"},
        {"type": "echo", "text": "hi"},
        {"type": "ping"},
    ],
)
def test_other_objects_before_login_get_login_required(message: dict[str, Any]) -> None:
    session = in_login()
    assert error("login_required")(session.receive_text(json.dumps(message)))
    assert session.stage is Stage.LOGIN
    assert not session.login_pending
    assert session.login_tries == 0


def test_binary_before_login_gets_login_required() -> None:
    session = in_login()
    assert error("login_required")(session.receive_bytes(b"\x00\x01"))
    assert session.stage is Stage.LOGIN
    assert session.login_tries == 0


@pytest.mark.parametrize(
    "message",
    [
        {"type": "login", "name": "alice"},
        {"type": "login"},  # field checks are the policy's job
        {"type": "login", "name": 42, "token": "x", "extra": [1, 2]},
    ],
)
def test_a_login_message_asks_for_an_attempt(message: dict[str, Any]) -> None:
    session = in_login()
    assert session.receive_text(json.dumps(message)) == [AttemptLogin(message)]
    assert session.stage is Stage.LOGIN
    assert session.login_pending


def test_login_succeeded_welcomes_and_connects() -> None:
    session = login_pending()
    assert session.login_succeeded("Alice") == [Reply({"type": "welcome", "name": "Alice"})]
    assert session.stage is Stage.CONNECTED
    assert session.name == "Alice"
    assert not session.login_pending


def test_login_failed_replies_and_allows_another_try() -> None:
    session = login_pending()
    assert session.login_failed("name_taken", "taken") == [
        Reply(error_message("name_taken", "taken"))
    ]
    assert session.stage is Stage.LOGIN
    assert not session.login_pending
    assert session.login_tries == 1
    assert session.name is None
    assert session.receive_text('{"type": "login", "name": "bob"}') == [
        AttemptLogin({"type": "login", "name": "bob"})
    ]
    assert session.login_succeeded("bob") == [Reply({"type": "welcome", "name": "bob"})]
    assert session.login_tries == 1  # failures so far, kept for the record


def fail_login(session: Session) -> list[Action]:
    assert session.receive_text('{"type": "login", "name": ""}') == [
        AttemptLogin({"type": "login", "name": ""})
    ]
    return session.login_failed("bad_name", "empty")


def test_the_fifth_failure_gets_its_error_then_1008() -> None:
    assert MAX_LOGIN_TRIES == 5
    session = in_login()
    for tries in range(1, 5):
        assert fail_login(session) == [Reply(error_message("bad_name", "empty"))]
        assert session.stage is Stage.LOGIN
        assert session.login_tries == tries
    actions = fail_login(session)
    assert actions[0] == Reply(error_message("bad_name", "empty"))
    assert isinstance(actions[1], CloseConnection)
    assert actions[1].code == 1008
    assert len(actions) == 2
    assert session.stage is Stage.CLOSED
    assert session.login_tries == 5
    with pytest.raises(LocalProtocolError, match="receive_text in stage CLOSED"):
        session.receive_text('{"type": "login", "name": "alice"}')


def test_bad_json_and_login_required_do_not_count_as_tries() -> None:
    session = in_login()
    for _ in range(4):
        fail_login(session)
    for _ in range(20):
        assert error("bad_message")(session.receive_text("{oops"))
        assert error("login_required")(session.receive_text('{"type": "echo"}'))
        assert error("login_required")(session.receive_bytes(b"hi"))
    assert session.login_tries == 4
    assert session.stage is Stage.LOGIN
    session.receive_text('{"type": "login", "name": "alice"}')
    assert session.login_succeeded("alice") == [Reply({"type": "welcome", "name": "alice"})]


@pytest.mark.parametrize("max_tries", [1, 2, 10])
def test_max_login_tries_is_configurable(max_tries: int) -> None:
    session = Session(max_login_tries=max_tries)
    session.handshake_complete()
    for _ in range(max_tries - 1):
        assert len(fail_login(session)) == 1
    assert fail_login(session)[-1] == CloseConnection(1008, "too many failed logins")
    assert session.stage is Stage.CLOSED


@pytest.mark.parametrize("make", [in_login, login_pending])
def test_login_timeout_closes_with_1008(make: Callable[[], Session]) -> None:
    session = make()
    assert session.login_timed_out() == [CloseConnection(1008, "login timeout")]
    assert session.stage is Stage.CLOSED
    assert not session.login_pending


@pytest.mark.parametrize("call", ["receive_text", "receive_bytes"])
def test_receiving_while_a_login_is_pending_is_misuse(call: str) -> None:
    session = login_pending()
    with pytest.raises(
        LocalProtocolError,
        match=rf"cannot {call} in stage LOGIN while a login attempt is pending",
    ):
        CALLS[call](session)
    assert session.login_pending  # still waiting for the outcome
    assert session.login_succeeded("alice")


# ---------------------------------------------------------------------------------------
# CONNECTED stage


@pytest.mark.parametrize(
    "message",
    [
        {"type": "echo", "text": "hi"},
        {"type": "routed", "to": "bob", "text": 3},  # field types are the service's job
        {"type": "no-such-service"},  # routing is the application's job
        {"type": ""},
        {"type": "Login"},
    ],
)
def test_connected_dispatches_objects_with_a_string_type(message: dict[str, Any]) -> None:
    session = connected()
    assert session.receive_text(json.dumps(message)) == [Dispatch(message)]
    assert session.stage is Stage.CONNECTED


@pytest.mark.parametrize("message", [{}, {"text": "hi"}, {"type": 1}, {"type": None}])
def test_connected_without_a_string_type_is_bad_message(message: dict[str, Any]) -> None:
    assert error("bad_message")(connected().receive_text(json.dumps(message)))


def test_login_again_is_bad_message_already_logged_in() -> None:
    session = connected()
    actions = session.receive_text('{"type": "login", "name": "bob"}')
    assert actions == [Reply(error_message("bad_message", "already logged in"))]
    assert session.name == "alice"
    assert session.stage is Stage.CONNECTED


def test_connected_binary_is_dispatched_as_bytes() -> None:
    session = connected()
    assert session.receive_bytes(b"\x00\xff") == [Dispatch(b"\x00\xff")]
    assert session.receive_bytes(b"") == [Dispatch(b"")]


def test_replies_are_fresh_objects() -> None:
    # The runtime may add to a reply before sending it; that must not leak into the next.
    session = in_login()
    first = session.receive_bytes(b"")[0]
    assert isinstance(first, Reply)
    first.message["extra"] = 1
    second = session.receive_bytes(b"")[0]
    assert isinstance(second, Reply)
    assert "extra" not in second.message


def test_error_message_shape() -> None:
    assert error_message("x", "y") == {"type": "error", "code": "x", "message": "y"}


# ---------------------------------------------------------------------------------------
# Property: arbitrary input never breaks the machine

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
texts = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.builds(
        lambda kind, extra: json.dumps({**extra, "type": kind}),
        st.sampled_from(["login", "echo", "ping", "routed"]) | st.text(max_size=5),
        st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    ),
)
steps = st.one_of(
    st.tuples(st.just("text"), texts),
    st.tuples(st.just("bytes"), st.binary(max_size=20)),
    st.tuples(st.just("succeed"), st.text(max_size=5)),
    st.tuples(st.just("fail"), st.text(max_size=5)),
    st.tuples(st.just("timeout"), st.none()),
    st.tuples(st.just("handshake"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


@settings(max_examples=300)
@given(st.lists(steps, max_size=40), st.integers(min_value=1, max_value=6))
def test_arbitrary_sequences_only_raise_for_misuse(
    sequence: list[tuple[str, Any]], max_tries: int
) -> None:
    session = Session(max_login_tries=max_tries)
    logged_in = False
    for kind, arg in sequence:
        before = (session.stage, session.login_pending)
        misuse: str | None = None
        try:
            if kind == "text":
                actions = session.receive_text(arg)
            elif kind == "bytes":
                actions = session.receive_bytes(arg)
            elif kind == "succeed":
                actions = session.login_succeeded(arg)
            elif kind == "fail":
                actions = session.login_failed("bad_name", arg)
            elif kind == "timeout":
                actions = session.login_timed_out()
            elif kind == "handshake":
                session.handshake_complete()
                actions = []
            else:
                session.closed()
                actions = []
        except LocalProtocolError as exc:
            misuse = str(exc)
        if misuse is not None:
            # Misuse is reported, named, and changes nothing.
            assert re.match(r"cannot \w+ in stage [A-Z]+", misuse)
            assert (session.stage, session.login_pending) == before
            continue
        if kind == "succeed":
            logged_in = True
        for action in actions:
            if isinstance(action, Dispatch):
                assert logged_in
                assert before[0] is Stage.CONNECTED
            if isinstance(action, Reply):
                json.dumps(action.message)  # always encodable
        if any(isinstance(action, CloseConnection) for action in actions):
            assert session.stage is Stage.CLOSED
        assert session.login_tries <= max_tries
        assert (session.name is not None) == logged_in
