"""The demo page and the dashboard in a real browser (Chromium, driven by Playwright).

The demo server runs in a background thread with its own ``trio.run``, on a free port, so a
test can stop it and serve again on the same port (a restart). The tests themselves are
plain synchronous functions using Playwright's sync API: two browser contexts log in as
Alice and Bob and drive every tab through the UI, as a user would.

Chromium is required: when ``/usr/bin/chromium`` is missing, every test here fails (CI
installs Debian's ``chromium``); nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from trio_ws.demo import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1180, "height": 760}
PHONE = {"width": 390, "height": 844}

expect.set_options(timeout=10_000)


# ---------------------------------------------------------------------------------------
# The server, in a thread of its own


class ServerThread:
    """The demo app served by ``trio.run`` in a daemon thread; stoppable and restartable."""

    def __init__(self, factory: Callable[..., Any] = create_app, **app_kwargs: Any) -> None:
        self.factory = factory
        self.app_kwargs = app_kwargs
        self.port = 0
        self.app: Any = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on ``self.port`` (a free port the first time, the same one afterwards)."""
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        async def main() -> None:
            self.app = self.factory(**self.app_kwargs)
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self._token = trio.lowlevel.current_trio_token()
                addresses = await nursery.start(self.app.serve, "127.0.0.1", self.port)
                outcome["address"] = str(addresses[0])
                ready.set()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # reported to the test thread below
                outcome["error"] = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="demo-server", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the demo server did not start within 10 s"
        if "error" in outcome:
            raise outcome["error"]
        self.port = int(outcome["address"].rpartition(":")[2])

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._cancel is not None
        assert self._token is not None
        try:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        except trio.RunFinishedError:
            pass
        self._thread.join(10)
        assert not self._thread.is_alive(), "the demo server did not stop within 10 s"
        self._thread = None

    def run(self, afn: Any, *args: Any) -> Any:
        """Run ``await afn(*args)`` in the server's Trio thread."""
        return trio.from_thread.run(afn, *args, trio_token=self._token)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    srv = ServerThread()
    srv.start()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium); they are never skipped",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class Session:
    """One browser context (one user) and its page, watched for script errors."""

    def __init__(self, browser: Browser, server: ServerThread, **context_kwargs: Any) -> None:
        context_kwargs.setdefault("viewport", DESKTOP)
        self.context: BrowserContext = browser.new_context(**context_kwargs)
        self.context.set_default_timeout(10_000)
        self.page: Page = self.context.new_page()
        self.server = server
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", self._check_request)

    def _check_request(self, request: Any) -> None:
        # The page must work offline: nothing but the demo server itself is ever fetched.
        if not request.url.startswith(self.server.base + "/"):
            self.foreign.append(request.url)

    def by_id(self, id_: str) -> Any:
        return self.page.locator(f"#{id_}")

    def open(self, path: str = "/") -> None:
        self.page.goto(self.server.base + path)

    def login(self, name: str) -> None:
        self.open()
        self.by_id("login-name").fill(name)
        self.by_id("login-button").click()
        expect(self.by_id("me")).to_have_text(name)
        expect(self.by_id("status")).to_have_attribute("data-state", "open")
        expect(self.by_id("status-text")).to_contain_text(name)

    def tab(self, name: str) -> None:
        self.by_id(f"tab-{name}").click()
        expect(self.by_id(f"panel-{name}")).to_be_visible()

    def close(self) -> None:
        assert not self.errors, f"script errors on the page: {self.errors}"
        assert not self.foreign, f"the page fetched outside the server: {self.foreign}"
        self.context.close()


@pytest.fixture
def sessions(browser: Browser, server: ServerThread) -> Iterator[Any]:
    opened: list[Session] = []

    def new(**context_kwargs: Any) -> Session:
        session = Session(browser, server, **context_kwargs)
        opened.append(session)
        return session

    yield new
    for session in opened:
        session.close()


