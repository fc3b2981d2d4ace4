"""Publish to a trio_ws application's queues from any Python backend, straight to Redis.

A web backend (a Django or Flask view, a worker, a cron job) that shares the application's
Redis can publish to its queues without an HTTP hop: :class:`RedisPublisher` runs the
broker's own publish script on the broker's own keys (imported from
:mod:`trio_ws.brokers.redis`, not copied), so a message it publishes is exactly what a
node's ``await queue.publish(...)`` makes: the next seq of the queue, kept in its history
(replayed to a ``since``), in the same epoch, and delivered live to the queue's subscribers
on every node. It needs no running trio_ws node, and it runs under asyncio as well as
Trio (coredis runs on both, through anyio)::

    async with RedisPublisher("redis://127.0.0.1:6379") as publisher:
        seq = await publisher.publish("lobby", {"type": "grouped", "group": "lobby",
                                                "from": "backend", "text": "deployed"})

URLs: ``redis://`` and ``rediss://`` (one server) and ``redis+cluster://`` (a Redis
Cluster: the queue's keys and shard channel, as the broker lays them out there). Sentinel
URLs are refused: connect to the primary's ``redis://`` URL instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import anyio
import coredis
import coredis.exceptions
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from ._connection import dumps
from ._queue_model import QueueOptions, check_queue_name, encode_batch, encode_body
from .brokers._base import BrokerError, BrokerUnavailable, PublishItem
from .brokers.redis import (
    _parse_url,
    publish_args,
    publish_script,
    queue_channel,
    queue_keys,
)

__all__ = ["RedisPublisher"]

_TIME = "return redis.call('TIME')"

_CONNECTION_ERRORS = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.ClusterError,
    TimeoutError,
    OSError,
)


class RedisPublisher:
    """Publishes to the queues of the trio_ws nodes that share a Redis (module docstring).

    Use it as an async context manager (``async with``), in one task: coredis opens its
    connections there. Safe to share among the tasks of that event loop.

    Args:
        url: the nodes' broker URL: ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://...`` or ``redis+cluster://host:port[,host:port...]``.
        prefix: the nodes' key prefix (``RedisBroker(prefix=...)``; ``trio_ws`` by
            default).
        history: messages each queue keeps, as the application's queue options say
            (the demo's and :class:`~trio_ws.QueueOptions`' default: 100); a publish trims
            the kept history to it, as a node's would.
        ttl: seconds a kept message stays replayable (``None``: no limit), as the queue's.
        operation_timeout: seconds a publish may take. One that takes longer raises
            :class:`~trio_ws.BrokerUnavailable` and is not carried out later: the script
            refuses to run past its deadline (in Redis's clock), as a node's publish does.

    Raises:
        ValueError: an invalid URL or option.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "trio_ws",
        history: int = 100,
        ttl: float | None = None,
        operation_timeout: float = 2.0,
    ) -> None:
        mode, parts = _parse_url(url)
        if mode == "sentinel":
            raise ValueError(
                "RedisPublisher does not follow Sentinels; give it the primary's redis:// URL"
            )
        if not operation_timeout > 0:
            raise ValueError(f"operation_timeout must be positive: {operation_timeout!r}")
        if mode == "cluster" and ("{" in prefix or "}" in prefix):
            raise ValueError(f"prefix must not contain '{{' or '}}' on a cluster: {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.options = QueueOptions(history=history, ttl=ttl)
        self.operation_timeout = operation_timeout
        self._cluster = mode == "cluster"
        self._parts = parts
        self._script = Script[bytes](script=publish_script(cluster=self._cluster))
        self._client: Any = None
        self._offset_ms: float | None = None
        self._offset_error_ms = 0.0

    def __repr__(self) -> str:
        return f"<RedisPublisher {self.url} prefix={self.prefix!r}>"

    async def __aenter__(self) -> Self:
        options: dict[str, Any] = {
            "retry_policy": NoRetryPolicy(),
            "stream_timeout": self.operation_timeout,
            "connect_timeout": self.operation_timeout,
        }
        if self._cluster:
            parts = self._parts
            client: Any = coredis.RedisCluster(
                startup_nodes=[
                    coredis.connection.TCPLocation(host, port) for host, port in parts["nodes"]
                ],
                ssl=parts["ssl"],
                username=parts["username"],
                password=parts["password"],
                **options,
            )
        else:
            client = coredis.Redis.from_url(
                self.url, client_name=f"{self.prefix}:publisher", **options
            )
        # Entered here, outside any cancel scope of ours: coredis keeps a task group open
        # in it until __aexit__, which must nest around that.
        await client.__aenter__()
        self._client = client
        try:
            with anyio.fail_after(self.operation_timeout):
                await self._deadline()  # reach Redis now, and learn its clock
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, _CONNECTION_ERRORS):
                raise BrokerUnavailable(f"cannot reach Redis at {self.url}: {exc!r}") from exc
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    async def publish(
        self,
        queue: str,
        message: dict[str, Any] | str | bytes,
        *,
        key: str | None = None,
        history: int | None = None,
        ttl: float | None = None,
    ) -> int:
        """Publish ``message`` to ``queue`` on every node; return its seq.

        As :meth:`trio_ws.BroadcastQueue.publish`: a ``dict`` is sent as JSON text with
        ``"seq"`` added, ``str`` as text, ``bytes`` as a binary frame; ``key`` names the
        message for a retraction. ``history`` and ``ttl`` override the publisher's for
        this queue. One round trip to Redis.

        If cancelled while waiting for Redis, the message may or may not have been
        published.

        Raises:
            BrokerUnavailable: Redis could not be reached, or not within
                ``operation_timeout``; nothing was published.
            BrokerError: Redis refused the script.
            trio_ws.QueueError: ``queue`` is not a valid queue name (``bad_group``).
            TypeError: ``message`` is not a dict, str or bytes.
            RuntimeError: used outside ``async with``.
        """
        self._check(queue)
        body, kind = encode_body(message, dumps)
        options = self._options(history, ttl)
        return await self._run(queue, [(body, kind, key)], options)

    async def publish_many(
        self,
        queue: str,
        messages: Sequence[dict[str, Any] | str | bytes],
        *,
        keys: Sequence[str | None] | None = None,
        history: int | None = None,
        ttl: float | None = None,
    ) -> list[int]:
        """Publish several messages to ``queue`` in order, in one round trip; return their
        seqs.

        As :meth:`trio_ws.BroadcastQueue.publish_many`: the seqs are consecutive (no other
        publisher's message comes between them), and either all are published or none.
        ``keys`` has one key (or None) per message; ``history`` and ``ttl`` as in
        :meth:`publish`.

        Raises:
            ValueError: no messages, more than 1,000, or ``keys`` of another length.
            BrokerUnavailable, BrokerError, trio_ws.QueueError, TypeError, RuntimeError:
                as :meth:`publish`; none was published.
        """
        self._check(queue)
        items = encode_batch(messages, keys, dumps)
        count = len(items)
        options = self._options(history, ttl)
        last = await self._run(queue, items, options)
        return list(range(last - count + 1, last + 1))

    def _check(self, queue: str) -> None:
        if self._client is None:
            raise RuntimeError("use the publisher in 'async with RedisPublisher(...)'")
        check_queue_name(queue)

    def _options(self, history: int | None, ttl: float | None) -> QueueOptions:
        options = self.options
        if history is not None or ttl is not None:
            options = QueueOptions(
                history=options.history if history is None else history,
                ttl=options.ttl if ttl is None else ttl,
            )
        return options

    async def _run(self, queue: str, items: Sequence[PublishItem], options: QueueOptions) -> int:
        """Run the publish script for ``items`` within ``operation_timeout``; the last seq."""
        try:
            with anyio.fail_after(self.operation_timeout):
                deadline = await self._deadline()
                args = publish_args(
                    queue_channel(self.prefix, queue, cluster=self._cluster),
                    items,
                    options=options,
                    deadline=deadline,
                )
                keys = queue_keys(self.prefix, queue, cluster=self._cluster)
                seq = await self._evalsha(keys, args)
        except _CONNECTION_ERRORS as exc:
            self._offset_ms = None  # maybe another server now: learn its clock again
            raise BrokerUnavailable(f"publishing to {queue!r} failed: {exc!r}") from exc
        except coredis.exceptions.ResponseError as exc:
            raise BrokerError(f"Redis refused the publish: {exc}") from exc
        if seq is None:  # the script ran after its deadline, and did nothing
            raise BrokerUnavailable(f"publishing to {queue!r} took too long; not published")
        return int(seq)

    async def _evalsha(self, keys: list[str], args: list[str | int | bytes]) -> Any:
        client = self._client
        try:
            return await client.evalsha(self._script.sha, keys=keys, args=args)
        except coredis.exceptions.NoScriptError:
            return await client.eval(self._script.script, keys=keys, args=args)

    async def _deadline(self) -> int:
        """Redis's time (ms) after which this publish must not run (see the broker's
        ``_deadline``): the offset of Redis's clock from ours, learned once (``TIME``)."""
        if self._offset_ms is None:
            sent = anyio.current_time()
            # TIME through a script that names a key: a cluster client routes it (a bare
            # TIME has no node on a cluster); the registry's slot, as the nodes use.
            seconds, micros = await self._client.eval(
                _TIME, keys=[f"{self.prefix}:{{nodes}}"], args=[]
            )
            received = anyio.current_time()
            redis_ms = int(seconds) * 1000 + int(micros) / 1000
            self._offset_ms = redis_ms - (sent + received) * 500
            self._offset_error_ms = (received - sent) * 1000 + 2
        local = (anyio.current_time() + self.operation_timeout) * 1000
        return max(1, math.floor(local + self._offset_ms - self._offset_error_ms))
