"""The one rate limiter: a token bucket, used for client messages and queue publishes.

Pure (time is passed in) and O(1) in memory, whatever the rate: ``count`` tokens, refilled
at ``count / period`` per second, at most ``count`` saved up. So a sender may burst
``count`` events, and sustains ``count`` per ``period`` seconds.
"""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``count`` events per ``period`` seconds, in bursts of at most ``count``.

    Raises:
        ValueError: a count below 1 or a period that is not positive.
    """

    __slots__ = ("_per_second", "_stamp", "_tokens", "count", "period")

    def __init__(self, count: int, period: float) -> None:
        if count < 1 or not period > 0:
            raise ValueError(f"a rate needs a positive count and period, not {count}/{period}")
        self.count = count
        self.period = period
        self._per_second = count / period
        self._tokens = float(count)
        self._stamp: float | None = None

    def allow(self, now: float, n: int = 1) -> bool:
        """Take ``n`` tokens at time ``now`` if that many are there (all or none); return
        whether they were."""
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self.count, self._tokens + (now - self._stamp) * self._per_second)
        if self._stamp is None or now > self._stamp:
            self._stamp = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False
