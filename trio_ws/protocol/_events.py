"""Events the sans-IO core reports: nouns, frozen, cheap to build."""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class TextMessage:
    """A complete text message (reassembled from its fragments, inflated, UTF-8 checked)."""

    data: str


@attrs.frozen(slots=True)
class BytesMessage:
    """A complete binary message (reassembled from its fragments, inflated)."""

    data: bytes


@attrs.frozen(slots=True)
class Ping:
    """A Ping control frame. Unless auto-pong is off, the core has already queued the Pong."""

    payload: bytes = b""


@attrs.frozen(slots=True)
class Pong:
    """A Pong control frame (a reply to our ping, or unsolicited)."""

    payload: bytes = b""


@attrs.frozen(slots=True)
class Close:
    """The peer's Close frame, or the end of the connection without one.

    ``code`` is 1005 when the frame carried no status and 1006 when the transport ended
    without any Close frame (RFC 6455 §7.1.5).
    """

    code: int
    reason: str = ""


Event = TextMessage | BytesMessage | Ping | Pong | Close
