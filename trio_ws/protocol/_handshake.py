"""The RFC 6455 opening handshake, both roles, sans-IO.

Theory of operation
-------------------
Both roles read one HTTP/1.x head: bytes are appended to a buffer and searched for the
blank line that ends the head, resuming where the previous search stopped, so that parsing
stays linear whatever the chunking. The head limit is checked before anything more is
buffered for it (RFC 6455 §10.4 leaves limits to the implementation; we answer 431).

:class:`ServerHandshake` moves ``RECEIVING -> RECEIVED -> RESPONDED``; any error moves it to
``FAILED`` and is raised again on every later :meth:`ServerHandshake.receive_data` call.
``receive_data`` returns a :class:`Request` once the head is complete; the caller decides and
calls :meth:`ServerHandshake.accept` (the 101) or :meth:`ServerHandshake.reject` (any other
answer, also after a failure or before any request). A request whose ``Upgrade`` header names
no ``websocket`` token is a plain HTTP request: it is returned with ``is_websocket`` False so
that the runtime can answer it on the same port.

:class:`ClientHandshake` produces its request once through ``data_to_send()`` and validates
the answer in ``receive_data`` (RFC 6455 §4.1, "the client MUST validate the server's
response"). Bytes received after either head are kept in ``trailing_data`` for the
connection that takes over.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import http
import os
import re
from collections.abc import Sequence

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError
from ._headers import ExtensionOffer, is_token, parse_extensions, parse_token_list

__all__ = [
    "GUID",
    "ClientHandshake",
    "InvalidStatus",
    "Request",
    "Response",
    "ServerHandshake",
    "accept_key",
    "build_response",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The globally unique identifier of RFC 6455 §1.3, appended to the key before hashing."""

# A client's head holds few headers; the server's answer is not configurable, so bound it
# here (RFC 6455 §10.4: implementations SHOULD impose limits).
_CLIENT_MAX_HEADERS = 256

# RFC 7230 §3.2: field-value characters are VCHAR, SP, HTAB and obs-text; everything else
# (CR, LF, NUL, the other controls, DEL) is rejected.
_FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# RFC 7230 §5.3: the request-target has no whitespace; we accept visible ASCII only.
_TARGET_RE = re.compile(r"[\x21-\x7e]+")
# RFC 7230 §2.6: HTTP-version = "HTTP" "/" DIGIT "." DIGIT (ASCII digits, not \d).
_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")
# RFC 7230 §3.1.2: status-line = HTTP-version SP status-code SP reason-phrase; an absent
# reason phrase (and its space) is tolerated. The first digit of the code is its class
# (RFC 7231 §6: 1xx to 5xx), so "000" to "099" are no status at all.
_STATUS_LINE_RE = re.compile(
    r"HTTP/([0-9])\.([0-9]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?"
)

