"""The programs as a user runs them: ``trio-ws-demo`` and ``demos/echo_server.py`` in
subprocesses, talked to over loopback, stopped with SIGINT and SIGTERM.

Synchronous tests (the ``websockets`` sync client and ``subprocess``); every process is
killed in ``finally`` whatever happens.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
import websockets.exceptions
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
DEMO = [str(Path(sys.executable).with_name("trio-ws-demo"))]
ECHO = [sys.executable, str(ROOT / "demos" / "echo_server.py")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_http(port: int) -> bool:
    """Whether the server answers a plain GET: its loop, and so its signal handlers, run.

    (A listening socket alone is not enough: the kernel accepts connections before the
    program has installed its SIGINT/SIGTERM handling.)
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


@contextmanager
def program(
    command: list[str],
    port: int,
    *args: str,
    ready: Callable[[int], bool] = answers_http,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``command --port port *args``, wait until ``ready(port)``, kill it at the end."""
    proc = subprocess.Popen(
        [*command, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"exited with {proc.returncode}: {out}\n{err}")
            if ready(port):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} did not start serving on port {port}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    return out, err


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])


@SIGNALS
def test_demo_cli_serves_then_exits_cleanly_on_a_signal(signum: int) -> None:
    port = free_port()
    with program(DEMO, port) as proc:
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        with urllib.request.urlopen(f"{url}/", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            ws.send(json.dumps({"type": "login", "name": "cli"}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "welcome", "name": "cli"}
            ws.send(json.dumps({"type": "echo", "text": "over the wire"}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "echo", "text": "over the wire"}
            ws.send(b"\x01\x02")
            assert ws.recv(timeout=5) == b"\x01\x02"
            proc.send_signal(signum)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert "shutting down" in out


@SIGNALS
def test_echo_server_serves_then_exits_cleanly_on_a_signal(signum: int) -> None:
    port = free_port()
    with program(ECHO, port) as proc:
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00" * 100_000)
            assert ws.recv(timeout=5) == b"\x00" * 100_000
            proc.send_signal(signum)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    assert "Traceback" not in out + err


@SIGNALS
def test_idle_programs_exit_cleanly(signum: int) -> None:
    for command in (DEMO, ECHO):
        with program(command, free_port()) as proc:
            out, err = stop(proc, signum)
            assert proc.returncode == 0, err
            assert "Traceback" not in out + err


@pytest.mark.parametrize("command", [DEMO, ECHO], ids=["trio-ws-demo", "echo_server"])
def test_port_in_use_is_a_one_line_error(command: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*command, "--port", str(port)], capture_output=True, text=True, cwd=ROOT, timeout=15
        )
    line = one_line_error(result)
    assert str(port) in line
    assert "in use" in line.lower()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a failed run printed exactly one line on stderr and no traceback; return it."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_to_exit(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, cwd=ROOT, timeout=15)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-cert", "/nonexistent/cert.pem"], "cannot load the TLS certificate"),
        (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (["--workers", "2"], "--workers"),
        (["--broker", "kafka://127.0.0.1:9092"], "unknown broker"),
        (["--port", "70000"], "--port"),
        (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
        (["--log-level", "loud"], "invalid level 'loud'"),
        (["--workers", "0"], "--workers must be at least 1, not 0"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--rate-limit", "fast"], "expected N/SECONDS like 100/1, or off"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], expected: str) -> None:
    result = run_to_exit(args)
    assert result.returncode == 1
    assert expected in one_line_error(result)


def test_help_explains_every_option() -> None:
    result = run_to_exit(["--help"])
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--broker",
        "--workers",
        "--tls-cert",
        "--tls-key",
        "--allowed-origin",
        "--dashboard-token",
        "--log-level",
        "--rate-limit",
    ):
        assert option in result.stdout


def test_demo_cli_over_tls_prints_https_urls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def logs_in(port: int) -> bool:
        try:
            with connect(f"wss://127.0.0.1:{port}/ws", ssl=context) as ws:
                ws.send(json.dumps({"type": "login", "name": "Secure"}))
                return bool(json.loads(ws.recv()) == {"type": "welcome", "name": "Secure"})
        except OSError:
            return False

    port = free_port()
    with program(DEMO, port, "--tls-cert", str(cert_path), ready=logs_in) as proc:
        out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert f"https://127.0.0.1:{port}/" in out
    assert f"wss://127.0.0.1:{port}/ws" in out


def test_a_certificate_without_its_key_is_explained(tmp_path: Path) -> None:
    cert_only = tmp_path / "cert.pem"
    trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(cert_only))
    line = one_line_error(result := run_to_exit(["--tls-cert", str(cert_only)]))
    assert result.returncode == 1
    assert "has no private key" in line
    assert "--tls-key" in line
    assert "PEM lib" not in line


def test_log_level_is_case_insensitive_and_every_interface_prints_an_openable_url() -> None:
    port = free_port()
    with program(DEMO, port, "--log-level", "warning", "--host", "") as proc:
        out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "INFO" not in err  # the level took effect
    assert f"http://127.0.0.1:{port}/" in out
    assert "[::]" not in out
    assert "0.0.0.0" not in out
    assert "every interface" in out


def test_the_demo_ships_a_rate_limit() -> None:
    port = free_port()
    with program(DEMO, port) as proc:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            ws.send(json.dumps({"type": "login", "name": "flood"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
            for i in range(150):  # a burst beyond the default 100/1
                ws.send(json.dumps({"type": "echo", "text": str(i)}))
            replies = [json.loads(ws.recv(timeout=5)) for _ in range(150)]
        stop(proc, signal.SIGTERM)
    codes = [r.get("code") for r in replies if r["type"] == "error"]
    assert 0 < len(codes) <= 50
    assert set(codes) == {"rate_limited"}
