"""The Redis broker: the nodes of an application share one Redis (through coredis).

Theory of operation
-------------------
Each node holds one :class:`RedisBroker`. While connected it has two connections to Redis
(coredis's pool): one for commands, multiplexed among every caller, and one in pub/sub
mode that receives what is published to this node. Every operation that changes shared
state is one Lua script, so it is atomic and costs one round trip.

Keys on one server or behind Sentinel (``P`` is the ``prefix``, ``trio_ws`` by default;
a Redis Cluster has its own layout, below):

``P:epoch``
    The history epoch, created with ``SET NX`` by the first node that finds it missing.
    A Redis without persistence that restarts has lost it, together with every seq and
    history: the next node to connect creates a new one, and a ``since`` from the old
    epoch replays as 0 (a ``gap`` for everything not kept) instead of wrong numbers.
``P:q:<queue>:seq``
    The queue's last seq (``INCR``). Never expires: numbering goes on.
``P:q:<queue>:log``
    The kept history: a list of the last ``history`` entries, oldest first, capped with
    ``LTRIM`` on every publish. With a ``ttl`` the whole list expires ``ttl`` after the
    last publish (every entry is expired by then); replay drops expired entries by their
    time. An entry is ``b"<seq> <kind> <time> <retracted> <keylen>\\n" + key + body``,
    ``keylen`` -1 for no key, ``time`` Redis's clock (``TIME``), so every node agrees.
``P:name:<name key>``
    A claimed name (:func:`~trio_ws._names.name_key`): ``b"<owner>\\n<name as claimed>"``,
    set with an expiry of ``lease_seconds`` that the node's heartbeat renews. A claim or a
    route that finds the holder's node gone (its node key expired) treats the name as
    free, so the names of a dead node come free within one lease.
``P:node:<node id>``
    The node's liveness and counts: ``b"<connections> <clients>"``, expiring after
    ``lease_seconds``, renewed by the heartbeat (every third of a lease). ``P:nodes`` is
    the set of node ids, pruned of dead ones when read.
``P:presence:<queue>``
    A hash ``b"<node id>\\n<name>" -> local subscribers``; fields of dead nodes are
    ignored and removed when read.

Channels: ``P:q:<queue>`` carries a queue's messages (``b"m" + entry``) and retractions
(``b"r" + key``); ``P:to:<node id>`` carries what is for one node: routed messages,
their answers, and takeover notices.

Publishing is one script: ``INCRBY`` the seq by the number of messages (one, or a
:meth:`RedisBroker.publish_many` batch: consecutive seqs), append each entry and trim,
``PUBLISH`` each on the queue's channel; one round trip. A node ``SUBSCRIBE``\\s only to
the queues it listens to, and :meth:`RedisBroker.listen` returns once Redis confirmed the
subscription, so a replay read after it misses nothing. Each node receives each message
once and builds the :class:`~trio_ws._queue_model.Message` (the frame) once, whatever the
number of its local subscribers. Redis delivers a channel's messages in publish order, and
a script publishes in seq order, so a node sees one order.

Routing is a script (look up the name, check the holder's node is alive, ``PUBLISH`` on
its channel with a request id); the holder's node calls ``on_routed`` and publishes the
answer back, so :meth:`RedisBroker.route` returns what the holder said (one round trip to
Redis plus one hop each way between the nodes). Login is one round trip (the claim
script); a takeover publishes the notice for the old holder's node in the same script.

What needs no answer (:meth:`~RedisBroker.unlisten`, :meth:`~RedisBroker.release`,
:meth:`~RedisBroker.note_presence`, answers to routed messages) goes into an outbox that a
background task sends in order, many operations per script call. Presence is sent as
absolute counts, releases are compare-and-delete, so the outbox survives a reconnect.

A write that times out was not carried out: the scripts that change state for a caller
(publish, retract, claim, route) take a deadline in Redis's clock (learned from the join
and every heartbeat) and do nothing once it has passed, so a Redis that was stopped and
wakes up refuses the writes whose callers were told :class:`BrokerUnavailable`.

Connection states: CONNECTING until the first connection is made, UP, then DOWN when
it is lost (a pub/sub connection that ends, or any operation failing or taking longer than
``operation_timeout``: a stopped Redis blocks nobody for longer). While not UP every
operation raises :class:`~trio_ws.brokers.BrokerUnavailable` at once. The node reconnects
with exponential backoff and jitter, then re-subscribes its channels, re-claims its names
(a name someone else took meanwhile is reported through ``on_displaced``), re-sends its
presence, and finally hands each listened queue what was published while it was away and
is still kept (in seq order, before the live messages that arrived meanwhile). If the
epoch changed (Redis lost its data), numbering starts again at 1 in the new epoch.

Round trips: a publish, a replay, a retract, a claim (a login), ``members`` and ``nodes``
take one each; a route one plus the holder's answer (one more hop through Redis); the
first local subscriber of a queue adds two for :meth:`~RedisBroker.listen` (``SUBSCRIBE``,
then the seq from which the subscription delivers); releases, presence changes and route
answers go in batches of up to 500 per round trip; the heartbeat takes one per 500 names
every third of a lease. Replays without ``since`` (a subscriber that wants only the live
stream) that arrive while one is in the air share the next read, so a thousand
subscribers connecting at once cost two round trips, not a thousand.

The hot path is one call per message on each side: a publish goes straight to a
connection of the session's own (the client's command layer cost as much again, measured),
and a pub/sub message is handled in coredis's reader as it is parsed (a subscription
handler), with no task of ours woken per message.

Where the Redis is
------------------
The URL says: ``redis://`` (``rediss://``) one server, as above;
``redis+sentinel://host:port[,host:port...]/service[/db]`` the primary that the
Sentinels name for ``service``, asked again at every reconnect (so a failover is an
outage followed by a reconnect to the new primary), with the same keys as one server;
``redis+cluster://host:port[,host:port...]`` a Redis Cluster, any of its nodes as seeds.

On a Redis Cluster
------------------
A script may only touch keys of one slot, and ``PUBLISH`` goes to every node of a
cluster; so on a cluster the keys carry hash tags (``{...}``: only the part inside decides
the slot) and live delivery is sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``: a shard
channel lives in its slot, like a key). The client keeps a command connection per shard
and the pub/sub one connection per primary (coredis's sharded pub/sub). Keys and
channels, by slot:

``{q:<queue>}`` -- everything of one queue
    ``P:{q:<queue>}:seq``, ``P:{q:<queue>}:log`` (as above), ``P:{q:<queue>}:epoch``,
    ``P:{q:<queue>}:presence``, and the shard channel ``P:{q:<queue>}``. A publish, a
    replay, a retract, a listen and presence updates touch only the shard that serves the
    queue's slot, and a node's subscription to the queue is on that shard alone.
``{name:<name key>}`` -- one name
    ``P:{name:<name key>}``, the value and lease as above.
``{to:<node id>}`` -- one node's shard channel
    ``P:{to:<node id>}``: routed messages, their answers, takeover notices. Sent with a
    small script that declares the channel as its key (so the client routes it to the
    channel's shard) and checks the caller's deadline.
``{nodes}`` -- the node registry
    ``P:{nodes}``: a hash ``node id -> "<connections> <clients> <expiry ms>"``, the expiry
    in Redis's clock; the heartbeat rewrites the node's field, ``nodes`` reads it and
    forgets expired fields. A node is alive while its field has not expired.

The epoch is per queue on a cluster: the queue's epoch key sits in the queue's slot and
is created by the first publish or replay that finds it missing. A global epoch key would
be on one shard and could not tell that another shard restarted empty (its queues'
numbering would start again under an unchanged epoch: wrong numbers for every ``since``).
So a shard that loses its data gives its own queues new epochs, and only them; a node
that catches up after reconnecting compares each listened queue's epoch with the one it
counted in and takes the whole kept history of a queue whose epoch changed.
:attr:`RedisBroker.epoch` is then the epoch last read, of whichever queue.

What a single-server script looked up in another slot becomes a second call:

* a claim of a name held by another connection reads the holder's liveness from the
  registry, then claims again stating what it saw (the script refuses to act if the holder
  changed meanwhile and the broker looks again, at most 5 times); a takeover then sends
  the notice on the old holder's node channel. An uncontested claim is still one round
  trip, a contested one three or four.
* a route reads the holder from the name's slot, then sends on the holder's node channel;
  ``SPUBLISH`` counting no receiver means the node is gone (not subscribed), so the
  route fails as it does when the node's key has expired on one server.
* ``members`` reads the presence hash, then the liveness of the nodes in it (two round
  trips). Fields of dead nodes are skipped but not deleted, so a node that died without
  leaving leaves its fields behind: deleting them in a second call could delete the
  fields of a node (same id) that rejoined between the two.
* the outbox and the heartbeat send one script per key (each key its own slot),
  concurrently; the operations on one key stay in order. Re-claiming the names after a
  reconnect is one call per name, concurrently.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import random
import re
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import unquote

import anyio
import attrs
import coredis
import coredis.exceptions
import trio
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from .._names import name_key
from .._queue_model import Gap, Message, QueueOptions
from . import _redis_scripts as scripts
from ._base import (
    Broker,
    BrokerError,
    BrokerState,
    BrokerStatistics,
    BrokerUnavailable,
    Claim,
    NodeInfo,
    Payload,
    PublishItem,
    Replay,
    RoutedClose,
)

__all__ = ["RedisBroker"]

log = logging.getLogger("trio_ws.broker")

T = TypeVar("T")

_Client: TypeAlias = "coredis.Redis[bytes] | coredis.RedisCluster[bytes]"

# At most this many operations go into one outbox or heartbeat script call, so a script
# never holds Redis for long (a few milliseconds at worst).
_BATCH = 500

# How often what coredis queues for get_message() is thrown away (see _drain_pubsub).
_DRAIN_SECONDS = 1.0

# Latencies averaged in statistics(): the latest operations only.
_LATENCY_WINDOW = 100

_NODE_ID = re.compile(r"[^\s/]{1,64}")

_CONNECTION_ERRORS = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    trio.TooSlowError,
    OSError,
    RuntimeError,  # coredis: a pool that is shutting down
    coredis.exceptions.ClusterDownError,  # a shard is down (or slots are moving)
    coredis.exceptions.ClusterError,
    coredis.exceptions.SentinelError,  # no primary known
)

_URL_FORMS = (
    "redis://[[user]:password@]host[:port][/db]",
    "rediss://... (TLS)",
    "redis+cluster://[[user]:password@]host:port[,host:port...] (seed nodes of a Redis Cluster)",
    "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]",
)


def _parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """The mode a broker URL names (``single``, ``cluster``, ``sentinel``) and its parts."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a Redis URL: {url!r}")
    if scheme in ("redis", "rediss"):
        return "single", {}
    base, _, mode = scheme.partition("+")
    if base not in ("redis", "rediss") or mode not in ("cluster", "sentinel"):
        raise ValueError(f"unknown Redis URL scheme {scheme!r}: expected one of {_URL_FORMS}")
    parts: dict[str, Any] = {"ssl": base == "rediss", "username": None, "password": None}
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        parts["username"] = unquote(user) or None
        parts["password"] = unquote(password) if colon else None
    hosts, _, path = rest.partition("/")
    nodes = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit():
            raise ValueError(f"{url!r}: expected host:port, not {host!r}")
        nodes.append((name.strip("[]"), int(port)))
    parts["nodes"] = nodes
    segments = [p for p in path.split("/") if p]
    if mode == "cluster":
        if segments not in ([], ["0"]):
            raise ValueError(f"{url!r}: a Redis Cluster has one database (0)")
        return "cluster", parts
    if not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError(f"{url!r}: expected .../service_name[/db] after the sentinels")
    parts["service"] = unquote(segments[0])
    parts["db"] = int(segments[1]) if len(segments) == 2 else 0
    return "sentinel", parts


