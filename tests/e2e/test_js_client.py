"""The browser client ``/trio_ws.js`` in a real Chromium, against real servers.

Each test opens a page on the server's origin, imports the module from ``/trio_ws.js`` and
drives a ``Client`` from there; what the client delivers is recorded in ``window.t``. The
faults are real: a TCP proxy the test controls resets both sockets (a network drop), a
``trio-ws-demo`` process stopped by PID and started again on the same port with a Redis
broker (a restart), and a worker killed with SIGKILL under ``--workers 2`` (a node lost).
In every case the test publishes during the outage from a second client (the
``websockets`` library) and checks that the stream resumed with nothing missed: the seqs
received are contiguous or covered by an explicit ``gap`` notice, and every message
published during the outage arrived.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from websockets.sync.client import ClientConnection, connect

import trio_ws
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, ServerThread
from tests.redis_fixture import start_redis

DEMO = [str(Path(sys.executable).with_name("trio-ws-demo"))]
FAST = "{first: 100, max: 400, jitter: 0.2}"
"""Backoff for the tests: the outages here last a second or two, not minutes."""
STREAM = "stream"
"""The demo's ticker queue."""


# ---------------------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(predicate: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return result


class Proxy:
    """A TCP proxy on a free loopback port in front of ``127.0.0.1:upstream``.

    One thread multiplexes every connection. :meth:`cut` resets both sockets of every
    connection (``SO_LINGER`` 0: an RST, as a lost route or a dead NAT entry looks to the
    browser) and, until :meth:`restore`, resets new connections as they arrive;
    :meth:`stall` silences the open connections instead.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.accepted = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._peers: dict[socket.socket, socket.socket] = {}
        self._commands: list[str] = []
        self._done = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, command: str) -> None:
        self._done.clear()
        self._commands.append(command)
        self._wake_w.send(b"x")
        assert self._done.wait(5), f"the proxy did not {command}"

    def cut(self) -> None:
        self._command("cut")

    def restore(self) -> None:
        self._command("restore")

    def stall(self) -> None:
        """Stop forwarding on the open connections, leaving them open: a path that went
        silent (no RST, no FIN), which only a heartbeat notices. New connections pass."""
        self._command("stall")

    def stop(self) -> None:
        self._stopping = True
        self._command("cut")
        self._thread.join(5)
        assert not self._thread.is_alive()
        self._selector.close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            self._reset(s)

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data == "wake":
                    self._wake_r.recv(64)
                    while self._commands:
                        command = self._commands.pop(0)
                        if command == "cut":
                            self.up = False
                            for sock in list(self._peers):
                                self._drop(sock)
                        elif command == "stall":
                            for sock in self._peers:
                                with contextlib.suppress(KeyError, ValueError):
                                    self._selector.unregister(sock)
                        else:
                            self.up = True
                        self._done.set()
                    if self._stopping:
                        return
                elif key.data == "accept":
                    with contextlib.suppress(BlockingIOError):
                        client, _ = self.listener.accept()
                        if not self.up:
                            self._reset(client)
                            continue
                        self.accepted += 1
                        upstream = socket.create_connection(("127.0.0.1", self.upstream))
                        for a, b in ((client, upstream), (upstream, client)):
                            a.setblocking(False)
                            self._peers[a] = b
                            self._selector.register(a, selectors.EVENT_READ, "pump")
                else:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock not in self._peers:
                        continue
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._drop(sock)
                        continue
                    peer = self._peers[sock]
                    try:
                        peer.setblocking(True)
                        peer.sendall(data)
                        peer.setblocking(False)
                    except OSError:
                        self._drop(sock)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need it", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"script errors on the page: {errors}"


# The page side: a Client whose deliveries and events are recorded in window.t.
START = """
async ([options, groups]) => {
  const mod = await import("/trio_ws.js");
  const t = window.t = {mod, received: {}, texts: {}, gaps: [], resets: [], closes: [],
                        states: [], welcomes: [], events: [], loginerrors: [], errors: []};
  const client = t.client = new mod.Client(eval(`(${options})`));
  for (const type of ["offline", "online", "reconnecting"]) {
    client.addEventListener(type, (ev) => t.events.push([type, ev.detail]));
  }
  client.on("state", (d) => t.states.push(d.state));
  client.on("close", (d) => t.closes.push(d));
  client.on("welcome", (d) => t.welcomes.push(d));
  client.on("reset", (d) => t.resets.push(d));
  client.on("loginerror", (d) => t.loginerrors.push(d));
  client.on("error", (e) => t.errors.push(e.code));
  for (const group of groups) {
    t.received[group] = [];
    t.texts[group] = [];
    client.subscribe(group, {
      onMessage: (m) => { t.received[group].push(m.seq); t.texts[group].push(m.text); },
      onGap: (g) => t.gaps.push(g),
    });
  }
  try {
    const welcome = await client.connect();
    return welcome.name;
  } catch (err) {
    return `refused: ${err.code}`;
  }
}
"""


def start_client(page: Page, options: str, groups: list[str]) -> str:
    return str(page.evaluate(START, [options, groups]))


def received(page: Page, group: str) -> list[int]:
    return list(page.evaluate(f"window.t.received[{json.dumps(group)}]"))


def subscribed(page: Page, groups: list[str]) -> None:
    """Wait until every subscription is active on the current connection."""
    page.wait_for_function(
        "(gs) => window.t.client.state === 'connected' && "
        "gs.every((g) => window.t.client.subscriptions.get(g).active)",
        arg=groups,
    )


def assert_nothing_missed(page: Page, group: str, after: int) -> list[int]:
    """The seqs of ``group`` received are increasing, and every seq from ``after + 1`` to
    the last received either arrived or is inside a gap the server announced."""
    seqs = received(page, group)
    assert seqs == sorted(set(seqs)), f"{group}: seqs out of order or repeated: {seqs}"
    gaps = [g for g in page.evaluate("window.t.gaps") if g["group"] == group]
    assert all(g["reported"] for g in gaps), f"{group}: holes nobody announced: {gaps}"
    covered = set(seqs)
    for gap in gaps:
        covered.update(range(gap["from"], gap["to"] + 1))
    missing = [s for s in range(after + 1, seqs[-1] + 1) if s not in covered]
    assert not missing, f"{group}: missed {missing} without a gap notice"
    return seqs


class Publisher:
    """A second client (the ``websockets`` library) that publishes to a group."""

    def __init__(self, port: int, name: str = "Pub") -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5)
        )
        self.ws.send(json.dumps({"type": "login", "name": name}))
        assert json.loads(self.ws.recv(timeout=5))["type"] == "welcome"

    def publish(self, group: str, texts: list[str]) -> None:
        for text in texts:
            self.ws.send(
                json.dumps({"type": "grouped", "action": "publish", "group": group, "text": text})
            )
        # Replies come in request order: the pong says every publish was handled.
        self.ws.send(json.dumps({"type": "ping"}))
        while json.loads(self.ws.recv(timeout=5))["type"] != "pong":
            pass

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_texts(page: Page, group: str, texts: list[str], within: float = 20) -> None:
    page.wait_for_function(
        "([g, texts]) => texts.every((x) => window.t.texts[g].includes(x))",
        arg=[group, texts],
        timeout=within * 1000,
    )


# ---------------------------------------------------------------------------------------
# The module itself


def test_served_by_every_app_as_a_module_with_its_rules(browser: Browser) -> None:
    srv = ServerThread(factory=trio_ws.App)  # a bare app: no demo page, no services
    srv.start()
    try:
        with urllib.request.urlopen(f"{srv.base}/trio_ws.js", timeout=5) as response:
            assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert b"export class Client" in response.read()
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{srv.base}/healthz")
        # Chromium runs a module only if it comes with a JavaScript type (nosniff).
        rules = page.evaluate(
            """async () => {
              const m = await import("/trio_ws.js");
              const at = (r) => [1, 2, 3, 4, 5, 6, 7].map((n) => m.backoffDelay(n, {}, () => r));
              return {
                low: at(0), mid: at(0.5), high: at(0.999999),
                capped: m.backoffDelay(30, {first: 100, max: 2000, jitter: 0}, () => 0.3),
                noRetry: [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
                          1013, 1014, 4000].filter((c) => !m.retries(c)),
                bad: (() => { try { m.backoffDelay(0); return "accepted"; }
                              catch (e) { return e.name; } })(),
                badOptions: [{backoff: {jitter: 2}}, {backoff: {first: 0}},
                             {backoff: {first: 500, max: 100}}, {requestTimeout: -1}].map((o) => {
                  try { new m.Client({url: "ws://127.0.0.1:1/ws", ...o}); return "accepted"; }
                  catch (e) { return e.name; }
                }),
                badGroup: (() => {
                  const c = new m.Client({url: "ws://127.0.0.1:1/ws"});
                  try { c.subscribe(""); return "accepted"; } catch (e) { return e.name; }
                })(),
              };
            }"""
        )
        context.close()
    finally:
        srv.stop()
    # 0.5 s doubling up to 10 s, each wait within 20 % either side, the middle exact.
    assert rules["mid"] == [500, 1000, 2000, 4000, 8000, 10000, 10000]
    assert rules["low"] == [400, 800, 1600, 3200, 6400, 8000, 8000]
    assert rules["high"] == [600, 1200, 2400, 4800, 9600, 12000, 12000]
    assert rules["capped"] == 2000
    assert rules["noRetry"] == [1000, 1002, 1003, 1007, 1008, 1009, 1010]
    assert rules["bad"] == "RangeError"
    # Bad options fail at construction, not at the first drop.
    assert rules["badOptions"] == ["RangeError"] * 4
    assert rules["badGroup"] == "TypeError"


# ---------------------------------------------------------------------------------------
# Close codes that are not retried


def test_takeover_1008_and_refused_logins_are_not_retried(page: Page) -> None:
    secret = b"s" * 32

    def takeover_app() -> trio_ws.App:
        app = trio_ws.App(login=trio_ws.signed_tokens(secret), on_name_conflict="takeover")

        @app.service("ping")
        async def ping(client: trio_ws.Client, _message: dict[str, Any]) -> None:
            await client.send({"type": "pong"})

        return app

    srv = ServerThread(factory=takeover_app)
    srv.start()
    try:
        token = trio_ws.make_token(secret, "Alice", time.time() + 3600)
        page.goto(f"{srv.base}/healthz")
        options = f"{{token: {json.dumps(token)}, backoff: {FAST}}}"
        assert start_client(page, options, []) == "Alice"
        # The same identity logs in elsewhere: the server closes the page's connection
        # with 1008. Reconnecting would take the name back, and the other would take it
        # again, forever: the client stops.
        with connect(f"ws://127.0.0.1:{srv.port}/ws") as other:
            other.send(json.dumps({"type": "login", "token": token}))
            assert json.loads(other.recv(timeout=5))["type"] == "welcome"
            page.wait_for_function("window.t.client.state === 'closed'")
            closes = page.evaluate("window.t.closes")
            assert [(c["code"], c["willRetry"]) for c in closes] == [(1008, False)]
            assert page.evaluate("window.t.events") == []  # no reconnect was scheduled
            assert page.evaluate("window.t.client.stats.connections") == 1
            # The other session keeps the name: nothing came to take it back.
            other.send(json.dumps({"type": "ping"}))
            assert json.loads(other.recv(timeout=5))["type"] == "pong"
            client = srv.app.clients.get("Alice")
            assert client is not None
            assert page.evaluate("window.t.client.state") == "closed"

        # A refused login is final too: connect() rejects, and nothing reconnects.
        page.reload()
        bad = trio_ws.make_token(b"x" * 32, "Alice", time.time() + 3600)
        options = f"{{token: {json.dumps(bad)}, backoff: {FAST}}}"
        assert start_client(page, options, []) == "refused: unauthorized"
        assert page.evaluate("window.t.loginerrors")[0]["code"] == "unauthorized"
        assert page.evaluate("window.t.client.state") == "closed"
        assert page.evaluate("window.t.client.stats.connections") == 1
    finally:
        srv.stop()


def test_a_taken_name_on_first_login_is_refused_at_once(page: Page) -> None:
    srv = ServerThread()
    srv.start()
    try:
        with Publisher(srv.port, name="Alice"):
            page.goto(f"{srv.base}/healthz")
            assert start_client(page, f"{{name: 'alice', backoff: {FAST}}}", []) == (
                "refused: name_taken"
            )
            assert page.evaluate("window.t.client.stats.connections") == 1
            assert page.evaluate("window.t.client.state") == "closed"
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------
# Faults


def test_network_drop_resumes_every_subscription(page: Page) -> None:
    srv = ServerThread()
    srv.start()
    proxy = Proxy(srv.port)
    publisher = Publisher(srv.port)  # straight to the server: it stays connected
    try:
        page.goto(f"{proxy.base}/healthz")
        assert start_client(page, f"{{name: 'Alice', backoff: {FAST}}}", ["lobby", STREAM]) == (
            "Alice"
        )
        subscribed(page, ["lobby", STREAM])
        start = {
            g: page.evaluate(f"window.t.client.subscriptions.get('{g}').lastSeq")
            for g in ("lobby", STREAM)
        }
        publisher.publish("lobby", ["before 1", "before 2"])
        wait_texts(page, "lobby", ["before 1", "before 2"])
        until(lambda: len(received(page, STREAM)) >= 2, 10, "no ticker")

        proxy.cut()  # both sockets reset; new connections too, until restored
        page.wait_for_function("window.t.closes.length >= 1")
        during = [f"during {i}" for i in range(1, 31)]
        publisher.publish("lobby", during)
        # The client keeps trying (each attempt reset by the proxy) while we publish.
        page.wait_for_function("window.t.closes.length >= 3")
        assert page.evaluate("window.t.welcomes.length") == 1
        proxy.restore()

        wait_texts(page, "lobby", during)
        publisher.publish("lobby", ["after"])
        wait_texts(page, "lobby", ["after"])
        until(lambda: len(received(page, STREAM)) > 20, 15, "the ticker did not resume")
        closes = page.evaluate("window.t.closes")
        assert closes[0]["code"] == 1006
        assert closes[0]["willRetry"]
        assert closes[0]["wasLoggedIn"]
        welcomes = page.evaluate("window.t.welcomes")
        assert welcomes[-1] == {"name": "Alice", "resumed": True}
        lobby = assert_nothing_missed(page, "lobby", start["lobby"])
        assert len(lobby) == 33  # nothing twice, nothing lost: the history kept it all
        assert_nothing_missed(page, STREAM, start[STREAM])
        assert page.evaluate("window.t.resets") == []  # one server, one history
    finally:
        publisher.close()
        proxy.stop()
        srv.stop()


def test_requests_get_their_replies_and_errors_go_where_they_belong(page: Page) -> None:
    srv = ServerThread()
    srv.start()
    try:
        page.goto(f"{srv.base}/healthz")
        before = page.evaluate(
            """async () => {
              const m = await import("/trio_ws.js");
              const c = new m.Client({name: "Early"});
              try { await c.request({type: "echo", text: "x"}); return "sent"; }
              catch (e) { return e.code; }
            }"""
        )
        assert before == "not_connected"
        assert start_client(page, "{name: 'Alice'}", []) == "Alice"
        out = page.evaluate(
            """async () => {
              const c = window.t.client;
              const errors = [];
              c.on("error", (e) => errors.push([e.code, e.request]));
              const rejects = (p) => p.then(() => "resolved", (e) => e.code || e.name);
              // A routed message to nobody gets an error; the echo sent after it still
              // gets its own reply (replies come in request order).
              c.send({type: "routed", to: "Nobody", text: "x"});
              const [echo, who, pong, members, bad, noReply] = await Promise.all([
                c.request({type: "echo", text: "hello"}),
                c.request({type: "who"}),
                c.request({type: "ping"}),
                c.request({type: "grouped", action: "members", group: "lobby"}),
                rejects(c.request({type: "grouped", action: "subscribe", group: "stream"})),
                rejects(c.request({type: "grouped", action: "publish", group: "g", text: ""})),
              ]);
              return {echo, who, pong, members, bad, noReply, errors};
            }"""
        )
    finally:
        srv.stop()
    assert out["echo"] == {"type": "echo", "text": "hello"}
    assert out["who"] == {"type": "who", "names": ["Alice"]}
    assert out["pong"] == {"type": "pong"}
    assert out["members"] == {"type": "members", "group": "lobby", "names": []}
    assert out["bad"] == "bad_message"  # 'stream' is the ticker's: refused, and rejected
    assert out["noReply"] == "TypeError"  # a publish has no reply to wait for
    assert out["errors"] == [["unknown_recipient", "routed"]]


def test_a_handler_that_throws_does_not_stop_the_stream(page: Page) -> None:
    srv = ServerThread()
    srv.start()
    try:
        page.goto(f"{srv.base}/healthz")
        page.evaluate(
            """() => {
              window.reported = [];
              window.addEventListener("error", (ev) => {
                ev.preventDefault();
                window.reported.push(ev.error.message);
              });
            }"""
        )
        assert start_client(page, "{name: 'Alice'}", []) == "Alice"
        page.evaluate(
            """() => {
              window.seen = [];
              window.events = [];
              window.t.client.on("message", (m) => {
                if (m.type === "grouped") window.events.push(m.seq);
              });
              window.t.client.subscribe("boom", {onMessage: (m) => {
                window.seen.push(m.seq);
                if (m.seq === 1) throw new Error("handler bug");
              }});
            }"""
        )
        subscribed(page, ["boom"])
        with Publisher(srv.port) as publisher:
            publisher.publish("boom", ["one", "two", "three"])
        page.wait_for_function("window.seen.length === 3")
        assert page.evaluate("window.seen") == [1, 2, 3]
        assert page.evaluate("window.events") == [1, 2, 3]  # the client went on after it
        assert page.evaluate("window.reported") == ["handler bug"]  # reported, not lost
        assert page.evaluate("window.t.client.subscriptions.get('boom').lastSeq") == 3
    finally:
        srv.stop()


def test_a_subscribe_refused_for_now_is_tried_again(page: Page) -> None:
    # rate_limited (like broker_unavailable) means "not now": the subscription is kept
    # and sent again with backoff, not dropped.
    srv = ServerThread(config=trio_ws.ServerConfig(rate_limit=(3, 1.0)))
    srv.start()
    groups = [f"g{i}" for i in range(6)]
    try:
        page.goto(f"{srv.base}/healthz")
        options = f"{{name: 'Alice', heartbeatInterval: null, backoff: {FAST}}}"
        assert start_client(page, options, groups) == "Alice"
        subscribed(page, groups)
        # Published by the app itself: a client publishing would be rate limited too.
        for group in groups:
            message = {"type": "grouped", "group": group, "from": "app", "text": f"to {group}"}
            srv.run(srv.app.publish, group, message)
        for group in groups:
            wait_texts(page, group, [f"to {group}"])
        assert "rate_limited" in page.evaluate("window.t.errors")  # refused at first
        stats = page.evaluate("window.t.client.stats")
        assert stats["connections"] == 1  # no reconnect was needed
        assert page.evaluate("window.t.closes") == []
    finally:
        srv.stop()


def test_a_silent_connection_is_noticed_by_the_heartbeat(page: Page) -> None:
    srv = ServerThread()
    srv.start()
    proxy = Proxy(srv.port)
    publisher = Publisher(srv.port)
    try:
        page.goto(f"{proxy.base}/healthz")
        options = (
            f"{{name: 'Alice', heartbeatInterval: 300, heartbeatTimeout: 300, backoff: {FAST}}}"
        )
        assert start_client(page, options, ["lobby"]) == "Alice"
        subscribed(page, ["lobby"])
        proxy.stall()  # nothing passes, nothing closes: the browser alone cannot tell
        page.wait_for_function("window.t.closes.length >= 1")
        close = page.evaluate("window.t.closes[0]")
        assert close["code"] == 4000  # the client's own close: no pong in time
        assert close["willRetry"]
        during = [f"silent {i}" for i in range(5)]
        publisher.publish("lobby", during)
        # The server notices the dead path by its own keepalive, much later; here the
        # test resets the silent connection so the name comes free.
        proxy.cut()
        proxy.restore()
        wait_texts(page, "lobby", during)
        assert page.evaluate("window.t.welcomes")[-1]["resumed"] is True
        assert_nothing_missed(page, "lobby", 0)
    finally:
        publisher.close()
        proxy.stop()
        srv.stop()


def test_a_new_history_is_followed_from_its_start(page: Page) -> None:
    # The memory broker loses everything with the process: a new epoch. The client's old
    # seq means nothing there; it gets the new history's kept messages from #1.
    srv = ServerThread()
    srv.start()
    proxy = Proxy(srv.port)
    try:
        page.goto(f"{proxy.base}/healthz")
        assert start_client(page, f"{{name: 'Alice', backoff: {FAST}}}", ["lobby"]) == "Alice"
        subscribed(page, ["lobby"])
        with Publisher(srv.port) as publisher:
            publisher.publish("lobby", [f"old {i}" for i in range(5)])
        wait_texts(page, "lobby", ["old 4"])
        old_epoch = page.evaluate("window.t.client.subscriptions.get('lobby').epoch")
        proxy.cut()
        srv.stop()
        srv.start()  # same port, new history
        with Publisher(srv.port) as publisher:
            publisher.publish("lobby", ["new 1", "new 2"])
        proxy.restore()
        wait_texts(page, "lobby", ["new 1", "new 2"])
        resets = page.evaluate("window.t.resets")
        assert [(r["lastSeq"], r["seq"]) for r in resets] == [(5, 2)]
        assert resets[0]["epoch"] != old_epoch
        # Without the epoch, `since: 5` would have skipped both new messages.
        assert received(page, "lobby") == [1, 2, 3, 4, 5, 1, 2]
        assert page.evaluate("window.t.gaps") == []
    finally:
        proxy.stop()
        srv.stop()


def test_offline_pauses_reconnecting_and_online_resumes_at_once(browser: Browser) -> None:
    srv = ServerThread()
    srv.start()
    context = browser.new_context()
    page = context.new_page()
    publisher = Publisher(srv.port)
    try:
        page.goto(f"{srv.base}/healthz")
        # A backoff far longer than the test: only the `online` event can bring it back.
        options = "{name: 'Alice', backoff: {first: 600000, max: 600000}}"
        assert start_client(page, options, ["lobby"]) == "Alice"
        subscribed(page, ["lobby"])
        context.set_offline(True)
        page.wait_for_function("window.t.events.some(([type]) => type === 'offline')")

        async def drop() -> None:
            client = srv.app.clients.get("Alice")
            assert client is not None
            await client.close(1012, "service restart")

        srv.run(drop)
        page.wait_for_function("window.t.client.state === 'offline'")
        # Offline: no attempt is scheduled (the browser could not connect anyway).
        assert [e[0] for e in page.evaluate("window.t.events")] == ["offline"]
        assert page.evaluate("window.t.closes")[0]["code"] == 1012
        during = [f"offline {i}" for i in range(5)]
        publisher.publish("lobby", during)
        context.set_offline(False)
        wait_texts(page, "lobby", during)
        events = [e[0] for e in page.evaluate("window.t.events")]
        assert events == ["offline", "online"]  # back through `online`, not a timer
        assert page.evaluate("window.t.welcomes")[-1]["resumed"] is True

        # Dropped while online: the next attempt is due in ten minutes. Going offline
        # cancels it; coming back online connects at once.
        srv.run(drop)
        page.wait_for_function("window.t.client.state === 'reconnecting'")
        context.set_offline(True)
        page.wait_for_function("window.t.client.state === 'offline'")
        more = [f"offline again {i}" for i in range(5)]
        publisher.publish("lobby", more)
        context.set_offline(False)
        wait_texts(page, "lobby", more)
        events = [e[0] for e in page.evaluate("window.t.events")]
        assert events == ["offline", "online", "reconnecting", "offline", "online"]
        assert len(page.evaluate("window.t.welcomes")) == 3
        assert_nothing_missed(page, "lobby", 0)
    finally:
        publisher.close()
        context.close()
        srv.stop()


# ---------------------------------------------------------------------------------------
# Restarts and lost nodes, with the Redis broker


def node_of(port: int) -> str:
    """The node that answered ``/healthz`` (``""`` when nothing did)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return str(json.loads(r.read())["broker"]["node"])
    except OSError:
        return ""


