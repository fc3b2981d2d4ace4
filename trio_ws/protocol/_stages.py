"""The session stage machine: what one connection may do before and after it logs in.

Theory of operation
-------------------
A :class:`Session` sits above the RFC 6455 connection (:mod:`._connection`). It never sees
frames or bytes on the wire, only whole messages, and it never performs I/O: the runtime
feeds it what happened and carries out the :data:`Action` values it returns, in order.
This is the Push Framework's client factory role: a physical connection becomes a logical,
named client once a login succeeds.

Stages (PROTOCOL.md "Stages") and what moves them::

    HANDSHAKE --handshake_complete()------------------------->  LOGIN
    LOGIN     --receive_text(login message) -> AttemptLogin--->  LOGIN (attempt pending)
    LOGIN*    --login_succeeded(name)       -> welcome-------->  CONNECTED
    LOGIN*    --login_failed(...)           -> error---------->  LOGIN
    LOGIN*    --login_failed(...), the last -> error + 1008--->  CLOSED
    LOGIN     --login_timed_out()           -> 1008----------->  CLOSED
    any       --closed()------------------------------------->  CLOSED

    (LOGIN* = LOGIN with an attempt pending.)

Every other message in LOGIN gets an ``error`` reply and leaves the stage unchanged; in
CONNECTED a well-formed message becomes :class:`Dispatch` for the service registered for
its ``"type"``. While an attempt is pending the session accepts no message: the runtime
has a single reader, which awaits the login policy before reading on, so a ``receive_*``
call then is a bug and raises :class:`LocalProtocolError`, as does any step missing from
``_TRANSITIONS``. After a :class:`CloseConnection` the session is CLOSED: the runtime
stops feeding it messages (data still arriving during the closing handshake is dropped).

Only the envelope is checked here (a JSON object with a string ``"type"``); the fields a
message type needs are its service's business. JSON is decoded exactly once, here.
"""

from __future__ import annotations

import enum
import json
from typing import Any, NoReturn

import attrs

from ._errors import CloseCode, LocalProtocolError

__all__ = [
    "MAX_LOGIN_TRIES",
    "Action",
    "AttemptLogin",
    "CloseConnection",
    "Dispatch",
    "Reply",
    "Session",
    "Stage",
    "error_message",
]

# PROTOCOL.md: "The 5th failed login gets its error and then close code 1008." Enough for a
# typo or two and a taken name, too few to guess a token or walk a list of names.
MAX_LOGIN_TRIES = 5

_POLICY_VIOLATION = int(CloseCode.POLICY_VIOLATION)


class Stage(enum.Enum):
    """Where a session is in its life (an application *stage*, not an RFC *state*)."""

    HANDSHAKE = "handshake"
    LOGIN = "login"
    CONNECTED = "connected"
    CLOSED = "closed"


@attrs.frozen
class Reply:
    """Send ``message``, a JSON object, to this client."""

    message: dict[str, Any]
    """The object to encode and send in a text frame."""


@attrs.frozen
class AttemptLogin:
    """Run the login policy on ``message``.

    The runtime must then call :meth:`Session.login_succeeded` or
    :meth:`Session.login_failed` (or :meth:`Session.login_timed_out`, or
    :meth:`Session.closed`) before feeding the session another message.
    """

    message: dict[str, Any]
    """The decoded login message; ``message["type"] == "login"``."""


@attrs.frozen
class Dispatch:
    """Hand ``message`` to the service registered for ``message["type"]``."""

    message: dict[str, Any] | bytes
    """A JSON object whose ``"type"`` is a string other than ``"login"``, or the payload
    of a binary message."""


@attrs.frozen
class CloseConnection:
    """Close the connection with ``code`` and ``reason`` (RFC 6455 §7.1.2)."""

    code: int
    """The close code, e.g. 1008 (policy violation, RFC 6455 §7.4.1)."""
    reason: str
    """A short explanation for the Close frame."""


Action = Reply | AttemptLogin | Dispatch | CloseConnection
"""What a :class:`Session` asks its runtime to do."""


def error_message(code: str, message: str) -> dict[str, Any]:
    """The ``error`` object of PROTOCOL.md: ``{"type": "error", "code": ..., "message": ...}``."""
    return {"type": "error", "code": code, "message": message}