# Statuses whose responses carry no body and no Content-Length (RFC 7230 §3.3.2, §3.3.3).
_NO_BODY_STATUSES = frozenset({204, 304})


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``key`` (RFC 6455 §4.2.2 item 5.4).

    ``base64(sha1(key + GUID))``; the RFC's example key ``dGhlIHNhbXBsZSBub25jZQ==`` gives
    ``s3pPLMBiTxaQ9kYGzzhZRbK+xOo=``.
    """
    digest = hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------------------
# Reading one HTTP/1.x head


class _HeadBuffer:
    """Accumulates bytes until the blank line that ends an HTTP head.

    Lines end in CRLF; a bare LF is accepted too (RFC 7230 §3.5 allows recipients to).
    """

    def __init__(self, max_size: int, what: str) -> None:
        self._max_size = max_size
        self._what = what
        self._buffer = bytearray()
        # Everything before this index was searched already: a terminator can only start
        # in the last two bytes of a previous search or later.
        self._search_from = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """Append ``data``; return ``(head, rest)`` once the head is complete.

        ``head`` holds the start line and the header lines, each ending in LF; ``rest`` is
        everything after the blank line.

        Raises:
            RemoteProtocolError: no blank line within ``max_size`` bytes (status 431).
        """
        buffer = self._buffer
        buffer += data
        limit = min(len(buffer), self._max_size)
        end = None
        for terminator in (b"\n\n", b"\n\r\n"):
            index = buffer.find(terminator, self._search_from, limit)
            if index >= 0 and (end is None or index < end[0]):
                end = (index, index + len(terminator))
        if end is not None:
            head, rest = bytes(buffer[: end[0] + 1]), bytes(buffer[end[1] :])
            self._buffer = bytearray()
            return head, rest
        if len(buffer) > self._max_size:
            # RFC 6585 §5: 431 Request Header Fields Too Large.
            raise RemoteProtocolError(
                f"{self._what} head larger than {self._max_size} bytes", http_status=431
            )
        self._search_from = max(0, limit - 2)
        return None


def _bad_request(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, http_status=400)


def _split_head(head: bytes, max_headers: int) -> tuple[str, list[tuple[str, str]]]:
    """Split a complete head into its start line and its header fields (RFC 7230 §3).

    Bytes decode as ISO-8859-1, so every byte maps to one character and nothing here can
    fail to decode; the checks below decide what is allowed.

    Raises:
        RemoteProtocolError: a malformed line (400) or more than ``max_headers`` fields (431).
    """
    lines = head.decode("latin-1").split("\n")
    lines.pop()  # the head ends in LF, so the last element is empty
    lines = [line.removesuffix("\r") for line in lines]
    start_line = lines[0]
    if len(lines) - 1 > max_headers:
        raise RemoteProtocolError(f"more than {max_headers} header fields", http_status=431)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # RFC 7230 §3.2.4: a server MUST reject obs-fold in a request with 400.
            raise _bad_request("obsolete line folding in header field")
        name, colon, value = line.partition(":")
        if not colon:
            raise _bad_request(f"header line without a colon: {line[:64]!r}")
        # RFC 7230 §3.2.4: no whitespace is allowed between the field name and the colon;
        # a server MUST reject such a message with 400. The token check covers it.
        if not is_token(name):
            raise _bad_request(f"invalid header name {name[:64]!r}")
        value = value.strip(" \t")
        if _FIELD_VALUE_RE.fullmatch(value) is None:
            raise _bad_request(f"invalid characters in the value of header {name!r}")
        headers.append((_COMMON.get(name, name), _COMMON.get(value, value)))
    return start_line, headers


# Header names and values that nearly every WebSocket request repeats: each request's
# headers are kept for the life of its connection (Request.headers), and sharing these
# strings saves about 300 bytes per connection. A fixed set, so a peer cannot grow it.
_COMMON = {
    text: text
    for text in (
        "Host",
        "host",
        "Upgrade",
        "upgrade",
        "Connection",
        "connection",
        "Sec-WebSocket-Key",
        "sec-websocket-key",
        "Sec-WebSocket-Version",
        "sec-websocket-version",
        "Sec-WebSocket-Extensions",
        "sec-websocket-extensions",
        "Sec-WebSocket-Protocol",
        "sec-websocket-protocol",
        "Origin",
        "origin",
        "User-Agent",
        "user-agent",
        "Accept-Encoding",
        "Accept-Language",
        "Cache-Control",
        "Pragma",
        "Cookie",
        "websocket",
        "13",
        "no-cache",
        "gzip, deflate, br, zstd",
        "gzip, deflate, br",
        "permessage-deflate; client_max_window_bits",
    )
}


def _get_all(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """The values of every ``name`` header; ``name`` is lowercase (callers spell it so)."""
    return [value for key, value in headers if key.lower() == name]


def _tokens(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """All tokens of every ``name`` header, lowercased (for case-insensitive headers)."""
    return [token.lower() for value in _get_all(headers, name) for token in parse_token_list(value)]


def _check_outgoing_headers(headers: Sequence[tuple[str, str]]) -> None:
    """Refuse header fields that would break the message we write (header injection)."""
    for name, value in headers:
        if not is_token(name):
            raise LocalProtocolError(f"invalid header name {name!r}")
        if _FIELD_VALUE_RE.fullmatch(value) is None or value != value.strip(" \t"):
            raise LocalProtocolError(f"invalid value for header {name!r}: {value!r}")


def _render(start_line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


# ---------------------------------------------------------------------------------------
# Server role


@attrs.frozen
class Request:
    """An HTTP request head, as the server handshake received it.

    For a WebSocket upgrade (``is_websocket``) every requirement of RFC 6455 §4.2.1 was
    checked already; a plain HTTP request is only known to be well-formed HTTP/1.x.
    """

    method: str
    """The request method, e.g. ``"GET"``."""
    target: str
    """The raw request-target, e.g. ``"/ws?room=1"``."""
    path: str
    """The part of ``target`` before the first ``"?"``."""
    query: str
    """The part of ``target`` after the first ``"?"``; ``""`` if none."""
    http_version: str
    """``"1.1"`` or ``"1.0"``."""
    headers: tuple[tuple[str, str], ...]
    """Every header field in order, names as received (case preserved)."""
    is_websocket: bool
    """True for a valid RFC 6455 upgrade request, False for a plain HTTP request."""
    _extensions: tuple[ExtensionOffer, ...] = attrs.field(init=False, repr=False, eq=False)
    _subprotocols: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # Parsed once, here, so that bad syntax in an upgrade request is a 400 from
        # receive_data rather than an exception from a property later.
        try:
            offered = ", ".join(_get_all(self.headers, "sec-websocket-extensions"))
            offers = tuple(parse_extensions(offered))
        except RemoteProtocolError:
            if self.is_websocket:
                raise
            offers = ()
        object.__setattr__(self, "_extensions", offers)
        # RFC 6455 §4.1 item 10 and §11.3.4: the header is a list of tokens (1#token). A
        # value that is not one could only be echoed into an invalid 101 response.
        subprotocols = tuple(
            token
            for value in _get_all(self.headers, "sec-websocket-protocol")
            for token in parse_token_list(value)
        )
        for token in subprotocols:
            if not is_token(token):
                if self.is_websocket:
                    raise _bad_request(f"invalid subprotocol {token[:64]!r}, not a token")
                subprotocols = ()
                break
        object.__setattr__(self, "_subprotocols", subprotocols)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), several joined with ``", "``."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        """The values of every header called ``name`` (case-insensitive), in order."""
        return _get_all(self.headers, name.lower())

    @property
    def host(self) -> str | None:
        """The ``Host`` header."""
        return self.get("Host")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header (RFC 6455 §4.2.1 item 7, §10.2)."""
        return self.get("Origin")

    @property
    def key(self) -> str | None:
        """The ``Sec-WebSocket-Key`` header."""
        return self.get("Sec-WebSocket-Key")

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The offered subprotocols in order, from every ``Sec-WebSocket-Protocol`` header."""
        return self._subprotocols

    @property
    def extensions(self) -> tuple[ExtensionOffer, ...]:
        """The offered extensions in order, from every ``Sec-WebSocket-Extensions`` header."""
        return self._extensions

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies of every ``Cookie`` header (``"a=b; c=d"``); the first of a name wins.

        Parsing is deliberately simple and never raises: pieces without ``=`` or without a
        name are skipped, and one pair of surrounding double quotes is removed from values.
        """
        cookies: dict[str, str] = {}
        for header in self.get_all("Cookie"):
            for piece in header.split(";"):
                name, equals, value = piece.partition("=")
                name = name.strip(" \t")
                if not equals or not name:
                    continue
                value = value.strip(" \t")
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                cookies.setdefault(name, value)
        return cookies


