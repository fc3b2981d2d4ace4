"""The broker interface: what the nodes of one application share.

Theory of operation
-------------------
A *node* is one process serving an :class:`~trio_ws.App`. Each node holds one
:class:`Broker`: its own connection to the shared state. The broker owns what must be the
same on every node, and nothing else:

* **Sequence numbers and kept history.** :meth:`Broker.publish` numbers a message (the
  broker assigns seqs, so every node sees one order) and keeps it; :meth:`Broker.replay`
  answers ``since`` with a gap for what is no longer kept. Each history belongs to an
  *epoch*: a broker that lost its data starts a new one, and a ``since`` from another
  epoch is answered as if it were 0, so nobody gets silently wrong numbers.
* **Live delivery.** A node :meth:`listens <Broker.listen>` to the queues it has local
  subscribers for, and the broker hands it each message of those queues once, in seq
  order, through the ``on_message`` callback, whatever the number of local subscribers.
  Fan-out to sockets stays on the node (:mod:`trio_ws._broadcast`).
* **Name claims** (:meth:`Broker.claim`): names are unique case-insensitively across the
  cluster; a claim is held by an *owner* (node id and connection) under a lease that the
  node's heartbeat renews, so the names of a dead node come free in bounded time.
* **Routing** (:meth:`Broker.route`): a message for a name reaches the node holding it,
  through that node's ``on_routed`` callback (a :class:`RoutedClose` payload asks that
  node to close the client instead); a takeover tells the old holder's node through
  ``on_displaced``.
* **Presence**: nodes report who is subscribed where (:meth:`Broker.note_presence`), and
  :meth:`Broker.members` answers for the whole cluster.
* **Cluster counters** (:meth:`Broker.nodes`): each node's connections and clients.

Everything that may need a round trip is ``async``; what only records a change locally
(and sends it later, in order) is a plain method. The memory broker answers at once, so a
single process pays nothing for the seam.

Callbacks run in whatever task the broker delivers from and must not block: the node
appends to buffers and writes without waiting.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from .._queue_model import Gap, Message, QueueOptions
from ..protocol._errors import WebSocketError

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerState",
    "BrokerStatistics",
    "BrokerUnavailable",
    "Claim",
    "NodeInfo",
    "PublishItem",
    "Replay",
]


class BrokerError(WebSocketError):
    """A broker operation failed."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached now; the operation was not carried out.

    ``code`` is the protocol's ``error`` code a client gets for it.
    """

    code = "broker_unavailable"

    def __init__(self, message: str = "the message broker is unavailable; try again") -> None:
        super().__init__(message)
        self.message = message


class BrokerState(enum.Enum):
    """How a node's broker connection stands (``/healthz`` reports it)."""

    CONNECTING = "connecting"
    """Not connected yet (before :meth:`Broker.run`, or reconnecting for the first time)."""
    UP = "up"
    """Connected: everything works."""
    DOWN = "down"
    """Lost: the node serves its local clients, reconnects with backoff, and refuses what
    needs the broker with :class:`BrokerUnavailable`."""


@attrs.frozen
class Replay:
    """What a subscriber asking for everything after ``since`` is owed before live messages."""

    seq: int
    """The queue's last seq when the history was read: the live stream starts after it."""
    epoch: str
    """The history's epoch."""
    gap: Gap | None = None
    """The part of ``since+1 .. seq`` no longer kept (or expired), if any."""
    messages: Sequence[Message] = ()
    """The kept messages after ``since`` up to ``seq``, in order (retracted ones included)."""


@attrs.frozen
class Claim:
    """The answer to :meth:`Broker.claim`."""

    granted: bool
    """Whether the owner now holds the name."""
    previous: str | None = None
    """Refused: the owner holding it. Granted by takeover: the owner it was taken from."""
    name: str | None = None
    """With ``previous``: the name as that owner spelled it (names are unique
    case-insensitively; a takeover is only for the same spelling)."""


@attrs.frozen
class RoutedClose:
    """A routed payload that is no message: the holder's node closes the client's
    connection with ``code`` and ``reason`` (the server API's cluster-wide disconnect)."""

    code: int
    """The WebSocket close code (1000, or 3000-4999)."""
    reason: str = ""
    """The close reason (at most 123 bytes of UTF-8)."""


