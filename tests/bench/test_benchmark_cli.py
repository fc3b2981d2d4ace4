"""The benchmark tools as a user runs them: help without the bench extra, one-line errors,
and ``--url`` against a server that is already running, with progress on stderr.

psutil is hidden from a script by running it through ``runpy`` after putting ``None`` in
``sys.modules["psutil"]``, which makes ``import psutil`` fail as if it were not installed.
"""

from __future__ import annotations

import contextlib
import re
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
from websockets.sync.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
TIMEOUT = 60


def run(script: str, *args: str, psutil: bool = True) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <args>``, optionally as if psutil were not installed."""
    hide = "" if psutil else "sys.modules['psutil'] = None; "
    code = (
        f"import runpy, sys; {hide}sys.argv = {[script, *args]!r}; "
        f"sys.path.insert(0, {str(BENCH)!r}); "
        f"runpy.run_path({str(BENCH / script)!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )


@contextmanager
def echo_server() -> Iterator[str]:
    """A websockets echo server in a thread; yields its ws:// URL."""

    def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the benchmark ends with a TCP reset
            for message in ws:
                ws.send(message)

    with serve(echo, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/echo"
        finally:
            server.shutdown()
            thread.join(10)


@pytest.mark.parametrize("script", ["echo.py", "fanout.py"])
def test_help_works_without_psutil(script: str) -> None:
    result = run(script, "--help", psutil=False)
    assert result.returncode == 0, result.stderr
    assert "--url" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["echo.py", "fanout.py"])
def test_local_run_without_psutil_says_so_in_one_line(script: str) -> None:
    result = run(script, psutil=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{script}: measuring server CPU{' and memory' if script == 'echo.py' else ''} "
        "needs psutil: pip install -e '.[bench]'"
    ]


@pytest.mark.parametrize("script", ["echo.py", "fanout.py"])
def test_a_bad_url_is_a_usage_error(script: str) -> None:
    result = run(script, "--url", "http://127.0.0.1:1/")
    assert result.returncode == 2
    assert "not a ws:// or wss:// URL" in result.stderr


def test_an_unreachable_url_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        result = run("echo.py", "--url", f"ws://127.0.0.1:{port}/", "--reps", "1", psutil=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"echo.py: ws://127.0.0.1:{port}/: ")


def test_echo_against_a_running_server_without_psutil() -> None:
    with echo_server() as url:
        result = run(
            "echo.py",
            "--url",
            url,
            "--conns",
            "1,4",
            "--reps",
            "1",
            "--warmup",
            "0.2",
            "--duration",
            "1.5",
            "--progress",
            "0.4",
            psutil=False,
        )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| echo C=")]
    assert [row.split(" | ")[0] for row in rows] == ["| echo C=1", "| echo C=4"]
    for row in rows:
        rate = int(row.split(" | ")[1].removesuffix(" rt/s").replace(",", ""))
        assert rate > 0
    # Progress: a line per measurement with what is left, and lines inside a long window.
    assert "[1/2, " in result.stderr
    assert re.search(r"^\[2/2\] rep 1 +C=4: ", result.stderr, re.MULTILINE)
    assert " s of 1.5: " in result.stderr


def test_echo_with_a_hello_and_any_reply() -> None:
    """The shape of a login-then-request app: the hello's reply is awaited first."""
    seen: list[str | bytes] = []

    def app(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            seen.append(ws.recv())
            ws.send("welcome")
            for message in ws:
                ws.send(f"got {message!s}")

    with serve(app, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
            args = ["--url", url, "--conns", "3", "--reps", "1", "--warmup", "0.2"]
            args += ["--duration", "0.5", "--hello", "login {i}", "--message", "ping"]
            strict = run("echo.py", *args, psutil=False)
            loose = run("echo.py", *args, "--any-reply", psutil=False)
        finally:
            server.shutdown()
            thread.join(10)
    # Replies that are not echoes are refused unless --any-reply.
    assert strict.returncode == 1
    assert "bad echoes" in strict.stderr
    assert loose.returncode == 0, loose.stderr
    assert "| echo C=3 |" in loose.stdout
    # Each connection sent its hello first, numbered from 1.
    assert "login 1" in seen
    assert all(isinstance(m, str) and m.startswith("login ") for m in seen)


@contextmanager
def wsbench_server() -> Iterator[tuple[str, int]]:
    port = socket.create_server(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "wsbench_server.py"), "--port", str(number)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", number), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "wsbench_server.py did not start"
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{number}", proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_fanout_against_a_running_server() -> None:
    with wsbench_server() as (url, pid):
        args = ["--url", url, "--subs", "20", "--msgs", "10", "--paced", "500"]
        args += ["--paced-warmup", "2", "--gap", "0", "--reps", "1"]
        without_pid = run("fanout.py", *args, psutil=False)
        with_pid = run("fanout.py", *args, "--server-pid", str(pid))
    for result in (without_pid, with_pid):
        assert result.returncode == 0, result.stderr
        assert "connecting 20 subscribers" in result.stderr
        assert "paced 250/500" in result.stderr
        assert "[1/1] rep 1: burst" in result.stderr
        row = result.stdout.strip().splitlines()[-1]
        assert int(row.split(" | ")[0].strip("| ").replace(",", "")) > 0
    assert without_pid.stdout.strip().splitlines()[-1].split(" | ")[1] == "n/a"
    assert with_pid.stdout.strip().splitlines()[-1].split(" | ")[1] != "n/a"


def test_per_message_compares_trees_in_one_table() -> None:
    """Two trees (here the same one twice) measured in processes of their own: one row
    each, a cost in nanoseconds for every operation."""
    result = run("per_message.py", "--tree", f"a={ROOT}", "--tree", f"b={ROOT}", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| a |")]
    rows += [line for line in result.stdout.splitlines() if line.startswith("| b |")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == 4
        assert all(float(c.replace(",", "")) > 0 for c in cells)


def test_idle_memory_measures_logged_in_clients_on_the_demo() -> None:
    """The demo started from the tree, clients logged in (a refused login would fail the
    run), its RSS read before and after: one median per tree, and the demo stopped."""
    result = run("idle_memory.py", "--conns", "30", "--reps", "1")
    assert result.returncode == 0, result.stderr
    match = re.search(r"^\| trio_ws \| ([0-9.-]+) \|", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    float(match.group(1))  # RSS can even shrink over 30 connections: a number is the check
