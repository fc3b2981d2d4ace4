"""Brokers: what the nodes of an application share (see :mod:`trio_ws.brokers._base`).

``memory`` is embedded (one process, or several nodes of one process on one
:class:`MemoryStore`); ``redis`` (:mod:`trio_ws.brokers.redis`, the ``redis`` extra)
joins processes and machines through one Redis.
"""

from ._base import (
    Broker,
    BrokerError,
    BrokerState,
    BrokerStatistics,
    BrokerUnavailable,
    Claim,
    NodeInfo,
    PublishItem,
    Replay,
    RoutedClose,
)
from .memory import MemoryBroker, MemoryStore

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerState",
    "BrokerStatistics",
    "BrokerUnavailable",
    "Claim",
    "MemoryBroker",
    "MemoryStore",
    "NodeInfo",
    "PublishItem",
    "Replay",
    "RoutedClose",
    "broker_from_url",
]


def broker_from_url(url: str) -> Broker:
    """The broker a URL names: ``memory`` (or ``memory://``), or a Redis URL for a
    :class:`~trio_ws.brokers.redis.RedisBroker`: ``redis://host:port/db`` (``rediss://``
    for TLS) for one server, ``redis+cluster://host:port[,host:port...]`` for a Redis
    Cluster (seed nodes), ``redis+sentinel://host:port[,host:port...]/service[/db]`` for
    the primary that Sentinels name (``rediss+cluster://``, ``rediss+sentinel://`` for
    TLS).

    Raises:
        ValueError: a URL naming no broker this build has.
        ImportError: a Redis URL without coredis installed (the ``redis`` extra).
    """
    if url in ("memory", "memory://"):
        return MemoryBroker()
    if url.startswith(_REDIS_SCHEMES):
        try:
            from .redis import RedisBroker  # imported here: coredis is optional
        except ImportError as exc:
            raise ImportError(f"{url!r} needs coredis: pip install 'trio_ws[redis]'") from exc
        return RedisBroker(url)
    raise ValueError(
        f"unknown broker {url!r}: expected 'memory', 'redis://...', 'rediss://...',"
        " 'redis+cluster://...' or 'redis+sentinel://...'"
    )


_REDIS_SCHEMES = tuple(
    f"{base}{mode}://" for base in ("redis", "rediss") for mode in ("", "+cluster", "+sentinel")
)
