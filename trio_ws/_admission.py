"""How many connections one address may hold, and how many may wait to be admitted.

A connection is *pending* from accept until it is admitted: logged in (an app's clients),
or through the WebSocket handshake (a raw endpoint). Pending connections cost the server
but prove nothing about the peer, so they have a cap of their own, in all and per
address, below the cap on everything one address may hold. An address is an IPv4 address
or an IPv6 /64 (one subscriber's usual allocation: a single host can use all of it).
Over a cap the new socket is closed at once, before a byte is read.
"""

from __future__ import annotations

import ipaddress

import attrs

__all__ = ["Admission", "address_key"]


def address_key(host: str) -> str:
    """The unit the per-address limits count: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@attrs.define
class _Counts:
    open: int = 0
    pending: int = 0


class Admission:
    """The per-address and pending counts of one server."""

    def __init__(
        self, *, max_per_address: int, max_pending: int, max_pending_per_address: int
    ) -> None:
        self.max_per_address = max_per_address
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self.pending = 0
        self.refused = 0
        self._by_address: dict[str, _Counts] = {}

    def enter(self, key: str) -> bool:
        """A socket from ``key`` was accepted: count it, or return False (refuse it)."""
        counts = self._by_address.get(key)
        if counts is None:
            counts = self._by_address[key] = _Counts()
        if (
            counts.open >= self.max_per_address
            or counts.pending >= self.max_pending_per_address
            or self.pending >= self.max_pending
        ):
            self.refused += 1
            if not counts.open:
                del self._by_address[key]
            return False
        counts.open += 1
        counts.pending += 1
        self.pending += 1
        return True

    def admit(self, key: str) -> None:
        """The connection from ``key`` is admitted: no longer pending."""
        counts = self._by_address[key]
        counts.pending -= 1
        self.pending -= 1

    def leave(self, key: str, *, admitted: bool) -> None:
        """The connection from ``key`` ended."""
        counts = self._by_address[key]
        counts.open -= 1
        if not admitted:
            counts.pending -= 1
            self.pending -= 1
        if not counts.open:
            del self._by_address[key]

    def open_from(self, key: str) -> int:
        counts = self._by_address.get(key)
        return counts.open if counts is not None else 0
