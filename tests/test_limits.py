"""The limits of SECURITY.md that no other test pins down: their defaults, ``/metrics``
off this machine, what a deflate connection holds, and what many new group names leave.

Each line of SECURITY.md cites the test that backs it; these are the ones that were missing.
"""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
import trio

import trio_ws
from trio_ws._broadcast import DYNAMIC_QUEUE_DEFAULTS, BroadcastHub
from trio_ws._connection import _MESSAGES_PER_CHECKPOINT
from trio_ws._http import current_peer
from trio_ws._metrics import metrics
from trio_ws._server import _LINGER_BYTES, _LINGER_SECONDS
from trio_ws._stats import MAX_VIEWERS, StatsFeed
from trio_ws.brokers import MemoryBroker, MemoryStore
from trio_ws.demo import app as demo
from trio_ws.protocol._connection import DEFAULT_MAX_FRAGMENTS, DEFAULT_MAX_MESSAGE_SIZE
from trio_ws.protocol._stages import MAX_LOGIN_TRIES

from .conftest import in_memory

KiB = 1 << 10
MiB = 1 << 20


def test_the_defaults_are_those_of_security_md() -> None:
    config = trio_ws.ServerConfig()
    assert (config.max_head_size, config.handshake_timeout, config.login_timeout) == (
        8 * KiB,
        10.0,
        30.0,
    )
    assert (config.max_message_size, config.message_timeout, config.max_fragments) == (
        1 * MiB,
        60.0,
        None,
    )
    assert DEFAULT_MAX_MESSAGE_SIZE == 1 * MiB
    assert DEFAULT_MAX_FRAGMENTS == 65_536
    assert (config.ping_interval, config.ping_timeout, config.close_timeout) == (20.0, 20.0, 5.0)
    assert (
        config.max_connections,
        config.max_connections_per_address,
        config.max_pending,
        config.max_pending_per_address,
    ) == (10_000, 1000, 1000, 256)
    assert (config.allowed_origins, config.allowed_hosts, config.ip_allow, config.ip_deny) == (
        (),
        (),
        (),
        (),
    )
    assert (config.compression, config.server_no_context_takeover) == (True, True)
    assert (config.write_buffer_size, config.send_timeout) == (1 * MiB, 10.0)
    assert (
        config.max_subscriber_buffer,
        config.max_subscriber_bytes,
        config.max_subscriptions_per_client,
    ) == (1000, 8 * MiB, 100)
    assert config.rate_limit is None
    assert MAX_LOGIN_TRIES == 5
    assert _MESSAGES_PER_CHECKPOINT == 16
    assert (_LINGER_BYTES, _LINGER_SECONDS) == (1 * MiB, 2.0)

    options = trio_ws.QueueOptions()
    assert (options.history, options.max_history_bytes, options.ttl) == (100, 1 * MiB, None)
    assert (options.policy, options.max_publish_rate) == ("drop", None)
    assert DYNAMIC_QUEUE_DEFAULTS.max_history_bytes == 256 * KiB
    assert MemoryStore().max_history_bytes == 64 * MiB
    assert trio_ws.protocol.ServerHandshake()._max_headers == 128
    assert BroadcastHub().max_queues == 10_000
    assert MAX_VIEWERS == 16

    app = demo.create_app()
    assert (app.hub.queue_defaults.history, app.hub.queue_defaults.max_history_bytes) == (
        100,
        256 * KiB,
    )
    assert app.config.rate_limit is None  # the CLI's --rate-limit sets 100/1


@pytest.mark.parametrize(
    ("peer", "status"),
    [
        ("127.0.0.1:5000", 200),
        ("[::1]:5000", 200),
        ("192.0.2.7:5000", 403),
        ("[2001:db8::1]:1", 403),
    ],
)
async def test_metrics_without_a_token_answers_only_this_machine(peer: str, status: int) -> None:
    app = demo.create_app()
    token = current_peer.set(peer)
    try:
        response = await metrics(app, None)  # type: ignore[arg-type]  # no token: not read
    finally:
        current_peer.reset(token)
    assert response.status == status


async def test_a_deflate_connection_holds_its_zlib_state_until_it_closes() -> None:
    """SECURITY.md, "deflate memory": a server connection shares its compressor (no context
    kept) and keeps only a decompressor, made at its first compressed message and freed at
    its close; the client end (trio_ws.connect, which keeps its context) holds its own."""
    app = demo.create_app(ticks_per_second=0.001)
    n = 20
    with trio.fail_after(20):
        async with in_memory(app) as connect:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                async with trio.open_nursery() as nursery:
                    ready = trio.Semaphore(0)
                    done = trio.Event()

                    async def client(i: int) -> None:
                        async with connect(compression=True) as conn:
                            await conn.send({"type": "login", "name": f"z{i}"})
                            await conn.receive()
                            await conn.send({"type": "echo", "text": "compress me " * 100})
                            assert json.loads(await conn.receive())["type"] == "echo"
                            ready.release()
                            await done.wait()

                    for i in range(n):
                        nursery.start_soon(client, i)
                    for _ in range(n):
                        await ready.acquire()
                    gc.collect()
                    held = (tracemalloc.get_traced_memory()[0] - before) / n
                    done.set()
                while app.server.connections:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                gc.collect()
                left = (tracemalloc.get_traced_memory()[0] - before) / n
            finally:
                tracemalloc.stop()
    # Both ends of each pair are in this process: the client's zlib state counts too
    # (measured: about 86 KiB a pair; 600 KiB before compressors were shared and made at
    # memLevel 5).
    assert 16 * KiB < held < 160 * KiB, held
    # Closed, they give it back (what stays is a few counters and free lists, not per pair).
    assert left * n < 2 * MiB, left


async def test_publishing_to_ever_new_names_keeps_a_bounded_number_of_records() -> None:
    broker = MemoryBroker()
    hub = BroadcastHub(broker=broker)
    for i in range(hub.max_queues + 2000):
        await hub.publish(f"n{i}", "x")
    store = broker.store
    assert len(store.histories) <= store.max_histories == 10_000
    assert len(store.epochs) == len(store.histories)
    # The oldest names were forgotten: asking for one again is a new history, whose
    # numbers start again under a new epoch, so an old since cannot mean wrong messages.
    old = await broker.replay("n0", 0, epoch=None, options=hub.queue_defaults)
    assert old.seq == 0
    assert old.epoch != store.epoch_of("n11999")


def test_a_stats_viewer_that_does_not_keep_up_is_closed_1013() -> None:
    class Viewer:
        write_buffer_size = 1000
        pending_size = 1001  # more than its write buffer is waiting already
        closed: tuple[int, str] | None = None

        def close_nowait(self, code: int, reason: str) -> None:
            self.closed = (code, reason)

    feed = StatsFeed(demo.create_app(), interval=1.0, max_viewers=MAX_VIEWERS)
    viewer = Viewer()
    feed.viewers.add(viewer)  # type: ignore[arg-type]
    feed._send(viewer, b"frame")  # type: ignore[arg-type]
    assert viewer.closed is not None
    assert viewer.closed[0] == 1013
    assert viewer not in feed.viewers