class _ServerState(enum.Enum):
    RECEIVING = "receiving"  # the head is not complete yet
    RECEIVED = "received"  # a Request was returned, no answer yet
    RESPONDED = "responded"  # accept() or reject() produced the answer
    FAILED = "failed"  # receive_data raised; reject() may still answer


def _parse_request(head: bytes, max_headers: int) -> Request:
    start_line, headers = _split_head(head, max_headers)
    # RFC 7230 §3.1.1: request-line = method SP request-target SP HTTP-version.
    parts = start_line.split(" ")
    if len(parts) != 3:
        raise _bad_request(f"malformed request line {start_line[:100]!r}")
    method, target, version = parts
    if not is_token(method):
        raise _bad_request(f"invalid method {method[:32]!r}")
    if _TARGET_RE.fullmatch(target) is None:
        raise _bad_request(f"invalid request target {target[:100]!r}")
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise _bad_request(f"invalid HTTP version {version[:32]!r}")
    if match.group(1) != "1":
        # RFC 7231 §6.6.6: 505 HTTP Version Not Supported.
        raise RemoteProtocolError(f"unsupported HTTP version {version!r}", http_status=505)
    http_version = f"{match.group(1)}.{match.group(2)}"
    hosts = _get_all(headers, "host")
    # RFC 7230 §5.4: "A server MUST respond with a 400 (Bad Request) status code to any
    # HTTP/1.1 request message that lacks a Host header field and to any request message
    # that contains more than one Host header field".
    if len(hosts) > 1:
        raise _bad_request("more than one Host header")
    if not hosts and http_version != "1.0":
        raise _bad_request("missing Host header")
    is_websocket = "websocket" in _tokens(headers, "upgrade")
    if is_websocket:
        _check_upgrade(method, http_version, headers)
    path, _, query = target.partition("?")
    return Request(
        method=method,
        target=target,
        path=path,
        query=query,
        http_version=http_version,
        headers=tuple(headers),
        is_websocket=is_websocket,
    )