def healthy(port: int) -> bool:
    return bool(node_of(port))


@contextlib.contextmanager
def demo_process(port: int, broker: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*DEMO, "--port", str(port), "--broker", broker, "--log-level", "WARNING", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until(lambda: healthy(port) or proc.poll() is not None, 20, "the demo did not start")
        assert proc.poll() is None, proc.communicate()[1]
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


def test_server_restart_with_redis_resumes_from_the_shared_history(page: Page) -> None:
    port, other_port = free_port(), free_port()
    with start_redis() as redis, demo_process(other_port, redis.url):
        publisher = Publisher(other_port)  # on the other node: it stays up
        try:
            with demo_process(port, redis.url) as first:
                page.goto(f"http://127.0.0.1:{port}/healthz")
                options = f"{{name: 'Alice', backoff: {FAST}}}"
                assert start_client(page, options, ["lobby", STREAM]) == "Alice"
                subscribed(page, ["lobby", STREAM])
                start = page.evaluate("window.t.client.subscriptions.get('lobby').lastSeq")
                stream_start = page.evaluate("window.t.client.subscriptions.get('stream').lastSeq")
                epoch = page.evaluate("window.t.client.subscriptions.get('lobby').epoch")
                publisher.publish("lobby", ["before"])
                wait_texts(page, "lobby", ["before"])
                first.send_signal(signal.SIGTERM)  # stopped by PID: a restart
                assert first.wait(15) == 0
            page.wait_for_function("window.t.closes.length >= 1")
            during = [f"while down {i}" for i in range(20)]
            publisher.publish("lobby", during)
            with demo_process(port, redis.url):
                wait_texts(page, "lobby", during)
                publisher.publish("lobby", ["after"])
                wait_texts(page, "lobby", ["after"])
                closes = page.evaluate("window.t.closes")
                assert closes[0]["code"] == 1001
                assert closes[0]["willRetry"]
                assert page.evaluate("window.t.welcomes")[-1]["resumed"] is True
                # Redis kept the history: the same epoch, every number still meaningful.
                assert page.evaluate("window.t.resets") == []
                assert page.evaluate("window.t.client.subscriptions.get('lobby').epoch") == epoch
                assert len(assert_nothing_missed(page, "lobby", start)) == 22
                until(
                    lambda: received(page, STREAM)[-1:] > [stream_start + 10],
                    15,
                    "the ticker did not resume",
                )
                assert_nothing_missed(page, STREAM, stream_start)
        finally:
            publisher.close()


def worker_holding(parent: int, port: int, peer_port: int) -> int:
    """The worker with the established connection from ``peer_port`` to ``port``."""
    for child in psutil.Process(parent).children():
        for conn in child.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_ESTABLISHED
                and conn.laddr.port == port
                and conn.raddr
                and conn.raddr.port == peer_port
            ):
                return int(child.pid)
    return 0


