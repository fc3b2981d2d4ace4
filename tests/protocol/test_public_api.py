"""``trio_ws.protocol`` is a public, documented surface: its names exist and its example runs."""

from __future__ import annotations

import doctest
import inspect

import pytest

import trio_ws.protocol

# What a user of the sans-IO core needs to run a connection in either role (issue 11):
# handshakes, deflate negotiation, the connection machine, its events and its errors.
REQUIRED = {
    "ServerHandshake",
    "ClientHandshake",
    "Request",
    "Response",
    "InvalidStatus",
    "negotiate_server",
    "client_offer",
    "negotiate_client",
    "PerMessageDeflate",
    "WebSocketProtocol",
    "ConnectionState",
    "Role",
    "TextMessage",
    "BytesMessage",
    "Ping",
    "Pong",
    "Close",
    "WebSocketError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "CloseCode",
}


def test_all_names_exist() -> None:
    names = trio_ws.protocol.__all__
    assert len(names) == len(set(names)), "a name is listed twice"
    missing = [name for name in names if not hasattr(trio_ws.protocol, name)]
    assert missing == []


def test_all_covers_what_a_connection_needs() -> None:
    assert REQUIRED <= set(trio_ws.protocol.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_ws.protocol import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(trio_ws.protocol.__all__)


@pytest.mark.parametrize("name", trio_ws.protocol.__all__)
def test_public_names_are_documented_and_from_the_core(name: str) -> None:
    obj = getattr(trio_ws.protocol, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__module__.startswith("trio_ws.protocol."), obj.__module__
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_the_module_docstring_example_runs() -> None:
    assert trio_ws.protocol.__doc__ is not None
    assert ">>> " in trio_ws.protocol.__doc__
    results = doctest.testmod(trio_ws.protocol, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 10
    assert results.failed == 0