def _check_upgrade(method: str, http_version: str, headers: list[tuple[str, str]]) -> None:
    """Check an upgrade request against RFC 6455 §4.2.1 (the caller found the Upgrade)."""
    # §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if method != "GET":
        raise _bad_request(f"WebSocket upgrade with method {method}, not GET")
    if http_version == "1.0":
        raise _bad_request("WebSocket upgrade over HTTP/1.0; HTTP/1.1 is required")
    # §4.2.1 item 2: "A |Host| header field" (its presence was checked for HTTP/1.1 already).
    if not _get_all(headers, "host"):
        raise _bad_request("missing Host header")
    # §4.2.1 item 4: "A |Connection| header field that includes the token 'Upgrade'".
    if "upgrade" not in _tokens(headers, "connection"):
        raise _bad_request("Connection header lacks the Upgrade token")
    # §4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that,
    # when decoded, is 16 bytes in length".
    keys = _get_all(headers, "sec-websocket-key")
    if not keys:
        raise _bad_request("missing Sec-WebSocket-Key header")
    if len(keys) > 1:
        raise _bad_request("more than one Sec-WebSocket-Key header")
    try:
        raw_key = base64.b64decode(keys[0], validate=True)  # a str: ASCII only
    except ValueError:  # not ASCII, or binascii.Error: not base64
        raise _bad_request(f"Sec-WebSocket-Key {keys[0][:64]!r} is not base64") from None
    if len(raw_key) != 16:
        raise _bad_request(f"Sec-WebSocket-Key {keys[0][:64]!r} does not decode to 16 bytes")
    # §4.2.1 item 6: "A |Sec-WebSocket-Version| header field, with a value of 13".
    versions = _get_all(headers, "sec-websocket-version")
    if not versions:
        raise _bad_request("missing Sec-WebSocket-Version header")
    if versions != ["13"]:
        # §4.2.2 item 4: answer an unsupported version with 426 Upgrade Required and the
        # versions we do support (reject(426) adds Sec-WebSocket-Version: 13).
        raise RemoteProtocolError(
            f"unsupported Sec-WebSocket-Version {', '.join(versions)[:32]!r}", http_status=426
        )
    # §9.1 syntax of Sec-WebSocket-Extensions: checked by Request itself (400).