Payload = str | bytes | RoutedClose
"""What :meth:`Broker.route` carries: an encoded text or binary message, or a close."""


@attrs.frozen
class NodeInfo:
    """One live node of the cluster, as it last reported itself."""

    node_id: str
    connections: int
    clients: int


@attrs.frozen
class BrokerStatistics:
    """A snapshot of one node's broker counters (``Broker.statistics()``)."""

    kind: str
    """``"memory"``, ``"redis"``, ..."""
    state: BrokerState
    node_id: str
    round_trips: int
    """Operations that went to the shared store."""
    errors: int
    """Operations refused because the broker was unavailable."""
    outages: int
    """Times the connection was lost."""
    latency_seconds: float
    """Mean round-trip time of the latest operations (0 for the memory broker)."""


MessageCallback = Callable[[str, Message], None]
RetractCallback = Callable[[str, str], None]
ResetCallback = Callable[[str, str], None]
GapCallback = Callable[[str, int, int], None]
RoutedCallback = Callable[[str, Payload], bool]
DisplacedCallback = Callable[[str, str], None]
NodeReport = Callable[[], tuple[int, int]]

PublishItem = tuple[bytes, int, str | None]
"""One message of :meth:`Broker.publish_many`: its body, payload kind and key (or None)."""


def _no_message(_queue: str, _message: Message) -> None:
    pass


def _no_retract(_queue: str, _key: str) -> None:
    pass


def _no_reset(_queue: str, _epoch: str) -> None:
    pass


def _no_gap(_queue: str, _first: int, _last: int) -> None:
    pass


def _no_route(_name: str, _payload: Payload) -> bool:
    return False


def _no_displace(_name: str, _owner: str) -> None:
    pass


def _no_report() -> tuple[int, int]:
    return (0, 0)


