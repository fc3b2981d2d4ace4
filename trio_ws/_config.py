"""Limits and timeouts of a server, frozen and validated in one place (DESIGN.md's table)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import attrs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _positive_or_none(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or None, not {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _networks(values: Sequence[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in values)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything a server enforces, with the defaults of DESIGN.md."""

    max_head_size: int = attrs.field(default=8192, validator=_positive)
    """Largest HTTP request head in bytes; over it the answer is 431."""
    handshake_timeout: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    """Seconds for the whole request head to arrive; then the connection is dropped."""
    login_timeout: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    """Seconds from the handshake to a successful login; then close 1008."""
    max_message_size: int | None = attrs.field(default=1 << 20, validator=_positive_or_none)
    """Largest message after reassembly and inflation, in bytes; over it close 1009."""
    message_timeout: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    """Seconds a message sent in fragments may take from its first fragment to its last;
    then close 1008 (a peer trickling empty continuations holds no memory, but must not
    hold the connection for ever)."""
    max_fragments: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Data frames one message may arrive in (``None``: the protocol core's default);
    beyond it close 1009."""
    ping_interval: float | None = attrs.field(default=20.0, validator=_positive_or_none)
    """Seconds of silence from a client after which the server pings it."""
    ping_timeout: float | None = attrs.field(default=20.0, validator=_positive_or_none)
    """Seconds a pinged client has to show life (any frame); then close 1011."""
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    """Open WebSocket connections beyond which a new handshake gets 503."""
    max_connections_per_address: int = attrs.field(default=1000, validator=_positive)
    """Connections (in any stage) one address (an IPv4 address or an IPv6 /64) may hold;
    beyond it a new socket is closed at once."""
    max_pending: int = attrs.field(default=1000, validator=_positive)
    """Connections not yet admitted (in the handshake, or not logged in yet) in all."""
    max_pending_per_address: int = attrs.field(default=256, validator=_positive)
    """Connections not yet admitted from one address."""
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Origins (``scheme://host[:port]``) accepted besides the server's own (``"*"``
    accepts any); see :mod:`trio_ws._origins`."""
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Host names (besides IP addresses and ``localhost``) that are this server's own: a
    page served from one of them may connect without being listed in
    ``allowed_origins``. Any other name is refused, which defeats DNS rebinding."""
    ip_allow: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    """When not empty, only peers in these networks are served."""
    ip_deny: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    """Peers in these networks are refused before the handshake."""
    compression: bool = True
    """Accept permessage-deflate when a client offers it."""
    server_no_context_takeover: bool = True
    """Reset our compressor per message, so that one compressed frame can go to many (and
    one zlib compressor serves every connection)."""
    client_max_window_bits: int | None = attrs.field(default=12)
    """The LZ77 window, in bits (8 to 15), asked of a client that offers
    ``client_max_window_bits``: our inflater for its messages keeps ``2**bits`` bytes
    between messages (``None``: the client's own choice, 15 unless it offered less)."""
    write_buffer_size: int = attrs.field(default=1 << 20, validator=_positive)
    """Bytes queued for a client beyond which a sender waits (up to ``send_timeout``)."""
    send_timeout: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    """Seconds a sender waits for a slow client's buffer to drain; then the client is closed."""
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    """Seconds to wait for the peer's Close reply, and the grace period of a shutdown."""
    max_subscriber_buffer: int = attrs.field(default=1000, validator=_positive)
    """Messages a broadcast subscriber may have waiting (per queue) before its queue's
    policy applies."""
    max_subscriptions_per_client: int = attrs.field(default=100, validator=_positive)
    """Queues one client may be subscribed to at once; beyond it ``too_many_subscriptions``."""
    max_subscriber_bytes: int | None = attrs.field(default=8 << 20, validator=_positive_or_none)
    """Bytes a broadcast subscriber may have waiting in all its queues before the
    policy applies (``None``: only the message count bounds it)."""
    rate_limit: tuple[int, float] | None = attrs.field(default=None)
    """``(messages, seconds)``: a logged-in client sending faster gets ``rate_limited``
    errors for the excess (a token bucket of ``messages`` refilled over ``seconds``)."""

    @client_max_window_bits.validator
    def _check_window_bits(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not 8 <= value <= 15:
            raise ValueError(f"{attribute.name} must be between 8 and 15 or None, not {value!r}")

    @rate_limit.validator
    def _check_rate_limit(self, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and (len(value) != 2 or value[0] < 1 or value[1] <= 0):
            raise ValueError(f"rate_limit must be (messages >= 1, seconds > 0), not {value!r}")

    def ip_allowed(self, host: str) -> bool:
        """Whether a peer address passes the allow and deny lists."""
        if not self.ip_allow and not self.ip_deny:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return not self.ip_allow
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.ip_deny):
            return False
        return not self.ip_allow or any(addr in net for net in self.ip_allow)