def browser_port(parent: int, port: int, not_ports: set[int]) -> int:
    """The client port of the one established connection to ``port`` not in ``not_ports``."""
    ports = {
        conn.raddr.port
        for child in psutil.Process(parent).children()
        for conn in child.net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port and conn.raddr
    } - not_ports
    return ports.pop() if len(ports) == 1 else 0


def test_node_killed_under_workers_resumes_on_another(page: Page) -> None:
    port = free_port()
    with start_redis() as redis, demo_process(port, redis.url, "--workers", "2") as proc:
        nodes: set[str] = set()

        def both_serve() -> bool:
            nodes.add(node_of(port))
            return len(nodes - {""}) == 2

        until(both_serve, 20, "the two workers did not both serve")
        page.goto(f"http://127.0.0.1:{port}/healthz")
        options = f"{{name: 'Alice', backoff: {FAST}}}"
        assert start_client(page, options, ["lobby", STREAM]) == "Alice"
        subscribed(page, ["lobby", STREAM])
        start = page.evaluate("window.t.client.subscriptions.get('lobby').lastSeq")
        stream_start = page.evaluate("window.t.client.subscriptions.get('stream').lastSeq")
        peer = until(lambda: browser_port(proc.pid, port, set()), 10, "no browser connection")
        victim = worker_holding(proc.pid, port, peer)
        assert victim
        os.kill(victim, signal.SIGKILL)  # the node dies with the page's connection
        page.wait_for_function("window.t.closes.length >= 1")
        publisher = Publisher(port)  # lands on a live worker
        try:
            during = [f"node lost {i}" for i in range(20)]
            publisher.publish("lobby", during)
            # The dead node's claim on "Alice" lasts until its lease expires: the client
            # keeps trying (name_taken, then a new connection with backoff) and gets back.
            wait_texts(page, "lobby", during, within=30)
            publisher.publish("lobby", ["after"])
            wait_texts(page, "lobby", ["after"])
        finally:
            publisher.close()
        closes = page.evaluate("window.t.closes")
        assert closes[0]["code"] == 1006
        assert closes[0]["willRetry"]
        assert page.evaluate("window.t.welcomes")[-1]["resumed"] is True
        assert page.evaluate("window.t.resets") == []
        assert len(assert_nothing_missed(page, "lobby", start)) == 21
        until(lambda: received(page, STREAM)[-1:] > [stream_start + 10], 15, "no ticker")
        assert_nothing_missed(page, STREAM, stream_start)
        assert victim not in {c.pid for c in psutil.Process(proc.pid).children()}