class _State(enum.Enum):
    """The machine's own states: the stages, with LOGIN split on a pending attempt."""

    HANDSHAKE = enum.auto()
    LOGIN = enum.auto()
    LOGIN_PENDING = enum.auto()  # an AttemptLogin was returned, its outcome not yet known
    CONNECTED = enum.auto()
    CLOSED = enum.auto()


_STAGE_OF = {
    _State.HANDSHAKE: Stage.HANDSHAKE,
    _State.LOGIN: Stage.LOGIN,
    _State.LOGIN_PENDING: Stage.LOGIN,
    _State.CONNECTED: Stage.CONNECTED,
    _State.CLOSED: Stage.CLOSED,
}


class _Event(enum.Enum):
    """The calls that drive a :class:`Session`, named as the runtime spells them."""

    HANDSHAKE_COMPLETE = "handshake_complete"
    RECEIVE_TEXT = "receive_text"
    RECEIVE_BYTES = "receive_bytes"
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOGIN_TIMED_OUT = "login_timed_out"
    CLOSED = "closed"


_S = _State
_E = _Event

# The transition table: for each state, the legal events and the states each may lead to.
# Where two targets are listed, the outcome picks one (a login message or not; the last
# allowed failure or not). An event missing from a state's row is an illegal step.
_TRANSITIONS: dict[_State, dict[_Event, tuple[_State, ...]]] = {
    _S.HANDSHAKE: {
        _E.HANDSHAKE_COMPLETE: (_S.LOGIN,),
        _E.CLOSED: (_S.CLOSED,),
    },
    _S.LOGIN: {
        _E.RECEIVE_TEXT: (_S.LOGIN, _S.LOGIN_PENDING),
        _E.RECEIVE_BYTES: (_S.LOGIN,),
        _E.LOGIN_TIMED_OUT: (_S.CLOSED,),
        _E.CLOSED: (_S.CLOSED,),
    },
    _S.LOGIN_PENDING: {
        _E.LOGIN_SUCCEEDED: (_S.CONNECTED,),
        _E.LOGIN_FAILED: (_S.LOGIN, _S.CLOSED),
        _E.LOGIN_TIMED_OUT: (_S.CLOSED,),
        _E.CLOSED: (_S.CLOSED,),
    },
    _S.CONNECTED: {
        _E.RECEIVE_TEXT: (_S.CONNECTED,),
        _E.RECEIVE_BYTES: (_S.CONNECTED,),
        _E.CLOSED: (_S.CLOSED,),
    },
    _S.CLOSED: {
        _E.CLOSED: (_S.CLOSED,),
    },
}


class _NotJson(ValueError):
    """``NaN`` or ``Infinity``: answered as any other invalid JSON."""


