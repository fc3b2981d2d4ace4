"""Errors of the sans-IO core and the close codes they map to.

Two kinds of errors, as in h11 and wsproto: :class:`LocalProtocolError` when our side asks
for something the protocol forbids, :class:`RemoteProtocolError` when the peer breaks the
rules. The latter carries what to answer with: a close code once the connection is open, an
HTTP status during the opening handshake. Both inherit :class:`WebSocketError`.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """Close codes registered with IANA (RFC 6455 §7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire
    ABNORMAL_CLOSURE = 1006  # never on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Codes an endpoint may put in a Close frame: the registered ones that are not reserved for
# local use (1005, 1006, 1015 "MUST NOT be set as a status code in a Close control frame",
# RFC 6455 §7.4.1), plus 3000-4999 for libraries, frameworks and applications.
_SENDABLE_REGISTERED = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire."""
    return code in _SENDABLE_REGISTERED or 3000 <= code <= 4999


class WebSocketError(Exception):
    """Root of every exception trio_ws raises on purpose."""


class LocalProtocolError(WebSocketError):
    """Our side asked for something illegal in the current state (a bug in the caller)."""


class RemoteProtocolError(WebSocketError):
    """The peer broke the protocol.

    Attributes:
        reason: human-readable explanation, safe to send in a Close frame or HTTP body.
        close_code: the close code to fail the connection with (RFC 6455 §7.4.1).
        http_status: during the opening handshake, the HTTP status to answer with.
    """

    def __init__(
        self,
        reason: str,
        *,
        close_code: int = CloseCode.PROTOCOL_ERROR,
        http_status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
        self.http_status = http_status

    def __repr__(self) -> str:
        extra = f", http_status={self.http_status}" if self.http_status is not None else ""
        return f"RemoteProtocolError({self.reason!r}, close_code={self.close_code}{extra})"
