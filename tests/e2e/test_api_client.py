"""``trio_ws.api.Client``, the README's ``curl`` line and the backend demo, against
``trio-ws-demo`` in a subprocess (the key given through ``TRIO_WS_API_KEY`` or
``--api-key``), with the ``websockets`` sync client as the WebSocket side.

Every process is stopped by its PID in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from trio_ws.api import ApiError, Client

from .test_cli import DEMO, ROOT, answers_http, free_port

KEY = "e2e-key-5f1c"
README = ROOT / "README.md"


@contextmanager
def process(
    command: list[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    ready: Callable[[int], bool] = answers_http,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``command``, wait until it answers HTTP on ``port``, stop it by PID at the end."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 15
        while not ready(port):
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"exited with {proc.returncode}: {out}\n{err}")
            assert time.monotonic() < deadline, f"{command} did not start on port {port}"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The demo with the API on, the key in the environment only; yields its port."""
    port = free_port()
    with process([*DEMO, "--port", str(port)], port, env={"TRIO_WS_API_KEY": KEY}) as proc:
        assert KEY not in " ".join(proc.args)  # not in what ps shows
        yield port


@contextmanager
def login(port: int, name: str) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "login", "name": name}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "welcome", "name": name}
        yield ws


def subscribe(ws: ClientConnection, group: str) -> None:
    ws.send(json.dumps({"type": "grouped", "action": "subscribe", "group": group}))
    assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"


def test_the_client_publishes_sends_and_reads(server: int) -> None:
    api = Client(f"http://127.0.0.1:{server}", KEY)
    with login(server, "gina") as gina:
        subscribe(gina, "client-news")
        first = api.publish("client-news", {"type": "note", "text": "one"})
        second = api.publish("client-news", "two")
        assert second == first + 1
        assert json.loads(gina.recv(timeout=5)) == {"type": "note", "text": "one", "seq": first}
        assert gina.recv(timeout=5) == "two"
        seqs = api.publish_many("client-news", [{"n": 3}, "four"], keys=["k", None])
        assert seqs == [second + 1, second + 2]
        assert json.loads(gina.recv(timeout=5)) == {"n": 3, "seq": second + 1}
        assert gina.recv(timeout=5) == "four"
        api.send("GINA", {"type": "note", "text": "direct"})
        assert json.loads(gina.recv(timeout=5)) == {"type": "note", "text": "direct"}
        assert api.members("client-news") == ["gina"]
        info = api.info()
        assert info["clients"] >= 1
        assert [node["id"] for node in info["nodes"]] == [info["node"]]
        assert "client-news" in {queue["name"] for queue in info["queues"]}


def test_the_client_disconnects_with_a_close_code(server: int) -> None:
    api = Client(f"http://127.0.0.1:{server}", KEY)
    with login(server, "hal") as hal:
        api.disconnect("hal", code=4003, reason="banned")
        with pytest.raises(ConnectionClosed) as info:
            hal.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "banned")


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda api: api.send("nobody", "x"), 404, "unknown_client"),
        (lambda api: api.disconnect("nobody"), 404, "unknown_client"),
        (lambda api: api.disconnect("x", code=1006), 400, "bad_request"),
        (lambda api: api.publish("", "x"), 400, "bad_request"),
        (lambda api: api.publish("g", "x" * 70_000), 413, "body_too_large"),
        (lambda api: api.publish_many("g", []), 400, "bad_request"),
    ],
)
def test_errors_raise_api_error_with_status_and_code(
    server: int, call: Any, status: int, code: str
) -> None:
    api = Client(f"http://127.0.0.1:{server}", KEY)
    with pytest.raises(ApiError) as info:
        call(api)
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.message


def test_a_wrong_key_is_an_api_error_401(server: int) -> None:
    with pytest.raises(ApiError) as info:
        Client(f"http://127.0.0.1:{server}", "not-the-key").info()
    assert (info.value.status, info.value.code) == (401, "unauthorized")


def test_no_server_is_an_api_error_of_status_0() -> None:
    with pytest.raises(ApiError) as info:
        Client(f"http://127.0.0.1:{free_port()}", KEY, timeout=5).info()
    assert (info.value.status, info.value.code) == (0, "unreachable")


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("ws://127.0.0.1:1/", KEY)


def test_the_readme_curl_line_publishes(server: int) -> None:
    text = README.read_text()
    found = re.search(r"^curl .*/api/publish$", text, re.M)
    assert found is not None, "the README lost its curl line"
    line = found.group(0).replace(":8000/", f":{server}/").replace("Bearer K'", f"Bearer {KEY}'")
    with login(server, "ivy") as ivy:
        subscribe(ivy, "lobby")
        result = subprocess.run(
            ["sh", "-c", line], capture_output=True, text=True, timeout=15, check=True
        )
        seq = json.loads(result.stdout)["seq"]
        assert json.loads(ivy.recv(timeout=5)) == {
            "type": "grouped",
            "group": "lobby",
            "from": "backend",
            "text": "hello",
            "seq": seq,
        }


def test_the_cli_refuses_a_key_that_cannot_travel_in_a_header() -> None:
    result = subprocess.run(
        [*DEMO, "--port", str(free_port()), "--api-key", "two words"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "trio-ws-demo: --api-key: an API key must be non-empty printable ASCII without spaces"
    ]


def test_the_api_is_off_without_a_key() -> None:
    port = free_port()
    with process([*DEMO, "--port", str(port)], port, env={"TRIO_WS_API_KEY": ""}):
        with pytest.raises(ApiError) as info:
            Client(f"http://127.0.0.1:{port}", KEY).info()
    assert info.value.status == 404


def serves_the_form(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
            return bool(page.status == 200)
    except OSError:
        return False


def test_the_backend_form_demo_publishes_what_is_posted(server: int) -> None:
    form_port = free_port()
    command = [
        sys.executable,
        str(Path(ROOT, "demos", "backend_form.py")),
        "--port",
        str(form_port),
        "--server",
        f"http://127.0.0.1:{server}",
    ]
    with process(command, form_port, env={"TRIO_WS_API_KEY": KEY}, ready=serves_the_form):
        with urllib.request.urlopen(f"http://127.0.0.1:{form_port}/", timeout=5) as page:
            assert b"<form" in page.read()
        with login(server, "jo") as jo:
            subscribe(jo, "lobby")
            data = urllib.parse.urlencode({"group": "lobby", "text": "from the form"}).encode()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{form_port}/", data=data, timeout=5
            ) as answer:
                assert answer.status == 200
                assert b"Published as seq" in answer.read()
            message = json.loads(jo.recv(timeout=5))
            assert (message["group"], message["from"], message["text"]) == (
                "lobby",
                "backend",
                "from the form",
            )
