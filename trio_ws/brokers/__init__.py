"""Brokers: what the nodes of an application share (see :mod:`trio_ws.brokers._base`).

``memory`` is embedded (one process, or several nodes of one process on one
:class:`MemoryStore`); a shared broker joins processes and machines.
"""

from ._base import (
    Broker,
    BrokerError,
    BrokerState,
    BrokerStatistics,
    BrokerUnavailable,
    Claim,
    NodeInfo,
    Replay,
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
    "Replay",
    "broker_from_url",
]


def broker_from_url(url: str) -> Broker:
    """The broker a URL names: ``memory`` (or ``memory://``).

    Raises:
        ValueError: a URL naming no broker this build has.
    """
    if url in ("memory", "memory://"):
        return MemoryBroker()
    raise ValueError(f"unknown broker {url!r}: expected 'memory'")