class Broker(abc.ABC):
    """One node's connection to the state the nodes share (see the module docstring).

    The node sets the callbacks before serving:

    * ``on_message(queue, message)``: a message of a queue this node listens to, once per
      node, in seq order per queue.
    * ``on_retract(queue, key)``: messages published with ``key`` were retracted.
    * ``on_reset(queue, epoch)``: the queue's history started again under a new epoch
      (the shared store lost its data); live messages continue from seq 1.
    * ``on_gap(queue, first, last)``: messages ``first`` .. ``last`` of a listened queue
      will never reach this node (lost while it was away); in the stream's order, like
      ``on_message``.
    * ``on_routed(name, payload) -> bool``: a message for a client of this node; return
      whether it was taken.
    * ``on_displaced(name, owner)``: another connection took the name over from ``owner``
      (a connection of this node), which must be closed (1008).
    * ``report() -> (connections, clients)``: this node's counts, for :meth:`nodes`.

    Attributes:
        node_id: this node's id, unique in the cluster.
        kind: the broker's name (``"memory"``, ``"redis"``).
        delivers_in_steps: whether ``on_message`` calls come from a task of the broker's,
            one message per scheduler step (a shared broker's client reading them off a
            socket), rather than all of a publish at once inside it (the memory broker).
            The node then lets a few steps' messages gather before it writes them out, so
            a burst costs a few writes per subscriber, not one per message.
    """

    kind: str = "broker"
    delivers_in_steps: bool = True

    def __init__(self, *, node_id: str) -> None:
        self.node_id = node_id
        self.on_message: MessageCallback = _no_message
        self.on_retract: RetractCallback = _no_retract
        self.on_reset: ResetCallback = _no_reset
        self.on_gap: GapCallback = _no_gap
        self.on_routed: RoutedCallback = _no_route
        self.on_displaced: DisplacedCallback = _no_displace
        self.report: NodeReport = _no_report

    def owner(self, connection_id: int) -> str:
        """The owner string of one of this node's connections (for :meth:`claim`)."""
        return f"{self.node_id}/{connection_id}"

    def node_of(self, owner: str) -> str:
        """The node id of an owner string."""
        return owner.rpartition("/")[0]

    # ------------------------------------------------------------------ lifetime

    @property
    @abc.abstractmethod
    def state(self) -> BrokerState:
        """How the connection to the shared state stands now."""

    @abc.abstractmethod
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then keep the node's side alive (heartbeat, live delivery, reconnects)
        until cancelled; on cancellation leave the cluster (release names and presence).

        ``task_status.started()`` is called once the broker can be used (or, for a broker
        that reconnects in the background, once the first attempt was made).
        """

    @abc.abstractmethod
    def statistics(self) -> BrokerStatistics:
        """This node's broker counters."""

    # ------------------------------------------------------------------ queues

    @abc.abstractmethod
    async def publish(
        self, queue: str, body: bytes, *, kind: int, key: str | None, options: QueueOptions
    ) -> int:
        """Number, keep (per ``options.history`` and ``options.ttl``) and deliver a message
        to every listening node; return its seq.

        ``body`` and ``kind`` are as :func:`~trio_ws._queue_model.make_message` takes them.

        Raises:
            BrokerUnavailable: the broker cannot be reached; the message was not published.
        """

    async def publish_many(
        self, queue: str, messages: Sequence[PublishItem], *, options: QueueOptions
    ) -> int:
        """:meth:`publish` several messages in order, in as few round trips as the broker
        can (the built-in brokers: one, with consecutive seqs that no other publisher's
        message comes between); return the last one's seq.

        ``messages`` holds ``(body, kind, key)`` triples; it must not be empty. This
        default publishes them one at a time; a broker that can do better overrides it.

        Raises:
            ValueError: ``messages`` is empty.
            BrokerUnavailable: the broker cannot be reached. The built-in brokers then
                published none of them; this default may have published the first ones.
        """
        if not messages:
            raise ValueError("publish_many() needs at least one message")
        seq = 0
        for body, kind, key in messages:
            seq = await self.publish(queue, body, kind=kind, key=key, options=options)
        return seq

    @abc.abstractmethod
    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        """The queue's current seq and epoch and, with ``since``, what came after it.

        A ``since`` whose ``epoch`` is given and is not the current one is taken as 0.

        On a node that :meth:`listens <listen>` to ``queue``, ``on_message`` has been called
        for every message up to the returned ``seq`` (published after the listen) before
        this returns: none of them arrives later. The hub relies on it: it drops the live
        messages its replay holds only while the subscription waits for the replay.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    async def retract(self, queue: str, key: str) -> int:
        """Withdraw the kept messages published with ``key``; return how many were kept and
        not withdrawn before. Every listening node gets ``on_retract``.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    async def listen(self, queue: str) -> None:
        """Start live delivery of ``queue`` to this node; return once it is in effect, so a
        :meth:`replay` read afterwards misses nothing. Idempotent.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    def unlisten(self, queue: str) -> None:
        """Stop live delivery of ``queue`` to this node (takes effect soon). Idempotent."""

    # ------------------------------------------------------------------ names and routing

    @abc.abstractmethod
    async def claim(self, name: str, owner: str, *, takeover: bool = False) -> Claim:
        """Claim ``name`` (case-insensitively) for ``owner``.

        Held by someone else: refused, or with ``takeover`` granted, and the previous
        owner's node gets ``on_displaced`` (unless it is this node: the caller handles its
        own connections). Held by ``owner`` already: granted.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    def release(self, name: str, owner: str) -> None:
        """Give ``name`` up if ``owner`` still holds it (takes effect soon)."""

    @abc.abstractmethod
    async def route(self, name: str, payload: Payload) -> bool:
        """Hand ``payload`` (an encoded text or a binary message, or a
        :class:`RoutedClose`) to the node holding ``name``; return whether a node took it.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    # ------------------------------------------------------------------ presence and nodes

    @abc.abstractmethod
    def note_presence(self, queue: str, name: str, delta: int) -> None:
        """Record that one more (``+1``) or one fewer (``-1``) local subscriber called
        ``name`` is on ``queue`` (sent to the shared state in order, soon)."""

    @abc.abstractmethod
    async def members(self, queue: str) -> list[str]:
        """The sorted names subscribed to ``queue`` on any live node.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, each with its last reported counts, sorted by id.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``/healthz``."""
        stats = self.statistics()
        return {
            "kind": stats.kind,
            "state": stats.state.value,
            "node": stats.node_id,
            "outages": stats.outages,
            "latency_ms": round(stats.latency_seconds * 1000, 3),
        }
