"""The embedded broker: the shared state in this process's memory.

One :class:`MemoryStore` is the "cluster"; each node (each :class:`~trio_ws.App`) gets its
own :class:`MemoryBroker` on it. ``MemoryBroker()`` makes a store of its own, so a single
process needs nothing else; :meth:`MemoryBroker.peer` gives another node on the same store,
which is how the cross-node behaviour is tested without any server.

Every operation completes at once, without a checkpoint: the seam costs a single process a
few attribute look-ups. Leases: a node's names and presence belong to it while it lives;
:meth:`MemoryBroker.run` renews its lease every third of ``lease_seconds`` and leaves the
store when cancelled. A node that never runs holds its lease for ever (a process that
serves nothing has nothing to expire).
"""

from __future__ import annotations

import math
import secrets
from collections import Counter, deque
from collections.abc import Sequence

import trio

from .._names import name_key
from .._queue_model import History, Message, QueueOptions, make_message
from ._base import (
    Broker,
    BrokerState,
    BrokerStatistics,
    Claim,
    NodeInfo,
    Payload,
    PublishItem,
    Replay,
)

__all__ = ["MemoryBroker", "MemoryStore"]


class MemoryStore:
    """The state shared by the :class:`MemoryBroker` nodes of one process."""

    def __init__(
        self, *, max_history_bytes: int | None = 64 << 20, max_histories: int = 10_000
    ) -> None:
        if max_history_bytes is not None and max_history_bytes <= 0:
            raise ValueError(f"max_history_bytes must be positive, not {max_history_bytes}")
        if max_histories < 1:
            raise ValueError(f"max_histories must be at least 1, not {max_histories}")
        self.max_histories = max_histories
        """Queues whose history is kept; past it the one published to least recently that
        no node listens to is forgotten (a later ``since`` for it counts as 0: its history
        comes back under a new epoch)."""
        self.epochs: dict[str, str] = {}
        """Each kept history's epoch: the store's, and which history of that name it is."""
        self._made = 0
        self.max_history_bytes = max_history_bytes
        """Bytes all queues' kept histories may hold together; a publish over it evicts the
        oldest messages of its own queue first."""
        self.history_bytes = 0
        self._order: deque[tuple[History, Message]] = deque()
        """Kept messages of every queue in publish order (with entries for some already
        evicted by their queue's own limits, pruned when they are half of it)."""
        self._kept = 0
        self.epoch = secrets.token_hex(6)
        """The store's epoch: new for every store (a process restart loses the history);
        each queue's history epoch starts with it."""
        self.histories: dict[str, History] = {}
        self.listeners: dict[str, dict[MemoryBroker, None]] = {}
        self.names: dict[str, tuple[str, str]] = {}
        """By :func:`~trio_ws._names.name_key`: (the name as claimed, its owner)."""
        self.nodes: dict[str, MemoryBroker] = {}
        self.presence: dict[str, dict[str, Counter[str]]] = {}
        """queue -> node id -> name -> local subscribers of that name."""

    def history(self, queue: str, options: QueueOptions) -> History:
        histories = self.histories
        history = histories.pop(queue, None)
        if history is None:
            if len(histories) >= self.max_histories:
                self._forget_one()
            history = histories[queue] = History(
                options.history, ttl=options.ttl, max_bytes=options.max_history_bytes
            )
            self._made += 1
            self.epochs[queue] = f"{self.epoch}-{self._made}"
            return history
        histories[queue] = history  # the most recently used last
        if (history.size, history.ttl, history.max_bytes) != (
            options.history,
            options.ttl,
            options.max_history_bytes,
        ):
            history.size = options.history
            history.ttl = options.ttl
            history.max_bytes = options.max_history_bytes
        return history

    def _forget_one(self) -> None:
        for name, history in self.histories.items():  # least recently used first
            if not self.listeners.get(name):
                del self.histories[name]
                del self.epochs[name]
                self.history_bytes -= history.bytes
                self._kept -= len(history.kept)
                history.kept.clear()
                history.bytes = 0
                return

    def epoch_of(self, queue: str) -> str:
        """The epoch of a kept history (:meth:`history` makes one first)."""
        return self.epochs[queue]

    def append(self, history: History, message: Message) -> None:
        """Keep ``message`` within the queue's budgets and the store's: over the store's,
        the oldest kept messages of any queue go first."""
        before_bytes, before_kept = history.bytes, len(history.kept)
        history.append(message)
        self.history_bytes += history.bytes - before_bytes
        self._kept += len(history.kept) - before_kept
        order = self._order
        if history.kept and history.kept[-1] is message:
            order.append((history, message))
        budget = self.max_history_bytes
        while budget is not None and self.history_bytes > budget and order:
            oldest_history, oldest = order.popleft()
            if oldest_history.kept and oldest_history.kept[0] is oldest:
                self.history_bytes -= oldest_history.evict_oldest()
                self._kept -= 1
        if len(order) > 2 * self._kept + 64:
            self._order = deque(
                (h, m) for h, m in order if h.kept and h.kept[0].seq <= m.seq <= h.kept[-1].seq
            )