def screenshot(page: Page, name: str, *, docs: bool = False, full_page: bool = False) -> None:
    """Save ``test-artifacts/<name>.png``; with ``docs``, also ``docs/screenshots/``
    when ``TRIO_WS_UPDATE_SCREENSHOTS=1`` (so a test run leaves the tracked files alone)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if docs and os.environ.get("TRIO_WS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


def js(page: Page, expression: str) -> Any:
    return page.evaluate(expression)


def record_frames(session: Session) -> list[dict[str, Any]]:
    """Every message the page's WebSockets receive from now on, decoded, in order: what
    the server sent, whatever the page then shows of it. Reported on Playwright calls."""
    frames: list[dict[str, Any]] = []
    session.page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(json.loads(data)))
    )
    return frames


# ---------------------------------------------------------------------------------------
# The page


def test_login_errors_shown_and_phone_layout(sessions: Any) -> None:
    alice = sessions()
    alice.login("Alice")

    bob = sessions(viewport=PHONE, is_mobile=True, has_touch=True)
    bob.open()
    expect(bob.by_id("status")).to_have_attribute("data-state", "idle")
    bob.by_id("login-name").fill("alice")  # names compare case-insensitively
    bob.by_id("login-button").click()
    expect(bob.by_id("login-error")).to_contain_text("name_taken")
    expect(bob.by_id("login-view")).to_be_visible()
    bob.by_id("login-name").fill("not a name!")
    bob.by_id("login-button").click()
    expect(bob.by_id("login-error")).to_contain_text("bad_name")
    bob.by_id("login-name").fill("Bob")
    bob.by_id("login-button").click()
    expect(bob.by_id("me")).to_have_text("Bob")
    expect(bob.by_id("login-error")).to_be_hidden()

    # Usable at phone width: every tab fits without sideways scrolling.
    for tab in ("echo", "routed", "group", "streamed"):
        bob.tab(tab)
        overflow = js(bob.page, "document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the {tab} tab is {overflow}px wider than a phone screen"
    screenshot(bob.page, "page-phone")

    # Logging out closes the connection cleanly and frees the name.
    bob.by_id("logout").click()
    expect(bob.by_id("login-view")).to_be_visible()
    expect(bob.by_id("status")).to_have_attribute("data-state", "idle")
    bob.by_id("login-name").fill("Bob")
    bob.by_id("login-button").click()
    expect(bob.by_id("me")).to_have_text("Bob")


def test_echo_and_routed(sessions: Any) -> None:
    alice, bob = sessions(), sessions()
    alice.login("Alice")
    bob.login("Bob")

    # Echo
    alice.by_id("echo-text").fill("hello, echo")
    alice.by_id("echo-send").click()
    expect(alice.page.locator("#echo-log [data-testid=echo-item]")).to_have_text(
        re.compile("hello, echo")
    )
    expect(alice.by_id("echo-text")).to_have_value("")

    # Routed: Alice picks Bob from the list of connected users and writes to him.
    alice.tab("routed")
    expect(alice.page.locator("#routed-to option[value=Bob]")).to_have_count(1)
    expect(alice.by_id("routed-online")).to_contain_text("Alice, Bob")
    alice.by_id("routed-to").select_option("Bob")
    alice.by_id("routed-text").fill("hi Bob, from Alice")
    alice.by_id("routed-send").click()
    expect(alice.page.locator("#routed-log [data-testid=routed-sent]")).to_contain_text(
        "hi Bob, from Alice"
    )
    bob.tab("routed")
    received = bob.page.locator("#routed-log [data-testid=routed-item]")
    expect(received).to_have_count(1)
    expect(received).to_have_attribute("data-from", "Alice")
    expect(received).to_contain_text("Alice")
    expect(received).to_contain_text("hi Bob, from Alice")
    # Unread marker on a tab not shown, cleared when it is opened.
    bob.tab("echo")
    alice.by_id("routed-text").fill("second")
    alice.by_id("routed-send").click()
    expect(bob.by_id("tab-routed")).to_have_attribute("data-unread", "true")

    # A server error is shown clearly: routing to a name nobody holds.
    js(alice.page, "window.trioWsDemo.send({type: 'routed', to: 'Nobody', text: 'x'})")
    expect(alice.by_id("error")).to_be_visible()
    expect(alice.by_id("error-code")).to_have_text("unknown_recipient")
    alice.by_id("error-close").click()
    expect(alice.by_id("error")).to_be_hidden()


def join(session: Session, group: str) -> None:
    session.tab("group")
    session.by_id("group-name").fill(group)
    session.by_id("group-join").click()
    expect(session.page.locator(f"#group-list [data-group='{group}']")).to_be_visible()


def publish(session: Session, text: str) -> None:
    session.by_id("group-text").fill(text)
    session.by_id("group-publish").click()


def members(session: Session) -> Any:
    return session.page.locator("#group-members [data-testid=member]")


def test_group_messages_and_presence(sessions: Any) -> None:
    alice, bob = sessions(), sessions()
    to_bob = record_frames(bob)
    alice.login("Alice")
    bob.login("Bob")
    join(alice, "lobby")
    join(bob, "lobby")

    # Presence: each sees both in the members list (Alice's list refreshes by itself).
    expect(members(bob)).to_have_text(["Alice", "Bob (you)"])
    expect(members(alice)).to_have_text(["Alice (you)", "Bob"])

    publish(alice, "hello lobby")
    publish(bob, "hi Alice")
    for session in (alice, bob):
        items = session.page.locator("#group-log [data-testid=group-item]")
        expect(items).to_have_count(2)
        expect(items.nth(0)).to_have_attribute("data-from", "Alice")
        expect(items.nth(0)).to_have_attribute("data-seq", "1")
        expect(items.nth(0)).to_contain_text("hello lobby")
        expect(items.nth(0)).to_contain_text("#1")
        expect(items.nth(1)).to_have_attribute("data-from", "Bob")
        expect(items.nth(1)).to_have_attribute("data-seq", "2")
        expect(items.nth(1)).to_contain_text("hi Alice")
    screenshot(alice.page, "page-group")

    # Bob leaves: no more lobby messages for him, and Alice sees him gone.
    bob.by_id("group-leave").click()
    expect(bob.page.locator("#group-list [data-group=lobby]")).to_have_count(0)
    expect(members(alice)).to_have_text(["Alice (you)"])
    join(bob, "side")
    publish(alice, "anyone?")
    expect(alice.page.locator("#group-log [data-testid=group-item]")).to_have_count(3)
    after = "{type: 'grouped', action: 'publish', group: 'side', text: 'after'}"
    js(alice.page, f"window.trioWsDemo.send({after})")
    # Had Bob still been in the lobby, its lane (subscribed before side's) would have
    # handed him "anyone?" no later than "after".
    expect(bob.page.locator("#group-log [data-group=side]")).to_have_count(1)
    left = to_bob.index({"type": "unsubscribed", "group": "lobby"})
    assert [f for f in to_bob[left:] if f.get("group") == "lobby" and "seq" in f] == []
    expect(bob.page.locator("#group-log [data-group=lobby]")).to_have_count(2)


def stream_seq(session: Session) -> int:
    return int(session.by_id("stream-state").get_attribute("data-seq") or 0)


def wait_stream_past(session: Session, seq: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (now := stream_seq(session)) <= seq:
        assert time.monotonic() < deadline, f"the stream did not pass #{seq} (at #{now})"
        time.sleep(0.05)
    return now


def test_streamed_ticker(sessions: Any) -> None:
    alice = sessions()
    to_alice = record_frames(alice)
    alice.login("Alice")
    alice.tab("streamed")
    alice.by_id("stream-subscribe").click()
    expect(alice.by_id("stream-state")).to_have_attribute("data-subscribed", "true")
    rows = alice.page.locator("#stream-rows [data-testid=stream-row]")
    expect(rows.first).to_be_visible()
    symbol = rows.first.get_attribute("data-symbol")
    assert symbol
    # The table updates in place: one row per symbol, its seq moving on.
    first = int(rows.first.get_attribute("data-seq") or 0)
    seq = wait_stream_past(alice, first + 3)
    assert alice.page.locator(f"#stream-rows tr[data-symbol='{symbol}']").count() == 1
    assert rows.count() == len(set(rows.evaluate_all("rs => rs.map(r => r.dataset.symbol)")))
    expect(rows.first.locator(".price")).not_to_be_empty()
    assert js(alice.page, "window.trioWsDemo.state.skipped") == 0
    time.sleep(1.2)  # let the chart draw a line worth looking at
    screenshot(alice.page, "page-streamed")

    alice.by_id("stream-unsubscribe").click()
    expect(alice.by_id("stream-state")).to_have_attribute("data-subscribed", "false")
    stopped = stream_seq(alice)
    # The server ticks on: two ticks after the last one shown, none has come.
    queue = alice.server.app.hub.queues["stream"]
    deadline = time.monotonic() + 10
    while queue.seq < stopped + 2:
        assert time.monotonic() < deadline, f"the stream stopped at #{queue.seq}"
        time.sleep(0.05)
    assert stream_seq(alice) == stopped, "stream messages kept arriving after unsubscribe"
    left = to_alice.index({"type": "unsubscribed", "group": "stream"})
    assert [f for f in to_alice[left:] if f["type"] == "streamed"] == [], "the server sent more"
    assert stopped > seq - 1


def test_reconnect_resumes_after_drop_and_restart(sessions: Any, server: ServerThread) -> None:
    alice, bob = sessions(), sessions()
    alice.login("Alice")
    bob.login("Bob")
    join(alice, "lobby")
    join(bob, "lobby")
    publish(bob, "before the drop")
    alice.tab("streamed")
    alice.by_id("stream-subscribe").click()
    seq = wait_stream_past(alice, 0)

    # 1. The server drops Alice's connection, and Bob publishes 120 messages to the lobby
    #    before she is back. The page reconnects, logs in again and resumes with `since`:
    #    the stream without a hole; the lobby with a gap notice for what the server no
    #    longer keeps (it keeps 100), then the kept messages.
    async def drop(name: str) -> None:
        client = server.app.clients.get(name)
        assert client is not None
        await client.close(1012, "service restart")

    server.run(drop, "Alice")
    js(
        bob.page,
        "for (let i = 1; i <= 120; i++) window.trioWsDemo.send("
        "{type: 'grouped', action: 'publish', group: 'lobby', text: `burst ${i}`})",
    )
    expect(alice.by_id("events")).to_contain_text("closed (1012 service restart)")
    expect(alice.by_id("events")).to_contain_text("logged in again as Alice")
    expect(alice.by_id("status")).to_have_attribute("data-state", "open")
    expect(alice.by_id("status-text")).to_contain_text("Alice")
    seq = wait_stream_past(alice, wait_stream_past(alice, seq))
    alice.tab("group")
    items = alice.page.locator("#group-log [data-testid=group-item]")
    expect(items.last).to_have_attribute("data-seq", "121")
    expect(items.last).to_contain_text("burst 120")
    gap = alice.page.locator("#group-log [data-testid=gap]")
    expect(gap).to_have_attribute("data-from", "2")
    expect(gap).to_have_attribute("data-to", "21")
    expect(gap).to_contain_text("no longer keeps")
    expect(items.nth(1)).to_have_attribute("data-seq", "22")  # after #1, the oldest kept
    assert js(alice.page, "window.trioWsDemo.state.skipped") == 0
    alice.tab("streamed")

    # 2. A restart on the same port: both pages reconnect, log in again and resume.
    server.stop()
    expect(alice.by_id("status")).to_have_attribute("data-state", "reconnecting")
    expect(alice.by_id("status-detail")).to_be_visible()
    screenshot(alice.page, "page-reconnecting")
    server.start()
    for session, name in ((alice, "Alice"), (bob, "Bob")):
        expect(session.by_id("status")).to_have_attribute("data-state", "open", timeout=15_000)
        expect(session.by_id("status-text")).to_contain_text(name)
        expect(session.by_id("status-detail")).to_be_hidden()
    # The new server's stream starts again from 0; the page notices and follows it.
    expect(alice.by_id("stream-state")).to_have_attribute("data-subscribed", "true")
    expect(alice.by_id("stream-notices")).to_contain_text("started again")
    wait_stream_past(alice, stream_seq(alice) + 2)
    # The group subscription came back too: Bob's new message reaches Alice.
    alice.tab("group")
    expect(members(alice)).to_have_text(["Alice (you)", "Bob"])
    publish(bob, "after the restart")
    items = alice.page.locator("#group-log [data-testid=group-item]")
    expect(items.last).to_contain_text("after the restart")
    expect(items.last).to_have_attribute("data-from", "Bob")


def test_a_close_that_is_not_retried_returns_to_the_login(
    sessions: Any, server: ServerThread
) -> None:
    alice = sessions()
    alice.login("Alice")
    join(alice, "lobby")

    async def close(name: str) -> None:
        client = server.app.clients.get(name)
        assert client is not None
        await client.close(1008, "taken over")

    server.run(close, "Alice")
    # 1008 is final (a newer session may hold the name now): no reconnect, the login again.
    expect(alice.by_id("login-view")).to_be_visible()
    expect(alice.by_id("login-error")).to_contain_text("closed 1008")
    expect(alice.by_id("status")).to_have_attribute("data-state", "closed")
    expect(alice.by_id("status-detail")).to_contain_text("will not be retried")
    expect(alice.by_id("events")).to_contain_text("closed (1008 policy violation)")
    assert "reconnecting" not in (alice.by_id("events").text_content() or "")
    alice.by_id("login-button").click()  # the name is filled in again
    expect(alice.by_id("me")).to_have_text("Alice")
    expect(alice.by_id("status")).to_have_attribute("data-state", "open")


# ---------------------------------------------------------------------------------------
# The dashboard


def test_dashboard_shows_live_statistics(sessions: Any) -> None:
    # The dashboard is open first, so its charts show the activity that follows.
    board = sessions()
    board.open("/dashboard")
    expect(board.by_id("status")).to_have_attribute("data-state", "open")
    expect(board.by_id("kpi-connections")).to_have_text("1")  # its own stats stream

    alice, bob = sessions(), sessions()
    alice.login("Alice")
    alice.tab("streamed")
    alice.by_id("stream-subscribe").click()
    bob.login("Bob")
    join(alice, "lobby")
    join(bob, "lobby")
    publish(alice, "for the dashboard")
    alice.tab("echo")
    for i in range(3):
        alice.by_id("echo-text").fill(f"echo {i}")
        alice.by_id("echo-send").click()
    alice.tab("streamed")

    # Alice, Bob and the dashboard's own stream: three connections, two logged in.
    expect(board.by_id("kpi-connections")).to_have_text("3")
    expect(board.by_id("kpi-clients")).to_have_text("2")
    expect(board.page.locator("#services tr[data-service=echo] td").nth(1)).to_have_text("3")
    lobby = board.page.locator("#queues tr[data-queue=lobby] td")
    expect(lobby.nth(1)).to_have_text("2")  # subscribers
    expect(lobby.nth(2)).to_have_text("1")  # last seq
    expect(board.page.locator("#queues tr[data-queue=stream] td").nth(1)).to_have_text("1")
    expect(board.page.locator("#legend-messages [data-series=outRate]")).to_have_text(
        re.compile(r"Out: [1-9]")
    )
    time.sleep(2)  # a few more points on the charts
    screenshot(board.page, "dashboard", docs=True, full_page=True)
    screenshot(alice.page, "page", docs=True)


def test_dashboard_token(browser: Browser) -> None:
    srv = ServerThread(dashboard_token="s3cret")
    srv.start()
    try:
        board = Session(browser, srv)
        board.open("/dashboard")
        expect(board.by_id("status")).to_have_attribute("data-state", "closed")
        expect(board.by_id("status-text")).to_contain_text("1008")
        expect(board.by_id("status-detail")).to_contain_text("token")
        board.open("/dashboard?token=s3cret")
        expect(board.by_id("status")).to_have_attribute("data-state", "open")
        expect(board.by_id("kpi-connections")).to_have_text("1")
        board.close()
    finally:
        srv.stop()
