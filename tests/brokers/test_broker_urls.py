"""broker_from_url: the URLs that name a broker, and the ones that do not."""

from __future__ import annotations

import pytest

from trio_ws.brokers import BrokerState, MemoryBroker, broker_from_url
from trio_ws.brokers.redis import RedisBroker


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        ("redis://127.0.0.1:6390/2", "single"),
        ("rediss://redis.example:6380", "single"),
        ("redis+cluster://10.0.0.1:7000", "cluster"),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001", "cluster"),
        ("rediss+cluster://:secret@10.0.0.1:7000,[::1]:7001", "cluster"),
        ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster", "sentinel"),
        ("redis+sentinel://user:pw@10.0.0.1:26379/mymaster/3", "sentinel"),
    ],
)
def test_redis_urls_make_a_redis_broker_that_has_not_connected(url: str, mode: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, RedisBroker)
    assert broker.url == url
    assert broker.mode == mode
    assert broker.state is BrokerState.CONNECTING  # nothing happens before run()


def test_the_parts_of_cluster_and_sentinel_urls() -> None:
    cluster = RedisBroker("rediss+cluster://:s%40cret@h1:7000,[::1]:7001")
    assert cluster._url_parts == {
        "ssl": True,
        "username": None,
        "password": "s@cret",
        "nodes": [("h1", 7000), ("::1", 7001)],
    }
    sentinel = RedisBroker("redis+sentinel://u:p@s1:26379,s2:26380/my%20service/2")
    assert sentinel._url_parts == {
        "ssl": False,
        "username": "u",
        "password": "p",
        "nodes": [("s1", 26379), ("s2", 26380)],
        "service": "my service",
        "db": 2,
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h1", "host:port"),
        ("redis+cluster://h1:7000/3", "one database"),
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel://s1:26379/svc/x", "service_name"),
        ("redis+shard://h1:1", "unknown Redis URL scheme"),
    ],
)
def test_bad_cluster_and_sentinel_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBroker(url)


def test_a_cluster_prefix_cannot_hold_a_hash_tag() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisBroker("redis+cluster://h1:7000", prefix="app{1}")


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
