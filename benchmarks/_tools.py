"""What the benchmark scripts share: optional imports, ``ws://`` targets, progress lines.

Each script runs as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import importlib
import ssl
import sys
import time
import urllib.parse
from types import ModuleType
from typing import NamedTuple


def need(module: str, why: str, extra: str = "bench") -> ModuleType:
    """Import ``module``, or exit with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = sys.argv[0].rsplit("/", 1)[-1]
        sys.exit(f"{name}: {why} needs {module}: pip install -e '.[{extra}]'")


class Target(NamedTuple):
    """A running server to measure, from a ``ws://`` or ``wss://`` URL."""

    url: str
    host: str
    port: int
    path: str
    """The request-target: path and query."""
    host_header: str
    tls: bool

    def ssl_context(self, *, verify: bool = True) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def handshake(self, key: str, path: str | None = None) -> bytes:
        """The upgrade request, for ``path`` (default: the URL's own)."""
        return (
            f"GET {path or self.path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()


def ws_url(value: str) -> Target:
    """``argparse`` type for ``--url``: ``ws://host:port/path`` or ``wss://...``."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not a ws:// or wss:// URL: {value!r}")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {value!r}: {exc}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        url=value,
        host=parts.hostname,
        port=port,
        path=path,
        host_header=parts.netloc.rpartition("@")[2],
        tls=parts.scheme == "wss",
    )


class Progress:
    """``[3/12, 1 min 20 s left] ...`` lines on stderr, the estimate from the steps so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.began = time.monotonic()

    def step(self, line: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.began
        left = elapsed / self.done * (self.total - self.done)
        eta = f", {format_duration(left)} left" if self.done < self.total else ""
        print(f"[{self.done}/{self.total}{eta}] {line}", file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def note(line: str) -> None:
    """A progress note on stderr (the results go to stdout)."""
    print(line, file=sys.stderr, flush=True)