class ServerHandshake:
    """The server side of the opening handshake (RFC 6455 §4.2).

    Args:
        max_head_size: the largest request head accepted, in bytes, blank line included;
            a larger head is answered with 431.
        max_headers: the most header fields accepted; more are answered with 431.
    """

    def __init__(self, *, max_head_size: int = 8192, max_headers: int = 128) -> None:
        if max_head_size < 16:
            raise ValueError(f"max_head_size must be at least 16, not {max_head_size}")
        if max_headers < 0:
            raise ValueError(f"max_headers must not be negative, not {max_headers}")
        self._head = _HeadBuffer(max_head_size, "request")
        self._max_headers = max_headers
        self._state = _ServerState.RECEIVING
        self._error: RemoteProtocolError | None = None
        self._request: Request | None = None
        self._trailing = bytearray()

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the request head (early frames), for the connection."""
        return bytes(self._trailing)

    @property
    def request(self) -> Request | None:
        """The request returned by :meth:`receive_data`, if any yet."""
        return self._request

    def receive_data(self, data: bytes) -> Request | None:
        """Feed bytes from the client.

        Returns:
            None until the head is complete, then the :class:`Request` (once). Bytes after
            the head, now or in later calls, go to :attr:`trailing_data`.

        Raises:
            RemoteProtocolError: the request is malformed or invalid; ``http_status`` says
                how to answer (400, 426, 431, 505). Errors are sticky: every later call
                raises the same error again.
        """
        if self._error is not None:
            # A fresh traceback each time: re-raising the instance would extend its old
            # one by a frame per call, for as long as a caller keeps feeding us.
            raise self._error.with_traceback(None)
        if self._state is not _ServerState.RECEIVING:
            self._trailing += data
            return None
        try:
            complete = self._head.feed(data)
            if complete is None:
                return None
            head, rest = complete
            request = _parse_request(head, self._max_headers)
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = _ServerState.FAILED
            raise
        self._trailing += rest
        self._request = request
        self._state = _ServerState.RECEIVED
        return request

    def accept(
        self,
        *,
        subprotocol: str | None = None,
        extensions: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Accept the upgrade: the ``101 Switching Protocols`` response (RFC 6455 §4.2.2).

        Args:
            subprotocol: the subprotocol chosen among those the client offered.
            extensions: the accepted extensions, each already serialised as a response
                element (e.g. by the permessage-deflate negotiation); joined with ``", "``.
            headers: more header fields to send, after ours.

        Raises:
            LocalProtocolError: no valid WebSocket request was received, the request was
                answered already, ``subprotocol`` was not offered (§4.2.2 item 5.4 "MUST be
                one of the values from the client's handshake"), or a header is invalid.
        """
        request = self._request
        if self._state is not _ServerState.RECEIVED or request is None:
            raise LocalProtocolError(f"cannot accept in state {self._state.name}")
        if not request.is_websocket or request.key is None:
            raise LocalProtocolError("cannot accept a plain HTTP request as a WebSocket")
        if subprotocol is not None and subprotocol not in request.subprotocols:
            raise LocalProtocolError(f"subprotocol {subprotocol!r} was not offered")
        fields = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(request.key)),
        ]
        if subprotocol is not None:
            fields.append(("Sec-WebSocket-Protocol", subprotocol))
        if extensions:
            fields.append(("Sec-WebSocket-Extensions", ", ".join(extensions)))
        fields.extend(headers)
        _check_outgoing_headers(fields)
        self._state = _ServerState.RESPONDED
        return _render("HTTP/1.1 101 Switching Protocols", fields)

    def reject(
        self,
        status: int,
        *,
        body: bytes | str = b"",
        headers: Sequence[tuple[str, str]] = (),
        content_type: str = "text/plain; charset=utf-8",
    ) -> bytes:
        """Refuse the handshake (or answer a plain request) with a complete HTTP response.

        The response closes the connection (``Connection: close``). A 426 answer lists the
        version we support, ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.2.2 item 4). Callable
        before any request (e.g. 503 when full) and after :meth:`receive_data` raised.

        Raises:
            LocalProtocolError: the request was answered already, or a header is invalid.
        """
        if self._state is _ServerState.RESPONDED:
            raise LocalProtocolError("the handshake was answered already")
        fields = list(headers)
        if status == 426 and not _get_all(fields, "sec-websocket-version"):
            fields.append(("Sec-WebSocket-Version", "13"))
        response = build_response(status, headers=fields, body=body, content_type=content_type)
        self._state = _ServerState.RESPONDED
        return response