class MemoryBroker(Broker):
    """A node on a :class:`MemoryStore` (a new store of its own by default).

    Args:
        store: the shared state; ``None`` makes a new one.
        node_id: this node's id; a random one by default.
        lease_seconds: how long this node's names and presence outlive its last heartbeat
            once :meth:`run` has started.
    """

    kind = "memory"
    delivers_in_steps = False  # on_message runs inside publish(), a whole batch at once

    def __init__(
        self,
        *,
        store: MemoryStore | None = None,
        node_id: str | None = None,
        lease_seconds: float = 10.0,
    ) -> None:
        super().__init__(node_id=node_id or f"node-{secrets.token_hex(4)}")
        self.store = store if store is not None else MemoryStore()
        if self.node_id in self.store.nodes:
            raise ValueError(f"node {self.node_id!r} is on this store already")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.lease_seconds = lease_seconds
        self._alive_until = math.inf
        self.store.nodes[self.node_id] = self

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.node_id}>"

    def peer(self, node_id: str | None = None) -> MemoryBroker:
        """Another node on the same store."""
        return MemoryBroker(store=self.store, node_id=node_id, lease_seconds=self.lease_seconds)

    # ------------------------------------------------------------------ lifetime

    @property
    def state(self) -> BrokerState:
        return BrokerState.UP

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        store = self.store
        store.nodes[self.node_id] = self
        try:
            self._alive_until = trio.current_time() + self.lease_seconds
            task_status.started()
            while True:
                await trio.sleep(self.lease_seconds / 3)
                self._alive_until = trio.current_time() + self.lease_seconds
        finally:
            self._leave()

    def _leave(self) -> None:
        store = self.store
        if store.nodes.get(self.node_id) is self:
            del store.nodes[self.node_id]
        prefix = self.node_id + "/"
        for key, (_name, owner) in list(store.names.items()):
            if owner.startswith(prefix):
                del store.names[key]
        for per_node in store.presence.values():
            per_node.pop(self.node_id, None)
        for listeners in store.listeners.values():
            listeners.pop(self, None)

    def _live(self, node_id: str) -> MemoryBroker | None:
        node = self.store.nodes.get(node_id)
        if node is None:
            return None
        if node._alive_until != math.inf and trio.current_time() > node._alive_until:
            node._leave()  # its lease ran out: a dead node's names come free
            return None
        return node

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            kind=self.kind,
            state=self.state,
            node_id=self.node_id,
            round_trips=0,
            errors=0,
            outages=0,
            latency_seconds=0.0,
        )

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
        store = self.store
        history = store.history(queue, options)
        now = trio.current_time()
        seq = history.seq
        listeners = store.listeners.get(queue)
        for body, kind, key in messages:  # no await in between: consecutive seqs
            seq += 1
            message = make_message(seq, body, kind, key=key, time=now)
            store.append(history, message)
            if listeners:
                for node in listeners:
                    node.on_message(queue, message)
        return seq

    async def replay(
        self, queue: str, since: int | None, *, epoch: str | None, options: QueueOptions
    ) -> Replay:
        store = self.store
        history = store.history(queue, options)
        current = store.epoch_of(queue)
        if since is None:
            return Replay(history.seq, current)
        if epoch is not None and epoch != current:
            since = 0  # numbers from another epoch mean nothing here
        gap, messages = history.replay(since, trio.current_time())
        return Replay(history.seq, current, gap, messages)

    async def retract(self, queue: str, key: str) -> int:
        history = self.store.histories.get(queue)
        count = history.retract(key) if history is not None else 0
        for node in list(self.store.listeners.get(queue, ())):
            node.on_retract(queue, key)
        return count

    async def listen(self, queue: str) -> None:
        self.store.listeners.setdefault(queue, {}).setdefault(self)  # an ordered set

    def unlisten(self, queue: str) -> None:
        listeners = self.store.listeners.get(queue)
        if listeners is not None:
            listeners.pop(self, None)
            if not listeners:
                del self.store.listeners[queue]

    # ------------------------------------------------------------------ names and routing

    async def claim(self, name: str, owner: str, *, takeover: bool = False) -> Claim:
        names = self.store.names
        key = name_key(name)
        held = names.get(key)
        if held is not None and held[1] != owner:
            holder = self._live(self.node_of(held[1]))
            if holder is not None:
                if not takeover:
                    return Claim(False, held[1], held[0])
                names[key] = (name, owner)
                if holder is not self:
                    holder.on_displaced(held[0], held[1])
                return Claim(True, held[1], held[0])
        names[key] = (name, owner)
        return Claim(True)

    def release(self, name: str, owner: str) -> None:
        names = self.store.names
        key = name_key(name)
        held = names.get(key)
        if held is not None and held[1] == owner:
            del names[key]

    async def route(self, name: str, payload: Payload) -> bool:
        held = self.store.names.get(name_key(name))
        if held is None:
            return False
        node = self._live(self.node_of(held[1]))
        if node is None:
            return False
        return node.on_routed(held[0], payload)

    # ------------------------------------------------------------------ presence and nodes

    def note_presence(self, queue: str, name: str, delta: int) -> None:
        per_node = self.store.presence.setdefault(queue, {})
        counts = per_node.get(self.node_id)
        if counts is None:
            counts = per_node[self.node_id] = Counter()
        counts[name] += delta
        if counts[name] <= 0:
            del counts[name]
            if not counts:
                del per_node[self.node_id]
                if not per_node:
                    del self.store.presence[queue]

    async def members(self, queue: str) -> list[str]:
        names: set[str] = set()
        for node_id, counts in list(self.store.presence.get(queue, {}).items()):
            if self._live(node_id) is not None:
                names.update(counts)
        return sorted(names)

    async def nodes(self) -> list[NodeInfo]:
        result = []
        for node_id in sorted(self.store.nodes):
            node = self._live(node_id)
            if node is not None:
                connections, clients = node.report()
                result.append(NodeInfo(node_id, connections, clients))
        return result
