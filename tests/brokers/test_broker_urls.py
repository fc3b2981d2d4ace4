"""broker_from_url: the URLs that name a broker, and the ones that do not."""

from __future__ import annotations

import pytest

from trio_ws.brokers import BrokerState, MemoryBroker, broker_from_url
from trio_ws.brokers.redis import RedisBroker


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6390/2", "rediss://redis.example:6380"])
def test_redis_urls_make_a_redis_broker_that_has_not_connected(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, RedisBroker)
    assert broker.url == url
    assert broker.state is BrokerState.CONNECTING  # nothing happens before run()


def test_memory_and_unknown_urls() -> None:
    assert isinstance(broker_from_url("memory"), MemoryBroker)
    assert isinstance(broker_from_url("memory://"), MemoryBroker)
    with pytest.raises(ValueError, match="unknown broker 'kafka://x'"):
        broker_from_url("kafka://x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node_id": "a/b"}, "node_id"),
        ({"node_id": "has space"}, "node_id"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"operation_timeout": -1}, "operation_timeout"),
        ({"max_reconnect_seconds": 0}, "max_reconnect_seconds"),
    ],
)
def test_bad_redis_broker_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBroker("redis://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