def _reject_constant(_name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity, which are not JSON (RFC 8259 §6) and which
    # a browser's JSON.parse would choke on if a service echoed them back.
    raise _NotJson


# One decoder, built once: json.loads() with arguments would build a new one per call.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode

# Error replies (code, message). Built afresh each time: a Reply is frozen but its dict
# is not, and the runtime may add to what it sends.
_INVALID_JSON = ("bad_message", "message is not valid JSON")
_NOT_AN_OBJECT = ("bad_message", "message is not a JSON object")
_NO_TYPE = ("bad_message", 'message has no string "type"')
_ALREADY_LOGGED_IN = ("bad_message", "already logged in")
_LOGIN_REQUIRED = ("login_required", 'log in first: {"type": "login", "name": "..."}')


def _error(error: tuple[str, str]) -> list[Action]:
    return [Reply({"type": "error", "code": error[0], "message": error[1]})]


class Session:
    """The stage machine of one connection (see the module docstring).

    Args:
        max_login_tries: failed logins allowed; the last one gets its error and then a
            close with 1008.

    Raises:
        ValueError: ``max_login_tries`` is below 1.
    """

    __slots__ = ("_max_login_tries", "_state", "login_tries", "name")

    def __init__(self, *, max_login_tries: int = MAX_LOGIN_TRIES) -> None:
        if max_login_tries < 1:
            raise ValueError(f"max_login_tries must be at least 1, not {max_login_tries}")
        self._max_login_tries = max_login_tries
        self._state = _State.HANDSHAKE
        self.name: str | None = None
        """The client's name once logged in, else None."""
        self.login_tries = 0
        """Failed login attempts so far."""

    def __repr__(self) -> str:
        return (
            f"<Session {self._state.name} name={self.name!r} "
            f"login_tries={self.login_tries}/{self._max_login_tries}>"
        )

    @property
    def stage(self) -> Stage:
        """The current stage."""
        return _STAGE_OF[self._state]

    @property
    def login_pending(self) -> bool:
        """Whether an :class:`AttemptLogin` awaits its outcome."""
        return self._state is _State.LOGIN_PENDING

    def _check(self, event: _Event) -> None:
        if event not in _TRANSITIONS[self._state]:
            pending = " while a login attempt is pending" if self.login_pending else ""
            raise LocalProtocolError(f"cannot {event.value} in stage {self.stage.name}{pending}")

    def _move(self, event: _Event, target: _State) -> None:
        # Conditional transitions still go through the table, so it stays the truth.
        assert target in _TRANSITIONS[self._state][event], (self._state, event, target)
        self._state = target

    def handshake_complete(self) -> None:
        """The opening handshake succeeded: the client must now log in.

        Raises:
            LocalProtocolError: not in the HANDSHAKE stage.
        """
        self._check(_Event.HANDSHAKE_COMPLETE)
        self._move(_Event.HANDSHAKE_COMPLETE, _State.LOGIN)

    def receive_text(self, text: str) -> list[Action]:
        """A text message arrived; decode it and say what to do with it.

        Raises:
            LocalProtocolError: not in LOGIN or CONNECTED, or a login attempt is pending.
        """
        self._check(_Event.RECEIVE_TEXT)
        try:
            message = _decode(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return _error(_INVALID_JSON)
        if type(message) is not dict:
            return _error(_NOT_AN_OBJECT)
        kind = message.get("type")
        if self._state is _State.CONNECTED:
            if type(kind) is not str:
                return _error(_NO_TYPE)
            if kind == "login":
                return _error(_ALREADY_LOGGED_IN)
            return [Dispatch(message)]
        # LOGIN (PROTOCOL.md: neither of the errors above counts as a login try).
        if kind == "login":
            self._move(_Event.RECEIVE_TEXT, _State.LOGIN_PENDING)
            return [AttemptLogin(message)]
        return _error(_LOGIN_REQUIRED)

    def receive_bytes(self, data: bytes) -> list[Action]:
        """A binary message arrived (PROTOCOL.md: binary echo once logged in).

        Raises:
            LocalProtocolError: not in LOGIN or CONNECTED, or a login attempt is pending.
        """
        self._check(_Event.RECEIVE_BYTES)
        if self._state is _State.CONNECTED:
            return [Dispatch(data)]
        return _error(_LOGIN_REQUIRED)

    def login_succeeded(self, name: str) -> list[Action]:
        """The login policy accepted the pending attempt as ``name``.

        Raises:
            LocalProtocolError: no login attempt is pending.
        """
        self._check(_Event.LOGIN_SUCCEEDED)
        self._move(_Event.LOGIN_SUCCEEDED, _State.CONNECTED)
        self.name = name
        return [Reply({"type": "welcome", "name": name})]

    def login_failed(self, code: str, message: str) -> list[Action]:
        """The login policy refused the pending attempt.

        The client gets an ``error`` with ``code`` and ``message`` and may try again,
        except after the last allowed try, which also closes the connection with 1008.

        Raises:
            LocalProtocolError: no login attempt is pending.
        """
        self._check(_Event.LOGIN_FAILED)
        self.login_tries += 1
        actions: list[Action] = [Reply(error_message(code, message))]
        if self.login_tries >= self._max_login_tries:
            self._move(_Event.LOGIN_FAILED, _State.CLOSED)
            actions.append(CloseConnection(_POLICY_VIOLATION, "too many failed logins"))
        else:
            self._move(_Event.LOGIN_FAILED, _State.LOGIN)
        return actions

    def login_timed_out(self) -> list[Action]:
        """No login succeeded within the login time: close with 1008 (PROTOCOL.md).

        Raises:
            LocalProtocolError: not in the LOGIN stage.
        """
        self._check(_Event.LOGIN_TIMED_OUT)
        self._move(_Event.LOGIN_TIMED_OUT, _State.CLOSED)
        return [CloseConnection(_POLICY_VIOLATION, "login timeout")]

    def closed(self) -> None:
        """The connection ended, whichever side closed it. Calling it again does nothing."""
        self._check(_Event.CLOSED)
        self._move(_Event.CLOSED, _State.CLOSED)
