"""``trio-ws-demo --workers N --broker redis://...``: N processes on one port, one cluster.

A real redis-server (started here on a free port) joins the workers. The kernel spreads
new connections over the workers (SO_REUSEPORT); ``/healthz`` names the node that
answered, so the test sees every worker serve, a killed worker come back, and a SIGTERM
stop them all with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from websockets.sync.client import connect

from tests.redis_fixture import start_redis

DEMO = [str(Path(sys.executable).with_name("trio-ws-demo"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_of(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return str(json.loads(response.read())["broker"]["node"])
    except OSError:
        return None


def until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def worker_pids(parent: int) -> set[int]:
    """The children of ``parent`` (from /proc: no extra dependency)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_workers_share_the_port_come_back_when_killed_and_stop_together() -> None:
    port = free_port()
    with start_redis() as redis:
        proc = subprocess.Popen(
            [*DEMO, "--port", str(port), "--workers", "2", "--broker", redis.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            until(lambda: node_of(port) is not None, 20, "the workers did not start")
            nodes: set[str] = set()
            until(
                lambda: bool(nodes.add(node_of(port) or "") or len(nodes - {""}) == 2),
                20,
                f"expected two nodes answering, saw {nodes}",
            )
            # One cluster: a name held through one worker is taken for the other too.
            with connect(f"ws://127.0.0.1:{port}/ws") as first:
                first.send(json.dumps({"type": "login", "name": "Solo"}))
                assert json.loads(first.recv(timeout=5))["type"] == "welcome"
                for _ in range(6):  # new connections land on either worker
                    with connect(f"ws://127.0.0.1:{port}/ws") as other:
                        other.send(json.dumps({"type": "login", "name": "SOLO"}))
                        assert json.loads(other.recv(timeout=5))["code"] == "name_taken"
            pids = worker_pids(proc.pid)
            assert len(pids) == 2
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            until(lambda: len(worker_pids(proc.pid) - {victim}) == 2, 20, "no worker restarted")
            seen_after: set[str] = set()
            until(
                lambda: bool(seen_after.add(node_of(port) or "") or len(seen_after - {""}) == 2),
                20,
                "the restarted worker does not serve",
            )
            assert seen_after - {""} != nodes - {""}  # a new node took the dead one's place
            survivors = worker_pids(proc.pid)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert "exited with status -9; restarting" in err
    assert f"http://127.0.0.1:{port}/" in out
    until(lambda: not any(alive(pid) for pid in survivors), 10, "workers left behind")
