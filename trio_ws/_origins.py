"""Which browser pages may open a WebSocket: the Origin rule (RFC 6455 §10.2).

A page's ``Origin`` is accepted when it is one of the configured ``allowed_origins``
(compared as scheme, host and port, so ``https://App.example`` is
``https://app.example:443``), or when ``*`` is configured, or when it is *the server's
own origin*: the same scheme as the connection (``http`` on plain TCP, ``https`` on TLS),
the same host and port as the request's ``Host``, and a host the server trusts to be its
own: an IP address, ``localhost``, or one of the configured ``allowed_hosts``.

That last condition defeats DNS rebinding: a hostile page whose name was re-pointed at
this server sends ``Origin`` and ``Host`` both ``evil.example:PORT``, which match each
other but name no host the server was told is its own. A server reached by a domain name
lists that name in ``allowed_hosts`` (or its pages' origins in ``allowed_origins``).
A request without ``Origin`` (not from a browser) is not subject to this rule.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable

__all__ = ["OriginRule", "parse_origin"]

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def parse_origin(origin: str) -> Origin | None:
    """``"https://Example.com"`` -> ``("https", "example.com", 443)``; ``None`` for an
    origin that names no scheme and host (``"null"``, garbage)."""
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _split_host(host: str, default_port: int) -> tuple[str, int] | None:
    parsed = parse_origin(f"http://{host}")
    if parsed is None:
        return None
    _, name, port = parsed
    return name, port if f":{port}" in host else default_port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class OriginRule:
    """The Origin check of one server (see the module docstring)."""

    def __init__(self, allowed_origins: Iterable[str], allowed_hosts: Iterable[str]) -> None:
        origins = list(allowed_origins)
        self.any = "*" in origins
        self.origins = {p for p in map(parse_origin, origins) if p is not None}
        self.hosts = {h.lower().rstrip(".") for h in allowed_hosts}

    def allows(self, origin: str, host: str | None, *, secure: bool) -> bool:
        """Whether a page of ``origin`` may connect, given the request's ``Host``."""
        if self.any:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self.origins:
            return True
        scheme, name, port = parsed
        if host is None or scheme != ("https" if secure else "http"):
            return False
        requested = _split_host(host, 443 if secure else 80)
        if requested != (name, port):
            return False
        return _is_ip(name) or name == "localhost" or name in self.hosts
