"""``demos/sansio_echo.py``: the sans-IO core on blocking sockets, against peers nobody here
wrote (the ``websockets`` library's sync client and server) and against itself.

The server runs as a subprocess on a free port and is stopped with a signal (exit 0, no
traceback, clients closed with 1001); every process is killed in ``finally``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "demos" / "sansio_echo.py"
TIMEOUT = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def echo_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The demo server, once it says it serves: (process, ws:// URL, its stdout file)."""
    port = free_port()
    out, err = tmp_path / "server.out", tmp_path / "server.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "serve", "--port", str(port)],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
        )
    url = f"ws://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + TIMEOUT
        while f"serving on {url}" not in out.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield proc, url, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert "Traceback" not in err.read_text()


def stop(proc: subprocess.Popen[bytes], signum: int) -> None:
    proc.send_signal(signum)
    assert proc.wait(timeout=TIMEOUT) == 0


def run_client(url: str, *messages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "client", url, *messages],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )


def test_server_echoes_for_the_websockets_client(tmp_path: Path) -> None:
    with echo_server(tmp_path) as (proc, url, out):
        with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
            # permessage-deflate was offered by the client and accepted by the core.
            assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
            ws.send("héllo")
            assert ws.recv(timeout=TIMEOUT) == "héllo"
            payload = bytes(range(256)) * 1000
            ws.send(payload)
            assert ws.recv(timeout=TIMEOUT) == payload
            ws.send(["frag", "mented"])  # one message in two frames
            assert ws.recv(timeout=TIMEOUT) == "fragmented"
            ws.ping(b"are you there").wait(TIMEOUT)  # answered by the core itself
            stop(proc, signal.SIGINT)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
    assert "sansio_echo: stopped" in out.read_text()


def test_client_talks_to_the_server(tmp_path: Path) -> None:
    with echo_server(tmp_path) as (proc, url, _out):
        result = run_client(url, "hello", "second message")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "connected (deflate: True)",
            "> hello",
            "< 'hello'",
            "> second message",
            "< 'second message'",
            "closed: 1000",
        ]
        stop(proc, signal.SIGTERM)


def test_client_talks_to_the_websockets_server() -> None:
    received: list[str | bytes] = []

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            received.append(message)
            ws.send(message)

    with serve(echo, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            port = server.socket.getsockname()[1]
            result = run_client(f"ws://127.0.0.1:{port}/path?q=1", "one", "two")
        finally:
            server.shutdown()
            thread.join(TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "connected (deflate: True)",
        "> one",
        "< 'one'",
        "> two",
        "< 'two'",
        "closed: 1000",
    ]
    assert received == ["one", "two"]


def test_plain_http_gets_426(tmp_path: Path) -> None:
    with echo_server(tmp_path) as (proc, url, _out):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        assert b"Sec-WebSocket-Version: 13" in answer
        stop(proc, signal.SIGTERM)


def test_a_malformed_request_gets_its_status(tmp_path: Path) -> None:
    with echo_server(tmp_path) as (proc, url, _out):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            request = (
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        # The core's error carries the status: a key that is not 16 bytes is a 400.
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"does not decode to 16 bytes" in answer
        stop(proc, signal.SIGTERM)
