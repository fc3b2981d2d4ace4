"""A real ``redis-server`` for tests: started on a free loopback port, stopped by PID.

:func:`start_redis` gives a :class:`RedisServer` handle that fault tests use to kill,
restart, pause (SIGSTOP) and resume (SIGCONT) the server. It never touches any other
Redis: the server runs with no persistence in a temporary directory, bound to 127.0.0.1.
A missing ``redis-server`` is an error, not a skip (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

__all__ = ["RedisServer", "start_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    def start(self, within: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        assert self.process is None
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} is missing: install redis-server (.ci/run does)")
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": self.directory,
            "logfile": os.path.join(self.directory, "redis.log"),
        }
        args = [REDIS_SERVER]
        for option, value in options.items():
            args += [f"--{option}", value]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + within
        while not _ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within {within} s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server (it loses everything: no persistence) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.paused = False

    def restart(self) -> None:
        """Start a fresh server on the same port (after :meth:`kill`, or killing it now)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Stop it for good (resumed first if paused, so it can die)."""
        if self.process is not None and self.paused:
            self.resume()
        self.kill()


@contextlib.contextmanager
def start_redis() -> Iterator[RedisServer]:
    """A running :class:`RedisServer` for the block; always stopped by PID afterwards."""
    with tempfile.TemporaryDirectory(prefix="trio-ws-redis-") as directory:
        server = RedisServer(directory)
        try:
            server.start()
            yield server
        finally:
            server.stop()