def queue_channel(prefix: str, queue: str, *, cluster: bool) -> str:
    """The channel that carries ``queue``'s messages (a shard channel on a cluster)."""
    return f"{prefix}:{{q:{queue}}}" if cluster else f"{prefix}:q:{queue}"


def queue_keys(prefix: str, queue: str, *, cluster: bool) -> list[str]:
    """``queue``'s seq, log and epoch keys: the KEYS of the publish and replay scripts."""
    if cluster:
        tagged = f"{prefix}:{{q:{queue}}}"
        return [f"{tagged}:seq", f"{tagged}:log", f"{tagged}:epoch"]
    q = f"{prefix}:q:{queue}"
    return [f"{q}:seq", f"{q}:log", f"{prefix}:epoch"]


def publish_script(*, cluster: bool) -> str:
    """The source of the publish script (sharded pub/sub on a cluster)."""
    return scripts.sharded(scripts.PUBLISH) if cluster else scripts.PUBLISH


def publish_args(
    channel: str, messages: Sequence[PublishItem], *, options: QueueOptions, deadline: int
) -> list[str | int | bytes]:
    """The ARGV of the publish script for ``messages`` (``(body, kind, key)``), for a node
    or anyone else publishing to a queue."""
    args: list[str | int | bytes] = [
        channel,
        options.history,
        math.ceil(options.ttl * 1000) if options.ttl is not None else 0,
        secrets.token_hex(6),  # the epoch, if the store has none yet
        deadline,
    ]
    for body, kind, key in messages:
        args += (kind, key or "", "1" if key is not None else "0", body)
    return args


async def _unsubscribe(pubsub: Any, channels: list[str], _client: object) -> None:
    await pubsub.unsubscribe(*channels)


def _session_ending(exc: BaseException) -> bool:
    """Whether ``exc`` only ends a session (errors, and the cancellations they caused)
    rather than the process (KeyboardInterrupt, SystemExit)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split((Exception, trio.Cancelled))[1] is None
    return isinstance(exc, Exception | trio.Cancelled)


@attrs.define
class _HeadRead:
    """One read of a queue's head shared by the callers that joined it (see ``_head``)."""

    done: trio.Event = attrs.Factory(trio.Event)
    result: Replay | None = None
    error: Exception | None = None


class _Lost(Exception):
    """The connection of the current session was found broken."""


