"""The example scripts of ``demos/`` as a user runs them: each server in a subprocess on a
free port, talked to over loopback, then stopped with SIGINT or SIGTERM (exit 0, no
traceback); ``demos/client.py`` against the demo app served in the test.

(``demos/echo_server.py`` is covered by ``test_cli.py``.) Every process is killed in
``finally`` whatever happens; stdout and stderr go to files, so a chatty child never
blocks on a full pipe.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import websockets.exceptions
from websockets.trio.client import connect as websockets_connect

import trio_ws
from trio_ws.demo import create_app

from ..conftest import expect_closed, logged_in, receive_json, running

ROOT = Path(__file__).resolve().parents[2]
DEMOS = ROOT / "demos"


class _AnyEpoch(str):
    """Equal to any non-empty epoch string (a history's epoch is random)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_EPOCH = _AnyEpoch()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class Program:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    async def wait(self) -> int:
        """Wait for the process to exit (polling: Popen has no async wait)."""
        while (code := self.proc.poll()) is None:  # noqa: ASYNC110
            await trio.sleep(0.02)
        return code

    async def stop(self, signum: int | None) -> tuple[str, str]:
        """Send ``signum`` (unless already sent); assert a clean exit (0, no traceback);
        return the output.

        Clients connected through a ``trio_ws.connect`` connection must read their Close
        first (only a receiving task answers it): the server waits for their reply.
        """
        if signum is not None:
            self.proc.send_signal(signum)
        code = await self.wait()
        out, err = self.output()
        assert code == 0, err
        assert "Traceback" not in out + err
        return out, err


def spawn(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``python demos/<script> <args>``, its output going to files in ``tmp_path``."""
    name = script.removesuffix(".py")
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(DEMOS / script), *args], stdout=stdout, stderr=stderr, cwd=ROOT
        )
    return proc, out, err


def start(tmp_path: Path, script: str, *args: str, port: int | None = None) -> Program:
    """Start the server ``demos/<script> --port <port> <args>`` (a free port by default)."""
    port = port or free_port()
    return Program(*spawn(tmp_path, script, "--port", str(port), *args), port=port)


@asynccontextmanager
async def demo(tmp_path: Path, script: str, *args: str) -> AsyncIterator[Program]:
    """Run ``demos/<script>`` until it says it serves; kill it when the block ends."""
    program = start(tmp_path, script, *args)
    try:
        # The banner comes after the signal handlers are in place and the app serves, so
        # from then on a signal must mean a clean stop.
        banner = f"serving on ws://{program.address}/ws"
        while banner not in program.output()[0]:
            if program.proc.poll() is not None:
                raise AssertionError(f"{script} exited: {program.output()}")
            await trio.sleep(0.02)
        yield program
    finally:
        if program.proc.poll() is None:
            program.proc.kill()
        program.proc.wait()


async def next_of(ws: trio_ws.WebSocketConnection, type_: str) -> dict[str, Any]:
    """The next message of type ``type_``, skipping others (prices in flight)."""
    while (message := await receive_json(ws))["type"] != type_:
        pass
    return message


# ---------------------------------------------------------------------------------------
# minimal_echo.py


async def test_minimal_echo(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with demo(tmp_path, "minimal_echo.py") as program:
            url = f"ws://{program.address}/ws"
            # A client nobody here wrote: the websockets library.
            async with websockets_connect(url, proxy=None, open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "login", "name": "Alice"}))
                assert json.loads(await ws.recv()) == {"type": "welcome", "name": "Alice"}
                await ws.send(json.dumps({"type": "echo", "text": "hello"}))
                assert json.loads(await ws.recv()) == {"type": "echo", "text": "hello"}
                await ws.send(json.dumps({"type": "echo"}))
                error = json.loads(await ws.recv())
                assert error["code"] == "bad_message"
                # Names are unique, case-insensitively.
                async with trio_ws.connect(url) as other:
                    await other.send({"type": "login", "name": "alice"})
                    assert (await receive_json(other))["code"] == "name_taken"
                out, _err = await program.stop(signal.SIGINT)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001
    assert f"ws://{program.address}/ws" in out


# ---------------------------------------------------------------------------------------
# chat_room.py


async def test_chat_room(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with demo(tmp_path, "chat_room.py") as program:
            address = program.address
            async with logged_in(address, "alice") as alice, logged_in(address, "bob") as bob:
                await alice.send({"type": "join", "room": "lobby"})
                assert await receive_json(alice) == {
                    "type": "subscribed",
                    "group": "lobby",
                    "seq": 0,
                    "epoch": ANY_EPOCH,
                }
                for i in range(1, 56):
                    await alice.send({"type": "say", "room": "lobby", "text": f"m{i}"})
                for i in range(1, 56):
                    said = await receive_json(alice)
                    assert said == {
                        "type": "said",
                        "room": "lobby",
                        "from": "alice",
                        "text": f"m{i}",
                        "seq": i,
                    }

                # Saying in a room one has not joined is refused.
                await bob.send({"type": "say", "room": "lobby", "text": "early"})
                assert (await receive_json(bob))["code"] == "not_joined"

                # A late joiner gets the last 50 messages, without a gap, then live ones.
                await bob.send({"type": "join", "room": "lobby"})
                assert await receive_json(bob) == {
                    "type": "subscribed",
                    "group": "lobby",
                    "seq": 55,
                    "epoch": ANY_EPOCH,
                }
                history = [await receive_json(bob) for _ in range(50)]
                assert [m["text"] for m in history] == [f"m{i}" for i in range(6, 56)]
                await bob.send({"type": "say", "room": "lobby", "text": "hi"})
                for ws in (alice, bob):
                    said = await receive_json(ws)
                    assert (said["from"], said["text"], said["seq"]) == ("bob", "hi", 56)

                await bob.send({"type": "members", "room": "lobby"})
                members = {"type": "members", "room": "lobby", "names": ["alice", "bob"]}
                assert await receive_json(bob) == members

                # Private messages go through the client registry.
                await alice.send({"type": "private", "to": "BOB", "text": "psst"})
                assert await receive_json(bob) == {
                    "type": "private",
                    "from": "alice",
                    "text": "psst",
                }
                assert await receive_json(alice) == {"type": "sent", "to": "BOB"}
                await alice.send({"type": "private", "to": "nobody", "text": "?"})
                assert (await receive_json(alice))["code"] == "unknown_recipient"

                # Leave, miss a message, come back with `since`: exactly the missed one.
                await bob.send({"type": "leave", "room": "lobby"})
                assert await receive_json(bob) == {"type": "left", "room": "lobby"}
                await bob.send({"type": "members", "room": "lobby"})
                assert (await receive_json(bob))["names"] == ["alice"]
                await alice.send({"type": "say", "room": "lobby", "text": "while away"})
                assert (await receive_json(alice))["seq"] == 57
                await bob.send({"type": "join", "room": "lobby", "since": 56})
                assert (await receive_json(bob))["seq"] == 57  # subscribed
                missed = await receive_json(bob)
                assert (missed["text"], missed["seq"]) == ("while away", 57)

                await bob.send({"type": "join", "room": "bad name!"})
                assert (await receive_json(bob))["type"] == "error"

                program.proc.send_signal(signal.SIGTERM)
                for ws in (alice, bob):
                    assert (await expect_closed(ws)).code == 1001
                await program.stop(None)


# ---------------------------------------------------------------------------------------
# price_ticker.py


async def test_price_ticker_resumes_with_since(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with demo(tmp_path, "price_ticker.py", "--interval", "0.05") as program:
            address = program.address
            async with logged_in(address, "alice") as ws:
                await ws.send({"type": "subscribe"})
                first = await receive_json(ws)
                assert first["type"] == "subscribed"
                assert first["group"] == "prices"
                prices = [await receive_json(ws) for _ in range(3)]
                seqs = [p["seq"] for p in prices]
                assert seqs == sorted(set(seqs))
                assert seqs[0] > first["seq"]
                for price in prices:
                    assert price["type"] == "price"
                    assert price["symbol"] in {"TRIO", "NURS", "SCOP", "CHAN"}
                    assert isinstance(price["price"], float)
                last = seqs[-1]

            await trio.sleep(0.6)  # away for about a dozen prices

            # Back (the same name, free by now), resuming after `last`.
            async with logged_in(address, "alice") as ws:
                await ws.send({"type": "subscribe", "since": last})
                resumed = await receive_json(ws)
                assert resumed["type"] == "subscribed"
                now = resumed["seq"]
                assert now - last >= 6
                replay = []
                while True:
                    message = await receive_json(ws)
                    assert message["type"] == "price", message  # no gap: all still kept
                    if message["seq"] > now:
                        break  # the live stream
                    replay.append(message)
                # Superseded prices were withdrawn: at most the latest one per symbol is
                # replayed (one superseded while on its way is skipped too).
                assert replay
                symbols = [m["symbol"] for m in replay]
                assert len(symbols) == len(set(symbols)) <= 4
                seqs = [m["seq"] for m in replay]
                assert seqs == sorted(seqs)
                assert seqs[0] > last

                await ws.send({"type": "unsubscribe"})
                await next_of(ws, "unsubscribed")
                await ws.send({"type": "subscribe", "since": -1})
                # Nothing of the queue follows `unsubscribed`: the next is the error.
                assert (await receive_json(ws))["code"] == "bad_message"

                program.proc.send_signal(signal.SIGINT)
                assert (await expect_closed(ws)).code == 1001
                await program.stop(None)


# ---------------------------------------------------------------------------------------
# every server demo


@pytest.mark.parametrize("script", ["minimal_echo.py", "chat_room.py", "price_ticker.py"])
async def test_idle_demo_stops_on_sigterm(tmp_path: Path, script: str) -> None:
    with trio.fail_after(10):
        async with demo(tmp_path, script) as program:
            await program.stop(signal.SIGTERM)


@pytest.mark.parametrize("script", ["minimal_echo.py", "chat_room.py", "price_ticker.py"])
async def test_port_in_use_is_a_one_line_error(tmp_path: Path, script: str) -> None:
    with trio.fail_after(10), socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        program = start(tmp_path, script, port=taken.getsockname()[1])
        try:
            assert await program.wait() == 1
        finally:
            if program.proc.poll() is None:
                program.proc.kill()
            program.proc.wait()
        out, err = program.output()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(program.port) in lines[0]
    assert "in use" in lines[0].lower()


# ---------------------------------------------------------------------------------------
# client.py, against the demo app served here


async def run_client(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    proc, out, err = spawn(tmp_path, "client.py", *args)
    try:
        while (code := proc.poll()) is None:  # noqa: ASYNC110
            await trio.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return code, out.read_text(), err.read_text()


async def test_client_against_the_demo_app(tmp_path: Path) -> None:
    app = create_app(ticks_per_second=50)
    with trio.fail_after(15):
        async with running(app) as address:
            url = f"ws://{address}/ws"
            code, out, err = await run_client(tmp_path, url, "--name", "Carol", "--ticks", "3")
            assert code == 0, err
            assert "Traceback" not in out + err
            lines = out.splitlines()
            assert lines[:3] == [f"connected to {url}", "welcome Carol", "echo: hello"]
            assert lines[3].startswith("subscribed to stream at seq ")
            ticks = [line.split() for line in lines[4:-1]]
            assert len(ticks) == 3
            assert all(t[0] == "tick" and len(t) == 4 for t in ticks)
            seqs = [int(t[1]) for t in ticks]
            assert seqs == sorted(set(seqs))
            assert lines[-1] == "closed after 3 ticks"

            # Refused: the name is taken. One line on stderr, exit 1.
            async with logged_in(address, "Dave"):
                code, out, err = await run_client(tmp_path, url, "--name", "dave")
            assert code == 1
            assert err.strip() == "client: refused: name_taken: the name 'dave' is taken"

    # Nobody listening.
    port = free_port()
    with trio.fail_after(10):
        code, out, err = await run_client(tmp_path, f"ws://127.0.0.1:{port}/ws")
    assert code == 1
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"client: cannot connect to ws://127.0.0.1:{port}/ws")