def build_response(
    status: int,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | str = b"",
    content_type: str | None = "text/plain; charset=utf-8",
    keep_alive: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response: status line, headers, blank line and body.

    Adds ``Content-Type`` (unless ``content_type`` is None or ``headers`` has one),
    ``Content-Length`` (unless ``headers`` has one, e.g. for a HEAD answer) and
    ``Connection: close`` (unless ``keep_alive`` or ``headers`` has a ``Connection``).
    1xx, 204 and 304 responses get neither a body nor these framing headers
    (RFC 7230 §3.3.2, §3.3.3).

    Args:
        status: the status code; the reason phrase is the standard one (``http.HTTPStatus``).
        headers: header fields, written before the ones added here.
        body: the body; ``str`` is encoded as UTF-8.
        content_type: the ``Content-Type`` of the body.
        keep_alive: leave the connection open after this response (HTTP/1.1 default).

    Raises:
        LocalProtocolError: an invalid status or header, or a body where none is allowed.
    """
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"invalid HTTP status {status}")
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    payload = body.encode() if isinstance(body, str) else bytes(body)
    fields = list(headers)
    has_body = not (status < 200 or status in _NO_BODY_STATUSES)
    if not has_body and payload:
        raise LocalProtocolError(f"a {status} response cannot have a body")
    if has_body:
        if content_type is not None and not _get_all(fields, "content-type"):
            fields.append(("Content-Type", content_type))
        if not _get_all(fields, "content-length"):
            fields.append(("Content-Length", str(len(payload))))
    if not keep_alive and not _get_all(fields, "connection"):
        fields.append(("Connection", "close"))
    _check_outgoing_headers(fields)
    return _render(f"HTTP/1.1 {status} {reason}".rstrip(" "), fields) + payload


# ---------------------------------------------------------------------------------------
# Client role


@attrs.frozen
class Response:
    """The server's answer to the client handshake."""

    status: int
    """The HTTP status code (101 when the handshake succeeded)."""
    headers: tuple[tuple[str, str], ...]
    """Every header field in order, names as received."""
    subprotocol: str | None
    """The subprotocol the server chose, if any."""
    extensions: tuple[ExtensionOffer, ...]
    """The extensions the server accepted, with their response parameters."""


class InvalidStatus(RemoteProtocolError):
    """The server answered the handshake with a status other than 101.

    Attributes:
        response: the response head.
        body: the body bytes received with the head (may be partial or empty).
    """

    def __init__(self, response: Response, body: bytes = b"") -> None:
        super().__init__(f"server rejected the WebSocket handshake with HTTP {response.status}")
        self.response = response
        self.body = body


def _client_error(exc: RemoteProtocolError) -> RemoteProtocolError:
    """The same complaint without an HTTP status: a client has no response to send."""
    return RemoteProtocolError(exc.reason, close_code=exc.close_code)


class ClientHandshake:
    """The client side of the opening handshake (RFC 6455 §4.1).

    Args:
        host: the ``Host`` header value (``"example.com"`` or ``"example.com:8080"``).
        target: the request-target, the resource name with its query.
        subprotocols: subprotocols to offer, in order of preference.
        extensions: ``Sec-WebSocket-Extensions`` elements to offer, already serialised.
        origin: the ``Origin`` header, if any.
        headers: more header fields to send, after ours.
        max_head_size: the largest response head accepted, in bytes.

    Raises:
        LocalProtocolError: an argument cannot be sent as given.
    """

    def __init__(
        self,
        host: str,
        target: str = "/",
        *,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[str] = (),
        origin: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        max_head_size: int = 65536,
    ) -> None:
        if _TARGET_RE.fullmatch(target) is None:
            raise LocalProtocolError(f"invalid request target {target!r}")
        for subprotocol in subprotocols:
            if not is_token(subprotocol):
                raise LocalProtocolError(f"subprotocol {subprotocol!r} is not a token")
        try:
            offered = [offer for value in extensions for offer in parse_extensions(value)]
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason) from None
        self._subprotocols = tuple(subprotocols)
        self._extension_names = frozenset(offer.name for offer in offered)
        # §4.1 item 7: "a randomly selected 16-byte value that has been base64-encoded".
        self.key = base64.b64encode(os.urandom(16)).decode()
        fields = [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if origin is not None:
            fields.append(("Origin", origin))
        if subprotocols:
            fields.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
        if extensions:
            fields.append(("Sec-WebSocket-Extensions", ", ".join(extensions)))
        fields.extend(headers)
        _check_outgoing_headers(fields)
        self._to_send = _render(f"GET {target} HTTP/1.1", fields)
        self._head = _HeadBuffer(max_head_size, "response")
        self._error: RemoteProtocolError | None = None
        self._response: Response | None = None
        self._trailing = bytearray()

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the response head (early frames), for the connection."""
        return bytes(self._trailing)

    @property
    def response(self) -> Response | None:
        """The successful response returned by :meth:`receive_data`, if any yet."""
        return self._response

    def data_to_send(self) -> bytes:
        """The request to write; returned once, then ``b""``."""
        data, self._to_send = self._to_send, b""
        return data

    def receive_data(self, data: bytes) -> Response | None:
        """Feed bytes from the server.

        Returns:
            None until the response head is complete, then the :class:`Response` of a
            valid 101 (once). Later bytes go to :attr:`trailing_data`.

        Raises:
            InvalidStatus: the status is not 101.
            RemoteProtocolError: the head is malformed or too large, or the 101 fails the
                checks of RFC 6455 §4.1 (close code 1002, no HTTP status). Errors are sticky.
        """
        if self._error is not None:
            # A fresh traceback each time: re-raising the instance would extend its old
            # one by a frame per call, for as long as a caller keeps feeding us.
            raise self._error.with_traceback(None)
        if self._response is not None:
            self._trailing += data
            return None
        try:
            complete = self._head.feed(data)
            if complete is None:
                return None
            head, rest = complete
            response = self._parse_response(head, rest)
        except RemoteProtocolError as exc:
            error = exc if isinstance(exc, InvalidStatus) else _client_error(exc)
            self._error = error
            raise error from None
        self._trailing += rest
        self._response = response
        return response

    def _parse_response(self, head: bytes, rest: bytes) -> Response:
        start_line, headers = _split_head(head, _CLIENT_MAX_HEADERS)
        match = _STATUS_LINE_RE.fullmatch(start_line)
        if match is None or match.group(1) != "1":
            raise RemoteProtocolError(f"malformed status line {start_line[:100]!r}")
        status = int(match.group(3))
        if status != 101:
            raise InvalidStatus(Response(status, tuple(headers), None, ()), rest)
        # §4.1 items 2 to 6 of the response checks: "If ... the client MUST _Fail the
        # WebSocket Connection_".
        if "websocket" not in _tokens(headers, "upgrade"):
            raise RemoteProtocolError("101 response without Upgrade: websocket")
        if "upgrade" not in _tokens(headers, "connection"):
            raise RemoteProtocolError("101 response without Connection: Upgrade")
        accepts = _get_all(headers, "sec-websocket-accept")
        if accepts != [accept_key(self.key)]:
            raise RemoteProtocolError("wrong or missing Sec-WebSocket-Accept")
        protocols = [
            token
            for value in _get_all(headers, "sec-websocket-protocol")
            for token in parse_token_list(value)
        ]
        if len(protocols) > 1:
            raise RemoteProtocolError("server chose more than one subprotocol")
        subprotocol = protocols[0] if protocols else None
        if subprotocol is not None and subprotocol not in self._subprotocols:
            raise RemoteProtocolError(f"server chose subprotocol {subprotocol!r}, not offered")
        # §4.1 item 5 of the response checks: an extension "not present in the client's
        # handshake" fails the connection.
        accepted = ", ".join(_get_all(headers, "sec-websocket-extensions"))
        extensions = tuple(parse_extensions(accepted))
        for extension in extensions:
            if extension.name not in self._extension_names:
                raise RemoteProtocolError(
                    f"server accepted extension {extension.name!r}, which was not offered"
                )
        return Response(status, tuple(headers), subprotocol, extensions)