class RedisBroker(Broker):
    """A node on a shared Redis (see the module docstring).

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS), as
            coredis reads it, for one Redis server;
            ``redis+cluster://[[user]:password@]host:port[,host:port...]`` for a Redis
            Cluster (any of its nodes as seeds; ``rediss+cluster://`` for TLS);
            ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
            for the primary that Sentinels (the hosts) name for ``service`` (the user and
            password are the primary's; the Sentinels are asked without them).
        node_id: this node's id, unique in the cluster (no ``/`` or whitespace); a random
            one by default.
        lease_seconds: how long this node's names and liveness outlive its last heartbeat
            (the heartbeat runs every third of it): a node that dies frees its names
            within this time.
        operation_timeout: seconds any Redis call may take before it fails with
            :class:`~trio_ws.brokers.BrokerUnavailable` (and the connection counts as
            lost).
        max_reconnect_seconds: the longest wait between two reconnection attempts (the
            wait doubles from 50 ms, with jitter).
        prefix: the prefix of every key and channel, so several applications can share one
            Redis.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        lease_seconds: float = 10.0,
        operation_timeout: float = 2.0,
        max_reconnect_seconds: float = 2.0,
        prefix: str = "trio_ws",
    ) -> None:
        super().__init__(node_id=node_id or f"node-{secrets.token_hex(4)}")
        if not _NODE_ID.fullmatch(self.node_id):
            raise ValueError(f"node_id must be 1-64 characters without '/' or spaces: {node_id!r}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        if not operation_timeout > 0:
            raise ValueError(f"operation_timeout must be positive, not {operation_timeout!r}")
        if not max_reconnect_seconds > 0:
            raise ValueError(
                f"max_reconnect_seconds must be positive, not {max_reconnect_seconds!r}"
            )
        self.mode, self._url_parts = _parse_url(url)
        """``single`` (one server), ``cluster`` (Redis Cluster) or ``sentinel``."""
        self._cluster = self.mode == "cluster"
        if self._cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"prefix must not contain '{{' or '}}' on a cluster: {prefix!r}")
        self.url = url
        self.lease_seconds = lease_seconds
        self.operation_timeout = operation_timeout
        self.max_reconnect_seconds = max_reconnect_seconds
        self.prefix = prefix
        self._state = BrokerState.CONNECTING
        self._client: _Client | None = None
        self._pubsub: Any = None
        self._publisher: Any = None
        """One server: the connection publishes are sent on, held for the session."""
        self._session_scope: trio.CancelScope | None = None
        self._up = trio.Event()
        self._reached_up = False
        self.epoch: str | None = None
        """The epoch of the shared history as last read (``None`` before connecting)."""
        self._reset: set[str] = set()  # listened queues whose history started again
        # What this node holds, so a reconnect can put it back.
        self._listening: dict[str, trio.Event] = {}
        """Queues listened to -> set once the subscription is confirmed."""
        self._last: dict[str, int] = {}
        """Per listened queue: every seq up to this one was handed to on_message (or was
        published before the node listened)."""
        self._progress: dict[str, trio.Event] = {}
        """Per queue: set when ``_last`` moves (for :meth:`replay` waiting on it)."""
        self._epochs: dict[str, str] = {}
        """Per listened queue: the epoch its ``_last`` counts in."""
        self._held: dict[str, list[Message]] | None = None
        """While catching up after a reconnect: live messages waiting per queue."""
        self._names: dict[str, tuple[str, str]] = {}
        """name key -> (name as claimed, owner), for the names this node holds."""
        self._released: dict[str, str] = {}
        """name key -> owner, released but not sent yet."""
        self._presence: dict[tuple[str, str], int] = {}
        self._presence_dirty: set[tuple[str, str]] = set()
        """Presence entries waiting in the outbox (sent as absolute counts)."""
        self._outbox: deque[tuple[str, str, str]] = deque()
        self._outbox_ready = trio.Event()
        self._heads: dict[str, _HeadRead] = {}
        """Per queue: the head read that callers may still join (see _head)."""
        self._head_locks: dict[str, trio.Lock] = {}
        self._routes: dict[int, list[Any]] = {}
        self._route_ids = itertools.count(1)
        # Counters.
        self._round_trips = 0
        self._offset_ms: float | None = None
        self._offset_error_ms = 0.0
        self._errors = 0
        self._outages = 0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        # A queue's channel: P:q:<queue>, or P:{q:<queue>} on a cluster.
        queue_prefix = f"{prefix}:{{q:" if self._cluster else f"{prefix}:q:"
        self._queue_head = queue_prefix.encode()
        self._queue_start = len(queue_prefix)
        self._queue_end = -1 if self._cluster else None
        self._node_channel_bytes = self._node_channel(self.node_id).encode()
        self._scripts = {
            name: Script[bytes](script=source)
            for name, source in (
                ("publish", publish_script(cluster=self._cluster)),
                ("replay", scripts.REPLAY),
                ("retract", scripts.sharded(scripts.RETRACT) if self._cluster else scripts.RETRACT),
                ("claim", scripts.CLAIM),
                ("route", scripts.ROUTE),
                ("batch", scripts.BATCH_OPS),
                ("heartbeat", scripts.HEARTBEAT),
                ("join", scripts.JOIN),
                ("reclaim", scripts.RECLAIM),
                ("leave", scripts.LEAVE),
                ("members", scripts.MEMBERS),
                ("nodes", scripts.NODES),
                ("c_claim", scripts.C_CLAIM),
                ("c_reclaim", scripts.C_RECLAIM),
                ("c_route", scripts.C_ROUTE),
                ("c_send", scripts.C_SEND),
                ("c_op", scripts.C_OP),
                ("c_renew", scripts.C_RENEW),
                ("c_heartbeat", scripts.C_HEARTBEAT),
                ("c_leave", scripts.C_LEAVE),
                ("c_nodes", scripts.C_NODES),
                ("c_alive", scripts.C_ALIVE),
                ("c_members", scripts.C_MEMBERS),
            )
        }

    def __repr__(self) -> str:
        return f"<RedisBroker {self.node_id} {self._state.value}>"

    # ------------------------------------------------------------------ keys

    # On a cluster every key of a queue carries the hash tag {q:<queue>}, a name's key
    # {name:<key>}, a node's channel {to:<node id>}; the node registry is {nodes}.

    def _queue_channel(self, queue: str) -> str:
        return queue_channel(self.prefix, queue, cluster=self._cluster)

    def _queue_keys(self, queue: str) -> list[str]:
        """The queue's seq, log and epoch keys."""
        return queue_keys(self.prefix, queue, cluster=self._cluster)

    def _presence_key(self, queue: str) -> str:
        if self._cluster:
            return f"{self.prefix}:{{q:{queue}}}:presence"
        return f"{self.prefix}:presence:{queue}"

    def _name_key(self, name: str) -> str:
        return self._key_of_name(name_key(name))

    def _key_of_name(self, key: str) -> str:
        if self._cluster:
            return f"{self.prefix}:{{name:{key}}}"
        return f"{self.prefix}:name:{key}"

    def _node_channel(self, node_id: str) -> str:
        if self._cluster:
            return f"{self.prefix}:{{to:{node_id}}}"
        return f"{self.prefix}:to:{node_id}"

    def _registry(self) -> str:
        return f"{self.prefix}:{{nodes}}"

    # ------------------------------------------------------------------ lifetime

    @property
    def state(self) -> BrokerState:
        return self._state

    async def wait_up(self) -> None:
        """Wait until the broker is UP (returns at once if it is)."""
        while self._state is not BrokerState.UP:
            await self._up.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and stay connected (reconnecting with backoff) until cancelled; then
        leave the cluster: release this node's names, presence and liveness (best effort,
        within ``operation_timeout``).

        ``task_status.started()`` is called after the first connection attempt, whether
        it succeeded (state UP) or not (state CONNECTING, retrying in the background).
        """
        first = trio.Event()
        # The sessions are shielded so that, when run() is cancelled, the connection
        # still works for the leave; then they are cancelled.
        sessions = trio.CancelScope(shield=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sessions, sessions, first)
            try:
                await first.wait()
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(self.operation_timeout):
                        await self._leave()
                    sessions.cancel()

    async def _sessions(self, scope: trio.CancelScope, first: trio.Event) -> None:
        with scope:
            attempt = 0
            while True:
                self._reached_up = False
                try:
                    await self._session(first)
                except BaseException as exc:  # one session ends: reconnect
                    if scope.cancel_called:
                        return  # leaving: whatever the client raised while closing
                    if not _session_ending(exc):
                        raise
                    if self._state is BrokerState.UP:
                        self._outages += 1
                        self._state = BrokerState.DOWN
                        self._up = trio.Event()
                        log.warning("%s: lost the connection to Redis: %r", self.node_id, exc)
                    elif not self._reached_up:
                        log.info("%s: cannot connect to Redis: %r", self.node_id, exc)
                first.set()
                if self._reached_up:
                    attempt = 0
                self._client = self._pubsub = self._publisher = None
                self._session_scope = None
                self._wake_waiters()
                delay = min(self.max_reconnect_seconds, 0.05 * 2**attempt)
                attempt += 1
                await trio.sleep(delay * random.uniform(0.5, 1.0))

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[tuple[_Client, Any]]:
        """A connected client for the URL's mode, and its pub/sub (sharded on a cluster)."""
        timeouts: dict[str, Any] = {
            "retry_policy": NoRetryPolicy(),
            "stream_timeout": self.operation_timeout,
            "connect_timeout": self.operation_timeout,
            "pool_timeout": self.operation_timeout,
        }
        pubsub_options: dict[str, Any] = {
            "ignore_subscribe_messages": True,
            "retry_policy": NoRetryPolicy(),
            "subscription_timeout": self.operation_timeout,
        }
        parts = self._url_parts
        credentials: dict[str, Any] = {
            "username": parts.get("username"),
            "password": parts.get("password"),
        }
        if self.mode == "single":
            client: Any = coredis.Redis.from_url(
                self.url,
                client_name=f"{self.prefix}:{self.node_id}",  # CLIENT LIST shows the node
                **timeouts,
            )
            async with client:
                yield client, client.pubsub(**pubsub_options)
        elif self.mode == "cluster":
            seeds: list[Any] = [
                coredis.connection.TCPLocation(host, port) for host, port in parts["nodes"]
            ]
            client = coredis.RedisCluster(
                startup_nodes=seeds,
                ssl=parts["ssl"],
                **credentials,
                **timeouts,
            )
            async with client:
                yield (
                    client,
                    client.sharded_pubsub(
                        **pubsub_options, max_idle_seconds=max(1.0, self.lease_seconds / 3)
                    ),
                )
        else:
            # TLS (rediss+sentinel://) to the Sentinels and the primary alike.
            tls: dict[str, Any] = {}
            if parts["ssl"]:
                tls["ssl_context"] = ssl.create_default_context()
            sentinel: Any = coredis.Sentinel(
                [coredis.connection.TCPLocation(host, port) for host, port in parts["nodes"]],
                sentinel_kwargs={
                    "connect_timeout": self.operation_timeout,
                    "stream_timeout": self.operation_timeout,
                    **tls,
                },
                retry_policy=NoRetryPolicy(),
                stream_timeout=self.operation_timeout,
                connect_timeout=self.operation_timeout,
            )
            async with sentinel:
                client = sentinel.primary_for(
                    parts["service"],
                    db=parts["db"],
                    **tls,
                    client_name=f"{self.prefix}:{self.node_id}",
                    **credentials,
                )
                async with client:
                    yield client, client.pubsub(**pubsub_options)

    async def _session(self, first: trio.Event) -> None:
        with trio.CancelScope() as self._session_scope:
            async with self._connect() as (client, pubsub):
                async with pubsub, trio.open_nursery() as nursery:
                    with trio.fail_after(2 * self.operation_timeout):
                        await self._setup(client, pubsub, nursery)
                        if not self._cluster:
                            # Publishes go straight to a connection of their own; see
                            # _publish_on.
                            self._publisher = await client.connection_pool.get_connection()
                    nursery.start_soon(self._heartbeat, client)
                    nursery.start_soon(self._send_outbox, client, pubsub)
                    self._client, self._pubsub = client, pubsub
                    self._reached_up = True
                    self._state = BrokerState.UP
                    self._up.set()
                    first.set()
                    if self._cluster:  # the epochs are per queue
                        log.info("%s: connected to the Redis Cluster", self.node_id)
                    else:
                        log.info("%s: connected to Redis (epoch %s)", self.node_id, self.epoch)
                    await self._catch_up(client)
        raise _Lost("the session was ended")

    async def _setup(self, client: _Client, pubsub: Any, nursery: trio.Nursery) -> None:
        sent = trio.current_time()
        if self._cluster:  # the registry; the epoch is per queue (read with its replay)
            report = [self.node_id, self._report_value(), self._lease_ms()]
            clock = await self._op("c_heartbeat", [self._registry()], report)(client)
            self._clock(sent, *cast(list[Any], clock))
        else:
            joined = await self._op(
                "join",
                (),
                [
                    self.prefix,
                    self.node_id,
                    self._report_value(),
                    self._lease_ms(),
                    secrets.token_hex(6),
                ],
            )(client)
            raw_epoch, seconds, micros = cast(list[Any], joined)
            self._clock(sent, seconds, micros)
            epoch = cast(bytes, raw_epoch).decode()
            if self.epoch is not None and epoch != self.epoch:
                log.warning("%s: Redis lost its data; new epoch %s", self.node_id, epoch)
                self._last.clear()  # numbering starts again
                self._reset.update(self._listening)  # their subscribers are told (on_reset)
            self.epoch = epoch
        nursery.start_soon(self._drain_pubsub, pubsub)
        channels = [self._node_channel(self.node_id)]
        channels += [self._queue_channel(q) for q in self._listening]
        self._held = {q: [] for q in self._listening}
        await pubsub.subscribe(**dict.fromkeys(channels, self._on_push))
        for event in self._listening.values():
            event.set()
        items = list(self._names.items())
        for start in range(0, len(items), _BATCH):
            chunk = items[start : start + _BATCH]
            if self._cluster:  # one name per slot: one call each, concurrently
                kept = await self._each(
                    [functools.partial(self._reclaim, k, n, o) for k, (n, o) in chunk], client
                )
                lost = [i for i, held in enumerate(kept) if not held]
            else:
                args: list[str | int] = [self.prefix, self._lease_ms()]
                for key, (name, owner) in chunk:
                    args += [self._key_of_name(key), f"{owner}\n{name}"]
                lost = [int(i) - 1 for i in await self._op("reclaim", (), args)(client)]
            for index in lost:
                key, (name, owner) = chunk[index]
                self._names.pop(key, None)
                self._callback(self.on_displaced, name, owner)
        for queue, name in self._presence:
            self._post_presence(queue, name)
        self._outbox_ready.set()

    async def _reclaim(self, key: str, name: str, owner: str, client: _Client) -> bool:
        """Hold a name again after a reconnect (cluster): whether it is still ours."""
        expected, alive = "", "1"
        for _attempt in range(5):
            args = [f"{owner}\n{name}", self._lease_ms(), expected, alive]
            result = await self._op("c_reclaim", [self._key_of_name(key)], args)(client)
            if isinstance(result, int):
                return bool(result)
            expected = cast(bytes, result).decode()
            alive = "1" if await self._holder_alive(expected, client) else "0"
        return False

    async def _holder_alive(self, owner: str, client: _Client) -> bool:
        node = owner.rpartition("/")[0]
        if node == self.node_id:
            return True
        result = await self._op("c_alive", [self._registry()], [node])(client)
        return bool(int(cast(list[Any], result)[0]))

    async def _each(
        self, calls: Sequence[Callable[[_Client], Awaitable[T]]], client: _Client
    ) -> list[T]:
        """Run ``calls`` concurrently (each to its own slot's shard); their results in order.

        The first failure is raised as itself (not in a group), as :meth:`_call` expects.
        """
        results: list[Any] = [None] * len(calls)

        async def one(index: int, call: Callable[[_Client], Awaitable[T]]) -> None:
            results[index] = await call(client)

        try:
            async with trio.open_nursery() as nursery:
                for index, call in enumerate(calls):
                    nursery.start_soon(one, index, call)
        except BaseExceptionGroup as group:
            leaves: list[BaseException] = []

            def flatten(exc: BaseException) -> None:
                if isinstance(exc, BaseExceptionGroup):
                    for inner in exc.exceptions:
                        flatten(inner)
                else:
                    leaves.append(exc)

            flatten(group)
            errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
            if errors:
                raise errors[0] from None
            raise
        return results

    async def _catch_up(self, client: _Client) -> None:
        """Hand each listened queue what was published while this node was away and is
        still kept, then the live messages that arrived meanwhile, in seq order.

        After an epoch change (``_last`` cleared) that is the whole new history.
        """
        held = self._held or {}
        try:
            for queue in list(held):
                if queue in self._listening:
                    told = queue in self._reset  # the whole store's epoch changed
                    if told:
                        self._reset.discard(queue)
                        self._callback(self.on_reset, queue, self.epoch)
                    since = self._last.get(queue, 0)
                    epoch = self._epochs.get(queue)
                    replay = await self._call(
                        functools.partial(
                            self._replay, queue=queue, since=since, epoch=epoch, ttl=None
                        ),
                        client,
                    )
                    if replay.epoch != epoch:  # the queue's history was lost: all is new
                        self._last.pop(queue, None)
                        self._epochs[queue] = replay.epoch
                        if epoch is not None and not told:  # (one shard of a cluster)
                            self._callback(self.on_reset, queue, replay.epoch)
                    if replay.gap is not None:  # published while away, no longer kept
                        self._callback(self.on_gap, queue, replay.gap.first, replay.gap.last)
                    for message in replay.messages:
                        self._deliver(queue, message)
                    self._advance(queue, replay.seq)
                for message in held.pop(queue):
                    self._deliver(queue, message)
        finally:
            self._held = None  # on failure the next session fetches the rest again
        await trio.sleep_forever()

    async def _leave(self) -> None:
        client = self._client
        if client is None or self._state is not BrokerState.UP:
            return
        self._state = BrokerState.DOWN
        try:
            ops: list[tuple[str, str, str]] = [
                ("r", key, owner) for key, (_name, owner) in self._names.items()
            ]
            ops += [("p", queue, name) for queue, name in self._presence]
            self._presence.clear()
            self._names.clear()
            for start in range(0, len(ops), _BATCH):
                await self._run_ops(ops[start : start + _BATCH], client)
            if self._cluster:
                await self._op("c_leave", [self._registry()], [self.node_id])(client)
            else:
                await self._op("leave", (), [self.prefix, self.node_id])(client)
        except Exception as exc:
            log.info("%s: could not leave the cluster cleanly: %r", self.node_id, exc)

    async def _heartbeat(self, client: _Client) -> None:
        interval = self.lease_seconds / 3
        while True:
            await trio.sleep(interval)
            if self._cluster:
                await self._heartbeat_cluster(client)
                continue
            keys = [f"{self.prefix}:name:{key}" for key in self._names]
            for start in range(0, max(len(keys), 1), _BATCH):
                args = [self.prefix, self.node_id, self._report_value(), self._lease_ms()]
                sent = trio.current_time()
                clock = await self._call(
                    self._op("heartbeat", (), args + keys[start : start + _BATCH]), client
                )
                self._clock(sent, *cast(list[Any], clock))

    async def _heartbeat_cluster(self, client: _Client) -> None:
        """The node's entry in the registry, then its names (concurrently, per slot)."""
        args = [self.node_id, self._report_value(), self._lease_ms()]
        sent = trio.current_time()
        clock = await self._call(self._op("c_heartbeat", [self._registry()], args), client)
        self._clock(sent, *cast(list[Any], clock))
        keys = [self._key_of_name(key) for key in self._names]
        renew = [self.node_id, self._lease_ms()]
        for start in range(0, len(keys), _BATCH):
            calls = [self._op("c_renew", [key], renew) for key in keys[start : start + _BATCH]]
            await self._call(functools.partial(self._each, calls), client)

    def _clock(self, sent: float, seconds: Any, micros: Any) -> None:
        """Learn how Redis's clock (``TIME``) relates to ours, from a call sent at ``sent``."""
        now = trio.current_time()
        redis_ms = int(seconds) * 1000 + int(micros) / 1000
        self._offset_ms = redis_ms - (sent + now) * 500  # against the middle of the call
        self._offset_error_ms = (now - sent) * 1000 + 2

    def _deadline(self) -> int:
        """Redis's time (ms) after which a call made now must not be carried out, because its
        caller gave up (``operation_timeout``) and was told it was not: a stopped Redis
        that wakes up refuses the writes it was sent meanwhile. 0: no deadline known."""
        if self._offset_ms is None:
            return 0
        local = (trio.current_time() + self.operation_timeout) * 1000
        return max(1, int(local + self._offset_ms - self._offset_error_ms))

    def _report_value(self) -> str:
        try:
            connections, clients = self.report()
        except Exception:
            log.exception("%s: report() failed", self.node_id)
            connections = clients = 0
        return f"{connections} {clients}"

    def _lease_ms(self) -> int:
        return max(1, math.ceil(self.lease_seconds * 1000))

    def _lost(self, exc: BaseException) -> None:
        """An operation found the connection broken: end the session (state DOWN now)."""
        if self._state is BrokerState.UP:
            self._state = BrokerState.DOWN
            self._up = trio.Event()
            self._outages += 1
            log.warning("%s: Redis is unavailable: %r", self.node_id, exc)
        if self._session_scope is not None:
            self._session_scope.cancel()

    def _wake_waiters(self) -> None:
        for event in self._progress.values():
            event.set()
        self._progress.clear()
        self._fail_routes()

    def _fail_routes(self) -> None:
        for waiter in self._routes.values():
            waiter[0].set()
        self._routes.clear()

    # ------------------------------------------------------------------ calls

    async def _call(
        self,
        operation: Callable[[_Client], Awaitable[T]],
        client: _Client | None = None,
    ) -> T:
        """Run one Redis operation within ``operation_timeout``, counting it.

        Raises:
            BrokerUnavailable: not connected, or the operation failed or took too long
                (the session then ends and the node reconnects).
            BrokerError: Redis refused the operation.
        """
        if client is None:
            client = self._client
            if client is None or self._state is not BrokerState.UP:
                self._errors += 1
                raise BrokerUnavailable
        session = self._session_scope
        start = trio.current_time()
        try:
            with trio.fail_after(self.operation_timeout):
                result = await operation(client)
        except _CONNECTION_ERRORS as exc:  # before ResponseError: a cluster that is down
            self._errors += 1
            if session is not None and session is self._session_scope:
                self._lost(exc)
            raise BrokerUnavailable from exc
        except coredis.exceptions.ResponseError as exc:
            self._errors += 1
            raise BrokerError(f"Redis refused an operation: {exc}") from exc
        self._round_trips += 1
        self._latencies.append(trio.current_time() - start)
        return result

    def _in_time(self, result: Any) -> Any:
        """The result of a script with a deadline; ``None`` if Redis ran it too late."""
        if result is None:  # only when a caller's call took longer than its timeout
            self._errors += 1
            raise BrokerUnavailable
        return result

    def statistics(self) -> BrokerStatistics:
        latencies = self._latencies
        return BrokerStatistics(
            kind=self.kind,
            state=self._state,
            node_id=self.node_id,
            round_trips=self._round_trips,
            errors=self._errors,
            outages=self._outages,
            latency_seconds=sum(latencies) / len(latencies) if latencies else 0.0,
        )

    def _op(
        self, name: str, keys: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> Callable[[_Client], Awaitable[Any]]:
        """A call of one of the scripts, for :meth:`_call` (or to await with a client)."""
        script = self._scripts[name]

        async def call(client: _Client) -> Any:
            # EVALSHA, with EVAL when Redis does not know the script (a restarted Redis).
            # Plain EVALSHA rather than coredis's Script wrapper: a third of the client's
            # work per call, measured.
            try:
                return await client.evalsha(script.sha, keys=keys, args=args)
            except coredis.exceptions.NoScriptError:
                # EVAL runs it on the node of its keys and leaves it in that node's cache
                # (SCRIPT LOAD has no key, so a cluster client would not know the node).
                return await client.eval(script.script, keys=keys, args=args)

        return call

    def _callback(self, callback: Callable[..., Any], *args: Any) -> Any:
        try:
            return callback(*args)
        except Exception:
            log.exception("%s: callback %r failed", self.node_id, callback)
            return None

    # ------------------------------------------------------------------ receiving

    async def _drain_pubsub(self, pubsub: Any) -> None:
        """Empty what the pub/sub object keeps for ``get_message()``, which nobody calls.

        Every message reaches :meth:`_on_push` in coredis's own reader task, as it parses
        it; what it still queues for ``get_message()`` (subscription confirmations, and a
        ``None`` for each message a handler took) is dropped here, once a second, so the
        delivery of a message wakes no task of ours and the queue stays small.
        """
        stream = getattr(pubsub, "_receive_stream", None)
        if stream is None:  # another coredis: read them one by one
            while True:
                await pubsub.get_message()
        while True:
            await trio.sleep(_DRAIN_SECONDS)
            with contextlib.suppress(anyio.WouldBlock):
                while True:
                    stream.receive_nowait()

    def _on_push(self, message: Any) -> None:
        """A message on one of this node's channels (called by coredis, must not block)."""
        try:
            self._on_channel(message["channel"], message["data"])
        except Exception:
            log.exception("%s: a message from Redis could not be handled", self.node_id)

    def _on_channel(self, channel: bytes, data: bytes) -> None:
        if channel == self._node_channel_bytes:
            self._on_node_message(data)
            return
        if not channel.startswith(self._queue_head):
            return
        queue = channel[self._queue_start : self._queue_end].decode()
        if queue not in self._listening:
            return  # unlistened meanwhile
        kind = data[:1]
        if kind == b"m":
            live, _time = scripts.entry_message(data[1:])
            held = self._held
            if held is not None and queue in held:
                held[queue].append(live)
            else:
                self._deliver(queue, live)
        elif kind == b"r":
            self._callback(self.on_retract, queue, data[1:].decode())

    def _deliver(self, queue: str, message: Message) -> None:
        last = self._last.get(queue)
        if last is not None and message.seq <= last:
            return  # had it already (a catch-up), or it predates listening
        self._advance(queue, message.seq)
        self._callback(self.on_message, queue, message)

    def _advance(self, queue: str, seq: int) -> None:
        if seq > self._last.get(queue, -1):
            self._last[queue] = seq
            event = self._progress.pop(queue, None)
            if event is not None:
                event.set()

    async def _wait_delivered(self, queue: str, seq: int) -> None:
        """Wait until the live messages of a listened queue up to ``seq`` were delivered.

        A replay read on the command connection can overtake live messages still on their
        way through the pub/sub connection; the hub drops live messages that its replay
        holds only while the subscription is held, so they must all be in by then.
        """
        with trio.move_on_after(self.operation_timeout):
            while queue in self._listening and self._last.get(queue, seq) < seq:
                event = self._progress.get(queue)
                if event is None:
                    event = self._progress[queue] = trio.Event()
                await event.wait()
            return
        self._errors += 1
        raise BrokerUnavailable("live messages are late; try again")

    def _on_node_message(self, data: bytes) -> None:
        kind, body = data[:1], data[1:]
        if kind == b"r":  # a routed message: "<id> <from node> <t|b|c> <namelen>\n" name payload
            head, _, rest = body.partition(b"\n")
            request, sender, payload_kind, namelen = head.split(b" ")
            n = int(namelen)
            name = rest[:n].decode()
            raw = rest[n:]
            payload: Payload = raw.decode() if payload_kind == b"t" else raw
            if payload_kind == b"c":
                code, _, reason = raw.decode().partition(" ")
                payload = RoutedClose(int(code), reason)
            taken = bool(self._callback(self.on_routed, name, payload))
            answer = f"a{request.decode()} {int(taken)}"
            self._outbox.append(("P", self._node_channel(sender.decode()), answer))
            self._outbox_ready.set()
        elif kind == b"a":  # the answer to one of our routes
            request, _, reply = body.partition(b" ")
            waiter = self._routes.pop(int(request), None)
            if waiter is not None:
                waiter[1] = reply == b"1"
                waiter[0].set()
        elif kind == b"d":  # "<owner>\n<name>": our connection's name was taken over
            owner, _, name = body.decode().partition("\n")
            key = name_key(name)
            if self._names.get(key, (None, None))[1] == owner:
                del self._names[key]
            self._callback(self.on_displaced, name, owner)

    # ------------------------------------------------------------------ the outbox

    def _batch_args(self, ops: Sequence[tuple[str, str, str]]) -> list[str | int]:
        """The operations as (op, key, a, b) quadruples after their number (BATCH_OPS)."""
        args: list[str | int] = [len(ops)]
        for op, a, b in ops:
            if op == "r":
                args += ["r", self._key_of_name(a), b, ""]
            elif op == "p":
                self._presence_dirty.discard((a, b))
                count = self._presence.get((a, b), 0)
                args += ["p", self._presence_key(a), f"{self.node_id}\n{b}", count]
            else:
                args += ["P", a, "", b]
        return args

    async def _run_ops(self, ops: Sequence[tuple[str, str, str]], client: _Client) -> None:
        """Carry out outbox operations: one script call on one server; on a cluster one
        call per key (each in its own slot), concurrently, in order for each key."""
        args = self._batch_args(ops)
        if not self._cluster:
            await self._op("batch", (), args)(client)
            return
        per_key: dict[str, list[list[str | int]]] = {}
        for i in range(len(ops)):
            op, key, a, b = args[1 + 4 * i : 5 + 4 * i]
            per_key.setdefault(str(key), []).append([op, a, b])

        def in_order(
            key: str, calls: list[list[str | int]]
        ) -> Callable[[_Client], Awaitable[None]]:
            async def run(c: _Client) -> None:
                for call in calls:
                    await self._op("c_op", [key], call)(c)

            return run

        await self._each([in_order(k, calls) for k, calls in per_key.items()], client)

    async def _send_outbox(self, client: _Client, pubsub: Any) -> None:
        outbox = self._outbox
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            while outbox:
                ops = list(itertools.islice(outbox, _BATCH))
                unlisten = [a for op, a, _b in ops if op == "u"]
                script_ops = [o for o in ops if o[0] != "u"]
                if script_ops:
                    await self._call(functools.partial(self._run_ops, script_ops), client)
                channels = [self._queue_channel(q) for q in unlisten if q not in self._listening]
                if channels:
                    await self._call(functools.partial(_unsubscribe, pubsub, channels), client)
                for op, a, b in ops:
                    outbox.popleft()
                    if op == "r" and self._released.get(a) == b:
                        del self._released[a]
                    elif op == "p":
                        self._presence_dirty.discard((a, b))

    def _post(self, op: str, a: str, b: str) -> None:
        self._outbox.append((op, a, b))
        self._outbox_ready.set()

    def _post_presence(self, queue: str, name: str) -> None:
        if (queue, name) not in self._presence_dirty:
            self._presence_dirty.add((queue, name))
            self._post("p", queue, name)

    # ------------------------------------------------------------------ queues

    async def publish(
        self, queue: str, body: bytes, *, kind: int, key: str | None, options: QueueOptions
    ) -> int:
        return await self.publish_many(queue, [(body, kind, key)], options=options)

    async def publish_many(
        self, queue: str, messages: Sequence[PublishItem], *, options: QueueOptions
    ) -> int:
        if not messages:
            raise ValueError("publish_many() needs at least one message")
        args = publish_args(
            self._queue_channel(queue), messages, options=options, deadline=self._deadline()
        )
        keys = self._queue_keys(queue)
        publisher = self._publisher
        operation: Callable[[_Client], Awaitable[Any]]
        if publisher is not None and self._state is BrokerState.UP:
            operation = functools.partial(self._publish_on, publisher, keys, args)
        else:
            operation = self._op("publish", keys, args)
        seq = await self._call(operation)
        return int(self._in_time(seq))

    async def _publish_on(
        self, connection: Any, keys: list[str], args: list[Any], _client: _Client
    ) -> Any:
        """The publish script on the session's publishing connection (one server).

        A publish is the one call made per message, so it skips the client's command layer
        (its pool checkout, retry wrappers and response callbacks: half of the client's
        CPU per call, measured) and asks the connection directly; coredis still
        multiplexes concurrent publishes on it and pipelines what is written together.
        """
        code = self._scripts["publish"]
        try:
            return await connection.create_request(
                b"EVALSHA", code.sha, len(keys), *keys, *args, decode=False
            )
        except coredis.exceptions.NoScriptError:
            return await connection.create_request(
                b"EVAL", code.script, len(keys), *keys, *args, decode=False
            )

    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        if since is None:
            replay = await self._head(queue)
        else:
            replay = await self._call(lambda c: self._replay(c, queue, since, epoch, options.ttl))
        listened = self._listening.get(queue)
        if listened is not None and listened.is_set():
            await self._wait_delivered(queue, replay.seq)
        return replay

    async def _head(self, queue: str) -> Replay:
        """The queue's current seq and epoch, one read for every caller that asked before it
        was sent.

        When a thousand subscribers of one queue connect at once, each needs the queue's
        head (a subscribe without ``since``): one round trip each kept the command
        connection busy for longer than ``operation_timeout`` on a loaded core, and the
        last ones counted as an outage. Callers join the read that has not been sent yet;
        one read per queue is in the air at a time, so a joined read always starts after
        its callers asked (a read already under way might miss a message published after
        it, before they held their lane).
        """
        while True:
            flight = self._heads.get(queue)
            if flight is not None:  # not sent yet: join it
                await flight.done.wait()
            else:
                flight = self._heads[queue] = _HeadRead()
                lock = self._head_locks.get(queue)
                if lock is None:
                    lock = self._head_locks[queue] = trio.Lock()
                try:
                    async with lock:
                        if self._heads.get(queue) is flight:
                            del self._heads[queue]  # later callers make the next read
                        flight.result = await self._call(
                            lambda c: self._replay(c, queue, None, None, None)
                        )
                except Exception as exc:
                    flight.error = exc
                    raise
                finally:
                    if self._heads.get(queue) is flight:
                        del self._heads[queue]
                    flight.done.set()
                    if not lock.locked() and lock.statistics().tasks_waiting == 0:
                        self._head_locks.pop(queue, None)
            if flight.result is not None:
                return flight.result
            if isinstance(flight.error, BrokerUnavailable):
                raise BrokerUnavailable(flight.error.message) from flight.error
            if flight.error is not None:
                raise BrokerError(str(flight.error)) from flight.error
            # The caller that was reading was cancelled: read again.

    async def _replay(
        self,
        client: _Client,
        queue: str,
        since: int | None,
        epoch: str | None,
        ttl: float | None,
    ) -> Replay:
        keys = self._queue_keys(queue)
        args = ["" if since is None else since, epoch or "", secrets.token_hex(6)]
        result = await self._op("replay", keys, args)(client)
        raw_epoch, seq, raw_now, effective, entries = cast(list[Any], result)
        current = cast(bytes, raw_epoch).decode()
        self.epoch = current
        seq = int(seq)
        if since is None:
            return Replay(seq, current)
        since = int(effective)
        if since >= seq:
            return Replay(seq, current)
        deadline = float(raw_now) - ttl if ttl is not None else -math.inf
        messages: list[Message] = []
        for entry in entries:
            message, time = scripts.entry_message(entry)
            if message.seq > since and (messages or time >= deadline):
                messages.append(message)
        first = messages[0].seq if messages else seq + 1
        gap = Gap(since + 1, first - 1) if first > since + 1 else None
        return Replay(seq, current, gap, messages)

    async def retract(self, queue: str, key: str) -> int:
        keys = [self._queue_keys(queue)[1]]
        args = [key, self._queue_channel(queue), self._deadline()]
        count = await self._call(self._op("retract", keys, args))
        return int(self._in_time(count))

    async def listen(self, queue: str) -> None:
        event = self._listening.get(queue)
        if event is not None:
            if not event.is_set():
                with trio.move_on_after(self.operation_timeout):
                    await event.wait()
                if self._listening.get(queue) is not event or not event.is_set():
                    self._errors += 1
                    raise BrokerUnavailable
            return
        if self._state is not BrokerState.UP:
            self._errors += 1
            raise BrokerUnavailable
        pubsub = self._pubsub
        event = self._listening[queue] = trio.Event()
        self._last.pop(queue, None)
        try:
            channel = self._queue_channel(queue)
            await self._call(lambda _c: pubsub.subscribe(**{channel: self._on_push}))
            # Everything after the seq read now will come through the subscription.
            now = await self._call(lambda c: self._replay(c, queue, None, None, None))
            self._epochs[queue] = now.epoch
            self._advance(queue, now.seq)
        except BaseException:
            if self._listening.get(queue) is event:
                del self._listening[queue]
            event.set()  # wakes the callers waiting for it, who find it failed
            raise
        event.set()

    def unlisten(self, queue: str) -> None:
        if self._listening.pop(queue, None) is not None:
            self._last.pop(queue, None)
            self._epochs.pop(queue, None)
            if self._state is BrokerState.UP:
                self._post("u", queue, "")

    # ------------------------------------------------------------------ names and routing

    async def claim(self, name: str, owner: str, *, takeover: bool = False) -> Claim:
        if self._cluster:
            return await self._claim_cluster(name, owner, takeover)
        key = name_key(name)
        args = [
            self.prefix,
            owner,
            name,
            self._lease_ms(),
            "1" if takeover else "0",
            self.node_id,
            self._released.get(key, ""),
            self._deadline(),
        ]
        keys = [self._name_key(name)]
        result = await self._call(self._op("claim", keys, args))
        answer = cast(list[Any], self._in_time(result))
        granted, previous = answer[0], answer[1]
        held = previous.decode() if isinstance(previous, bytes) else None
        spelling = answer[2].decode() if len(answer) > 2 and answer[2] else None
        if not granted:
            return Claim(False, held, spelling)
        self._names[key] = (name, owner)
        return Claim(True, held, spelling)

    async def _claim_cluster(self, name: str, owner: str, takeover: bool) -> Claim:
        """:meth:`claim` on a cluster: the name's slot holds no liveness, so a name held on
        another connection costs a look at the holder's node (the registry's slot) and a
        second call; a takeover's notice goes to the old holder's node channel after."""
        key = name_key(name)
        expected, alive = "", "1"
        for _attempt in range(5):
            args = [
                owner,
                name,
                self._lease_ms(),
                "1" if takeover else "0",
                self._released.get(key, ""),
                self._deadline(),
                expected,
                alive,
            ]
            result = await self._call(self._op("c_claim", [self._key_of_name(key)], args))
            answer = cast(list[Any], self._in_time(result))
            status = int(answer[0])
            held = answer[1].decode() if isinstance(answer[1], bytes) else None
            spelling = answer[2].decode() if len(answer) > 2 and answer[2] else None
            if status == -1:
                assert held is not None
                expected = held
                live = await self._call(functools.partial(self._holder_alive, held))
                alive = "1" if live else "0"
                continue
            if not status:
                return Claim(False, held, spelling)
            self._names[key] = (name, owner)
            node = held.rpartition("/")[0] if held is not None else None
            if held is not None and spelling is not None and node != self.node_id:
                assert node is not None
                notice = [0, f"d{held}\n{spelling}"]
                await self._call(self._op("c_send", [self._node_channel(node)], notice))
            return Claim(True, held, spelling)
        self._errors += 1
        raise BrokerUnavailable("the name kept changing hands; try again")

    def release(self, name: str, owner: str) -> None:
        key = name_key(name)
        held = self._names.get(key)
        if held is not None and held[1] == owner:
            del self._names[key]
        self._released[key] = owner
        self._post("r", key, owner)

    async def route(self, name: str, payload: Payload) -> bool:
        request = next(self._route_ids)
        if isinstance(payload, str):
            kind, data = "t", payload.encode()
        elif isinstance(payload, RoutedClose):  # "<code> <reason>"
            kind, data = "c", f"{payload.code} {payload.reason}".encode()
        else:
            kind, data = "b", payload
        keys = [self._name_key(name)]
        args: list[str | int | bytes] = [
            self.prefix,
            self.node_id,
            request,
            kind,
            data,
            self._deadline(),
        ]
        waiter: list[Any] = [trio.Event(), False]
        self._routes[request] = waiter
        try:
            if self._cluster:  # the name's slot, then the holder's node channel's slot
                found = self._in_time(
                    await self._call(self._op("c_route", keys, [self._deadline()]))
                )
                if not found:
                    return False
                owner, held_name = (v.decode() for v in cast(list[bytes], found))
                node = owner.rpartition("/")[0]
                if node == self.node_id:
                    return bool(self._callback(self.on_routed, held_name, payload))
                message = (
                    f"r{request} {self.node_id} {kind} {len(held_name.encode())}\n".encode()
                    + held_name.encode()
                    + data
                )
                sent = self._in_time(
                    await self._call(
                        self._op("c_send", [self._node_channel(node)], [self._deadline(), message])
                    )
                )
                if not int(sent):
                    return False
            else:
                result = self._in_time(await self._call(self._op("route", keys, args)))
                status = int(cast(list[Any], result)[0])
                if status == 0:
                    return False
                held_name = cast(list[Any], result)[1].decode()
                if status == 2:  # held on this node
                    return bool(self._callback(self.on_routed, held_name, payload))
            with trio.move_on_after(self.operation_timeout) as scope:
                await waiter[0].wait()
            if scope.cancelled_caught or (self._state is not BrokerState.UP and not waiter[1]):
                self._errors += 1
                raise BrokerUnavailable("the node holding the name did not answer; try again")
            return bool(waiter[1])
        finally:
            self._routes.pop(request, None)

    # ------------------------------------------------------------------ presence and nodes

    def note_presence(self, queue: str, name: str, delta: int) -> None:
        count = self._presence.get((queue, name), 0) + delta
        if count > 0:
            self._presence[(queue, name)] = count
        else:
            self._presence.pop((queue, name), None)
        self._post_presence(queue, name)

    async def members(self, queue: str) -> list[str]:
        keys = [self._presence_key(queue)]
        if self._cluster:  # the queue's slot, then the registry's for the nodes' liveness
            flat = cast(list[bytes], await self._call(self._op("c_members", keys)))
            pairs = [(n.decode(), m.decode()) for n, m in zip(flat[::2], flat[1::2], strict=True)]
            nodes = sorted({node for node, _ in pairs})
            if not nodes:
                return []
            alive = await self._call(self._op("c_alive", [self._registry()], nodes))
            live = {n for n, a in zip(nodes, cast(list[Any], alive), strict=True) if int(a)}
            return sorted({name for node, name in pairs if node in live})
        result = await self._call(self._op("members", keys, [self.prefix]))
        return sorted({cast(bytes, n).decode() for n in cast(list[Any], result)})

    async def nodes(self) -> list[NodeInfo]:
        if self._cluster:
            result = await self._call(self._op("c_nodes", [self._registry()]))
        else:
            result = await self._call(self._op("nodes", (), [self.prefix]))
        flat = cast(list[bytes], result)
        nodes = []
        for node_id, value in zip(flat[::2], flat[1::2], strict=True):
            connections, clients = value.split(b" ")
            nodes.append(NodeInfo(node_id.decode(), int(connections), int(clients)))
        return sorted(nodes, key=lambda n: n.node_id)
