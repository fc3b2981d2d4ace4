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

__all__ = [
    "RedisCluster",
    "RedisServer",
    "start_redis",
    "cli",
    "start_redis_cluster",
    "start_replica",
    "start_sentinel",
]

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_port() -> int:
    """A free port whose cluster bus port (``port + 10000``) is free too."""
    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(
        self,
        directory: str,
        extra: dict[str, str] | None = None,
        *,
        sentinel: str | None = None,
    ) -> None:
        self.directory = directory
        self.sentinel = sentinel
        """The config of a Sentinel (``redis-server <conf> --sentinel``), for one rather
        than a data server."""
        self.extra = dict(extra or {})
        """More ``redis-server`` options (cluster mode, sentinel mode)."""
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
            "dir": self.directory,
            "logfile": os.path.join(self.directory, f"redis-{self.port}.log"),
        }
        if self.sentinel is None:
            options.update({"save": "", "appendonly": "no"})
        options.update(self.extra)
        args = [REDIS_SERVER]
        if self.sentinel is not None:  # Sentinel rewrites its config file: one of its own
            config = os.path.join(self.directory, f"sentinel-{self.port}.conf")
            with open(config, "w") as file:
                file.write(self.sentinel)
            args += [config, "--sentinel"]
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


class RedisCluster:
    """A Redis Cluster of ``shards`` primaries (no replicas) on free loopback ports.

    Each primary is a :class:`RedisServer` in cluster mode (its cluster config file in the
    temporary directory); ``redis-cli --cluster create`` assigns the slots; :meth:`start`
    returns once every node says ``cluster_state:ok``.
    """

    def __init__(self, directory: str, shards: int = 3) -> None:
        self.directory = directory
        self.servers = [
            RedisServer(
                directory,
                {
                    "cluster-enabled": "yes",
                    "cluster-config-file": os.path.join(directory, f"nodes-{i}.conf"),
                    "cluster-node-timeout": "5000",
                },
            )
            for i in range(shards)
        ]
        for server in self.servers:
            server.port = _cluster_port()

    @property
    def url(self) -> str:
        """The broker URL: every primary as a seed node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def cli(self, port: int, *args: str) -> str:
        """Run ``redis-cli -p port args...`` and return its output."""
        return cli(port, *args)

    def start(self, within: float = 20.0) -> None:
        for server in self.servers:
            server.start()
        self.cli(
            self.servers[0].port,
            "--cluster",
            "create",
            *(f"127.0.0.1:{s.port}" for s in self.servers),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        )
        deadline = time.monotonic() + within
        while not all(
            "cluster_state:ok" in self.cli(s.port, "CLUSTER", "INFO") for s in self.servers
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster was not ok within {within} s")
            time.sleep(0.05)

    def server_for(self, key: str) -> RedisServer:
        """The primary that serves ``key``'s slot (a key, or a shard channel)."""
        slot = int(self.cli(self.servers[0].port, "CLUSTER", "KEYSLOT", key))
        for server in self.servers:
            for line in self.cli(server.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if int(low) <= slot <= int(high or low):
                        return server
        raise LookupError(f"no primary serves slot {slot}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def start_redis_cluster(shards: int = 3) -> Iterator[RedisCluster]:
    """A running :class:`RedisCluster` for the block; every process stopped by PID after."""
    with tempfile.TemporaryDirectory(prefix="trio-ws-redis-cluster-") as directory:
        cluster = RedisCluster(directory, shards)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def cli(port: int, *args: str) -> str:
    """Run ``redis-cli -p port args...`` on 127.0.0.1 and return its output."""
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode()


@contextlib.contextmanager
def start_replica(primary: RedisServer, within: float = 10.0) -> Iterator[RedisServer]:
    """A replica of ``primary``, returned once its link is up; stopped by PID after."""
    cli(primary.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")  # sync at once
    with tempfile.TemporaryDirectory(prefix="trio-ws-replica-") as directory:
        server = RedisServer(directory, {"replicaof": f"127.0.0.1 {primary.port}"})
        try:
            server.start()
            deadline = time.monotonic() + within
            while "master_link_status:up" not in cli(server.port, "INFO", "replication"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica was not in sync within {within} s")
                time.sleep(0.02)
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def start_sentinel(
    primary: RedisServer,
    service: str = "trio-ws",
    *,
    down_after_ms: int = 30000,
    replicas: int = 0,
    within: float = 10.0,
) -> Iterator[RedisServer]:
    """A Sentinel that monitors ``primary`` as ``service`` (quorum 1: it alone decides a
    failover, ``down_after_ms`` after the primary stops answering), returned once it knows
    ``replicas`` replicas; stopped by PID after."""
    with tempfile.TemporaryDirectory(prefix="trio-ws-sentinel-") as directory:
        config = (
            f"sentinel monitor {service} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 2000\n"
        )
        server = RedisServer(directory, sentinel=config)
        try:
            server.start()
            deadline = time.monotonic() + within
            while f"slaves={replicas}," not in cli(server.port, "INFO", "sentinel"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Sentinel found no {replicas} replicas in {within} s")
                time.sleep(0.02)
            yield server
        finally:
            server.stop()
