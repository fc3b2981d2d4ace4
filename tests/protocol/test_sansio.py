"""The protocol core stays sans-IO: no module under trio_ws/protocol/ imports an I/O library.

STYLE.md rule 1: bytes in, events out, bytes out; the core never awaits, never touches a
socket and never reads a clock. The check walks the AST, so imports inside functions,
``try`` blocks and ``if TYPE_CHECKING`` blocks are caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_ws.protocol

PROTOCOL_DIR = Path(trio_ws.protocol.__file__).parent
FORBIDDEN = frozenset({"trio", "socket", "ssl", "asyncio", "selectors", "time", "threading"})


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Names of forbidden modules imported anywhere in ``source`` (submodules included)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [m for m in modules if m.split(".")[0] in FORBIDDEN]
    return found


def protocol_files() -> list[Path]:
    files = sorted(PROTOCOL_DIR.rglob("*.py"))
    assert files, f"no Python files under {PROTOCOL_DIR}"
    return files


@pytest.mark.parametrize("path", protocol_files(), ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), str(path)) == []


def test_the_core_modules_are_checked() -> None:
    names = {p.name for p in protocol_files()}
    assert {"_frames.py", "_connection.py", "_events.py", "_errors.py"} <= names


@pytest.mark.parametrize(
    "source",
    [
        "import trio",
        "import trio.lowlevel",
        "import os, socket",
        "import ssl as _ssl",
        "from asyncio import sleep",
        "from selectors import DefaultSelector",
        "from time import monotonic",
        "import threading",
        "from trio.testing import memory_stream_pair",
        "def f():\n    import time\n",
        "try:\n    import trio\nexcept ImportError:\n    pass\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "import os, struct, zlib",
        "from . import _frames",
        "from .time import x",  # a relative module that merely shares the name
        "import timeit",
        "import trio_ws",
        "import sockets_helper",
    ],
)
def test_checker_allows_other_imports(source: str) -> None:
    assert forbidden_imports(source) == []
