"""The README's application example runs as written (only the final trio.run is replaced)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

import trio_ws

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_app() -> Any:
    text = README.read_text()
    code = re.search(r"## Writing an application\n\n```python\n(.*?)```", text, re.S)
    assert code is not None, "the README lost its application example"
    source = code.group(1)
    assert RUN in source
    namespace: dict[str, Any] = {}
    exec(source.replace(RUN, ""), namespace)
    return namespace["app"]


RUN = 'app.run("127.0.0.1", 8000)'


def test_the_readme_example_as_a_program_logs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    text = README.read_text()
    code = re.search(r"## Writing an application\n\n```python\n(.*?)```", text, re.S)
    assert code is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "app.py"
    script.write_text(code.group(1).replace("8000", str(port)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the example did not start serving"
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert f"open http://127.0.0.1:{port}/" in err  # it says where it serves
    assert "SIGINT: shutting down" in err


async def test_the_readme_example_serves_what_it_shows() -> None:
    app = readme_app()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            [address] = await nursery.start(app.serve, "127.0.0.1", 0)
            url = f"ws://{address}/ws"
            async with trio_ws.connect(url) as alice, trio_ws.connect(url) as bob:
                for conn, name in ((alice, "Alice"), (bob, "Bob")):
                    await conn.send({"type": "login", "name": name})
                    assert json.loads(await conn.receive()) == {"type": "welcome", "name": name}
                await alice.send({"type": "echo", "text": "hi"})
                assert json.loads(await alice.receive()) == {"type": "echo", "text": "hi"}
                await alice.send({"type": "routed", "to": "bob", "text": "yo"})
                assert json.loads(await bob.receive()) == {
                    "type": "routed",
                    "from": "Alice",
                    "text": "yo",
                }
                await alice.send({"type": "watch"})
                subscribed = json.loads(await alice.receive())
                assert subscribed["type"] == "subscribed"
                price = json.loads(await alice.receive())
                assert price == {"type": "price", "price": 42, "seq": subscribed["seq"] + 1}
                # A client that saw nothing yet asks for everything kept: 1, 2, ... then live.
                await bob.send({"type": "watch", "since": 0})
                last = json.loads(await bob.receive())["seq"]
                replayed = [json.loads(await bob.receive())["seq"] for _ in range(last + 1)]
                assert replayed == list(range(1, last + 2))
            nursery.cancel_scope.cancel()


async def test_the_readme_testing_example_passes(autojump_clock: trio.abc.Clock) -> None:
    code = re.search(r"### Testing an app\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "the README lost its testing example"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    await namespace["test_echo"](autojump_clock)
