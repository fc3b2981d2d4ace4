"""Plain-HTTP answers on the WebSocket port: static files, ``/healthz``, ``/metrics``, and
the server API (:mod:`trio_ws._api`).

A request that is not a WebSocket upgrade is answered once and the connection closed
(``Connection: close``): the page, the dashboard, probes and backends need nothing more.
Exact-path routes answer GET and HEAD and never see a body. A prefix route
(:meth:`HttpRouter.add_prefix`) answers every method under its prefix and reads a body
itself, through the :data:`BodyReader` the server hands it: the route decides, from the
head, whether a body is worth reading before a byte of it is read.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import logging
import mimetypes
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources

import attrs

from .protocol._handshake import Request, build_response

log = logging.getLogger("trio_ws.http")


@attrs.frozen
class HttpResponse:
    """What a route answers with."""

    status: int = 200
    body: bytes | str = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head_only: bool = False) -> bytes:
        body = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        if head_only:
            headers = (*self.headers, ("Content-Length", str(len(body))))
            # The declared length is the GET body's (build_response keeps the caller's).
            return build_response(
                self.status, headers=headers, body=b"", content_type=self.content_type
            )
        return build_response(
            self.status, headers=self.headers, body=body, content_type=self.content_type
        )


Route = Callable[[Request], HttpResponse | Awaitable[HttpResponse]]

BodyReader = Callable[[int], Awaitable[bytes | None]]
"""``await read_body(n)``: exactly the ``n`` bytes of body after the head, or ``None`` if
the peer left or did not send them within the server's body timeout."""

PrefixRoute = Callable[[Request, BodyReader], Awaitable[HttpResponse]]


async def _no_body(_size: int) -> bytes | None:
    return None


def static_resource(package: str, name: str, *, content_type: str | None = None) -> Route:
    """A route serving one file shipped as package data (read once, on first request)."""
    cache: list[bytes] = []
    ctype = content_type or (mimetypes.guess_type(name)[0] or "application/octet-stream")
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"

    def route(_request: Request) -> HttpResponse:
        if not cache:
            cache.append(resources.files(package).joinpath(name).read_bytes())
        return HttpResponse(
            200,
            cache[0],
            ctype,
            (("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")),
        )

    return route


current_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trio_ws_current_peer", default=None
)
"""The peer address (``"host:port"``) of the request a route is answering, if known."""


def peer_is_loopback(peer: str | None = None) -> bool:
    """Whether the peer (by default of the request being answered) is on this machine."""
    if peer is None:
        peer = current_peer.get()
    if peer is None:
        return True  # an in-memory stream: nobody from the network
    host = peer.rpartition(":")[0].strip("[]") or peer
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def bearer_token_matches(request: Request, token: str) -> bool:
    """Whether the request carries ``token`` as ``Authorization: Bearer …`` or
    ``?token=…`` (compared in constant time)."""
    given = ""
    for name, value in request.headers:
        if name.lower() == "authorization" and value[:7].lower() == "bearer ":
            given = value[7:].strip()
            break
    else:
        given = urllib.parse.parse_qs(request.query).get("token", [""])[0]
    return hmac.compare_digest(given.encode(), token.encode())


class HttpRouter:
    """Exact-path routes for GET (and HEAD), and prefix routes for any method; 404 for
    unknown paths, 405 for other methods on an exact path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.prefixes: dict[str, PrefixRoute] = {}

    def add(self, path: str, route: Route) -> None:
        """Answer GET and HEAD at exactly ``path`` with ``route``."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self.routes[path] = route

    def add_prefix(self, prefix: str, route: PrefixRoute) -> None:
        """Answer every request whose path starts with ``prefix`` (ending in ``/``) with
        ``await route(request, read_body)``; the route answers methods and errors itself."""
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"a route prefix must start and end with '/': {prefix!r}")
        self.prefixes[prefix] = route

    async def respond(
        self, request: Request, read_body: BodyReader = _no_body
    ) -> tuple[int, bytes]:
        """Return the status and the encoded response for a plain HTTP request (an exact
        route wins over a prefix)."""
        for prefix, prefix_route in self.prefixes.items():
            if request.path.startswith(prefix) and request.path not in self.routes:
                try:
                    response = await prefix_route(request, read_body)
                except Exception:
                    log.exception("route %s failed", request.path)
                    response = HttpResponse(500, "internal server error\n")
                return response.status, response.encode(head_only=request.method == "HEAD")
        route = self.routes.get(request.path)
        if route is None:
            response = HttpResponse(404, "not found\n")
        elif request.method not in ("GET", "HEAD"):
            response = HttpResponse(405, "method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        else:
            try:
                result = route(request)
                response = result if isinstance(result, HttpResponse) else await result
            except Exception:
                log.exception("route %s failed", request.path)
                response = HttpResponse(500, "internal server error\n")
        return response.status, response.encode(head_only=request.method == "HEAD")
