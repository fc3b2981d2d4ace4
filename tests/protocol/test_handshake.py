"""The opening handshake (RFC 6455 §4) and the header parsers it relies on."""

from __future__ import annotations

import base64

import pytest
import wsproto
import wsproto.events
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol import _handshake
from trio_ws.protocol._errors import LocalProtocolError, RemoteProtocolError
from trio_ws.protocol._handshake import (
    GUID,
    ClientHandshake,
    InvalidStatus,
    Request,
    ServerHandshake,
    accept_key,
    build_response,
)
from trio_ws.protocol._headers import (
    ExtensionOffer,
    parse_extensions,
    parse_token_list,
    serialize_extension,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# The header set Chrome 120 sends when a page opens ``new WebSocket(url, ["chat",
# "superchat"])``, in Chrome's order.
CHROME_HEADERS = [
    ("Host", "localhost:8000"),
    ("Connection", "Upgrade"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
    ),
    ("Upgrade", "websocket"),
    ("Origin", "http://localhost:8000"),
    ("Sec-WebSocket-Version", "13"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Cookie", "session=abc123; theme=dark"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Sec-WebSocket-Protocol", "chat, superchat"),
]


def make_request(
    headers: list[tuple[str, str]] | None = None,
    *,
    request_line: str = "GET /chat?room=1 HTTP/1.1",
    drop: tuple[str, ...] = (),
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """A request head: Chrome's headers by default, minus ``drop``, plus ``extra``."""
    fields = CHROME_HEADERS if headers is None else headers
    fields = [(n, v) for n, v in fields if n.lower() not in {d.lower() for d in drop}]
    fields += extra or []
    lines = [request_line, *(f"{n}: {v}" for n, v in fields), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def receive(data: bytes, **kwargs: int) -> Request:
    server = ServerHandshake(**kwargs)
    request = server.receive_data(data)
    assert request is not None
    return request


def expect_status(data: bytes, status: int, **kwargs: int) -> RemoteProtocolError:
    server = ServerHandshake(**kwargs)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data)
    assert info.value.http_status == status, info.value
    # Sticky: the same error again, even for more (valid-looking) bytes.
    with pytest.raises(RemoteProtocolError) as again:
        server.receive_data(b"\r\n\r\n")
    assert again.value is info.value
    return info.value


def split_head(data: bytes) -> list[tuple[str, str]]:
    """The header fields of a response head, for exact comparison."""
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(n, v) for n, _, v in (line.partition(": ") for line in lines)]


# -------------------------------------------------------------------------------------
# Accept key and header parsers


def test_accept_key_rfc_example() -> None:
    # RFC 6455 §1.3.
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key(RFC_KEY) == RFC_ACCEPT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("permessage-deflate", [ExtensionOffer("permessage-deflate")]),
        (
            "permessage-deflate; client_max_window_bits",
            [ExtensionOffer("permessage-deflate", (("client_max_window_bits", None),))],
        ),
        (
            'permessage-deflate;client_max_window_bits="10" ; server_no_context_takeover, '
            "permessage-deflate",
            [
                ExtensionOffer(
                    "permessage-deflate",
                    (("client_max_window_bits", "10"), ("server_no_context_takeover", None)),
                ),
                ExtensionOffer("permessage-deflate"),
            ],
        ),
        ("a; b = c , , d", [ExtensionOffer("a", (("b", "c"),)), ExtensionOffer("d")]),
        ('x; y="\\z"', [ExtensionOffer("x", (("y", "z"),))]),
        ("x; y=1; y=2", [ExtensionOffer("x", (("y", "1"), ("y", "2")))]),
    ],
)
def test_parse_extensions(value: str, expected: list[ExtensionOffer]) -> None:
    assert parse_extensions(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (";", "expected an extension name at offset 0"),
        ("a;", "expected a parameter name at offset 2"),
        ("a; =1", "expected a parameter name at offset 3"),
        ("a; b=", "expected a parameter value at offset 5"),
        ("a b", "unexpected 'b' at offset 2"),
        ('a; b="unterminated', "unterminated quoted-string"),
        ('a; b="two words"', "quoted value 'two words' is not a token"),
        ('a; b=""', "quoted value '' is not a token"),
        ('a; b="x\\', "unterminated quoted-pair"),
        ("a; b=c=d", "unexpected '=' at offset 6"),
        ("a; b=@", "expected a parameter value at offset 5"),
        ("é", "expected an extension name at offset 0"),
    ],
)
def test_parse_extensions_rejects(value: str, problem: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_extensions(value)
    assert info.value.http_status == 400
    assert info.value.reason == f"invalid Sec-WebSocket-Extensions header {value!r}: {problem}"


def test_serialize_extension() -> None:
    offer = ExtensionOffer(
        "permessage-deflate",
        (("client_max_window_bits", "10"), ("server_no_context_takeover", None)),
    )
    text = "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
    assert serialize_extension(offer) == text
    assert serialize_extension(ExtensionOffer("x")) == "x"
    for bad in (ExtensionOffer("a b"), ExtensionOffer("a", (("b c", None),))):
        with pytest.raises(LocalProtocolError):
            serialize_extension(bad)
    with pytest.raises(LocalProtocolError):
        serialize_extension(ExtensionOffer("a", (("b", "two words"),)))


_tokens = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=8,
)
_offers = st.builds(
    ExtensionOffer,
    _tokens,
    st.lists(st.tuples(_tokens, st.none() | _tokens), max_size=4).map(tuple),
)


@given(st.lists(_offers, max_size=4))
def test_extensions_round_trip(offers: list[ExtensionOffer]) -> None:
    assert parse_extensions(", ".join(serialize_extension(o) for o in offers)) == offers


@given(st.text(max_size=40))
def test_parse_extensions_garbage(value: str) -> None:
    error = None
    try:
        parse_extensions(value)
    except RemoteProtocolError as exc:
        error = exc
    assert error is None or error.http_status == 400


def test_parse_token_list() -> None:
    assert parse_token_list(" keep-alive,\tUpgrade ,, ") == ["keep-alive", "Upgrade"]
    assert parse_token_list("") == []


# -------------------------------------------------------------------------------------
# Server: valid requests


def test_chrome_request_accepted_byte_exact() -> None:
    server = ServerHandshake()
    request = server.receive_data(make_request())
    assert request is not None
    assert request.is_websocket
    assert (request.method, request.target, request.path, request.query) == (
        "GET",
        "/chat?room=1",
        "/chat",
        "room=1",
    )
    assert request.http_version == "1.1"
    assert request.headers == tuple(CHROME_HEADERS)
    assert request.host == "localhost:8000"
    assert request.origin == "http://localhost:8000"
    assert request.key == RFC_KEY
    assert request.subprotocols == ("chat", "superchat")
    assert request.extensions == (
        ExtensionOffer("permessage-deflate", (("client_max_window_bits", None),)),
    )
    assert request.cookies == {"session": "abc123", "theme": "dark"}
    assert request.get("sec-websocket-version") == "13"
    assert request.get("X-Missing") is None
    assert request.get("X-Missing", "d") == "d"

    response = server.accept(
        subprotocol="chat",
        extensions=["permessage-deflate; client_max_window_bits=15"],
        headers=[("Server", "trio_ws")],
    )
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response.endswith(b"\r\n\r\n")
    assert split_head(response) == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", RFC_ACCEPT),
        ("Sec-WebSocket-Protocol", "chat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=15"),
        ("Server", "trio_ws"),
    ]
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
        b"Server: trio_ws\r\n"
        b"\r\n"
    )
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.reject(400)


def test_minimal_accept() -> None:
    server = ServerHandshake()
    assert server.receive_data(make_request(drop=("Sec-WebSocket-Protocol",))) is not None
    assert server.accept() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


def test_request_field_variants() -> None:
    request = receive(
        make_request(
            request_line="GET / HTTP/1.1",
            drop=("Connection", "Upgrade", "Sec-WebSocket-Protocol", "Cookie"),
            extra=[
                ("connection", "keep-alive, Upgrade"),
                ("UPGRADE", "WebSocket"),
                ("Sec-WebSocket-Protocol", "a"),
                ("sec-websocket-protocol", "b, c"),
                ("Sec-WebSocket-Extensions", 'x-foo; bar="1"'),
                ("Cookie", 'a=1; b="quoted"; junk; =nameless; a=2'),
                ("Cookie", "c=3"),
            ],
        )
    )
    assert request.is_websocket
    assert (request.path, request.query) == ("/", "")
    assert request.subprotocols == ("a", "b", "c")
    assert request.get("Sec-WebSocket-Protocol") == "a, b, c"
    assert request.get_all("sec-websocket-protocol") == ["a", "b, c"]
    assert [e.name for e in request.extensions] == ["permessage-deflate", "x-foo"]
    assert request.extensions[1].params == (("bar", "1"),)
    assert request.cookies == {"a": "1", "b": "quoted", "c": "3"}


def test_bare_lf_line_endings() -> None:
    data = make_request().replace(b"\r\n", b"\n")
    request = receive(data)
    assert request.is_websocket
    assert request.headers == tuple(CHROME_HEADERS)


def test_plain_get_is_not_websocket() -> None:
    server = ServerHandshake()
    request = server.receive_data(
        b"GET /healthz HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    )
    assert request is not None
    assert not request.is_websocket
    assert (request.method, request.path) == ("GET", "/healthz")
    assert request.extensions == ()
    assert request.cookies == {}
    with pytest.raises(LocalProtocolError):
        server.accept()
    response = server.reject(404, body="not found")
    assert response == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 9\r\nConnection: close\r\n\r\nnot found"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        # Not an upgrade, so nonsense in a WebSocket header does not matter.
        b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: ;;\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_plain_requests(data: bytes) -> None:
    request = receive(data)
    assert not request.is_websocket
    assert request.extensions == ()


def test_common_header_names_and_values_are_shared_between_requests() -> None:
    """Each connection keeps its request's headers for its life; the names and values
    nearly every request repeats are one shared string each, not a copy per connection.
    Uncommon ones are the request's own."""
    extra = [("X-Room", "lobby")]
    first = receive(make_request(extra=extra)).headers
    second = receive(make_request(extra=extra)).headers
    assert first == second
    pairs = list(zip(first, second, strict=True))
    ((upgrade_a, upgrade_b),) = [(a, b) for a, b in pairs if a[0] == "Upgrade"]
    assert upgrade_a[0] is upgrade_b[0]  # "Upgrade"
    assert upgrade_a[1] is upgrade_b[1]  # "websocket"
    ((own_a, own_b),) = [(a, b) for a, b in pairs if a[0] == "X-Room"]
    assert own_a[0] is not own_b[0]
    assert own_a[1] is not own_b[1]


def test_trailing_data() -> None:
    server = ServerHandshake()
    assert server.trailing_data == b""
    request = server.receive_data(make_request() + b"\x81\x05hel")
    assert request is not None
    assert server.trailing_data == b"\x81\x05hel"
    assert server.receive_data(b"lo") is None
    assert server.trailing_data == b"\x81\x05hello"
    assert server.request is request


# -------------------------------------------------------------------------------------
# Server: errors


@pytest.mark.parametrize(
    ("data", "why", "reason"),
    [
        (
            make_request(request_line="POST /chat HTTP/1.1"),
            "method not GET",
            "WebSocket upgrade with method POST, not GET",
        ),
        (
            make_request(request_line="GET /chat HTTP/1.0"),
            "HTTP/1.0 upgrade",
            "WebSocket upgrade over HTTP/1.0; HTTP/1.1 is required",
        ),
        (make_request(drop=("Host",)), "missing Host", "missing Host header"),
        (make_request(extra=[("Host", "other")]), "two Hosts", "more than one Host header"),
        (
            make_request(drop=("Connection",)),
            "missing Connection",
            "Connection header lacks the Upgrade token",
        ),
        (
            make_request(drop=("Connection",), extra=[("Connection", "keep-alive")]),
            "Connection without upgrade",
            "Connection header lacks the Upgrade token",
        ),
        (
            make_request(drop=("Sec-WebSocket-Key",)),
            "missing key",
            "missing Sec-WebSocket-Key header",
        ),
        (
            make_request(extra=[("Sec-WebSocket-Key", RFC_KEY)]),
            "two keys",
            "more than one Sec-WebSocket-Key header",
        ),
        (
            make_request(drop=("Sec-WebSocket-Key",), extra=[("Sec-WebSocket-Key", "a*b")]),
            "key not base64",
            "Sec-WebSocket-Key 'a*b' is not base64",
        ),
        (
            make_request(
                drop=("Sec-WebSocket-Key",),
                extra=[("Sec-WebSocket-Key", base64.b64encode(b"x" * 15).decode())],
            ),
            "key of 15 bytes",
            "Sec-WebSocket-Key 'eHh4eHh4eHh4eHh4eHh4' does not decode to 16 bytes",
        ),
        (
            make_request(drop=("Sec-WebSocket-Key",), extra=[("Sec-WebSocket-Key", "\xe9")]),
            "key not ASCII",
            "Sec-WebSocket-Key '\xe9' is not base64",
        ),
        (
            make_request(drop=("Sec-WebSocket-Version",)),
            "missing version",
            "missing Sec-WebSocket-Version header",
        ),
        (
            make_request(
                drop=("Sec-WebSocket-Extensions",),
                extra=[("Sec-WebSocket-Extensions", "permessage-deflate; =")],
            ),
            "bad extensions",
            "invalid Sec-WebSocket-Extensions header 'permessage-deflate; =': "
            "expected a parameter name at offset 20",
        ),
        (
            make_request(
                drop=("Sec-WebSocket-Extensions",),
                extra=[("Sec-WebSocket-Extensions", 'x; y="not a token"')],
            ),
            "quoted extension value not a token",
            "invalid Sec-WebSocket-Extensions header 'x; y=\"not a token\"': "
            "quoted value 'not a token' is not a token",
        ),
        # Malformed HTTP, upgrade or not.
        (
            b"GET /\r\nHost: x\r\n\r\n",
            "request line with two parts",
            "malformed request line 'GET /'",
        ),
        (
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "double space",
            "malformed request line 'GET  / HTTP/1.1'",
        ),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "method not a token", "invalid method 'G(T'"),
        (
            b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
            "bad version syntax",
            "invalid HTTP version 'HTTP/1.x'",
        ),
        (
            b"GET / HTTP/11\r\nHost: x\r\n\r\n",
            "bad version syntax 2",
            "invalid HTTP version 'HTTP/11'",
        ),
        (b"GET / http/1.1\r\nHost: x\r\n\r\n", "lowercase HTTP", "invalid HTTP version 'http/1.1'"),
        (
            b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
            "control char in target",
            "invalid request target '/\\x7f'",
        ),
        (
            b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
            "non-ASCII target",
            "invalid request target '/é'",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            "obs-fold",
            "obsolete line folding in header field",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            "no colon",
            "header line without a colon: 'NoColon'",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
            "space before colon",
            "invalid header name 'X-A '",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-\xe9: 1\r\n\r\n",
            "non-ASCII name",
            "invalid header name 'X-é'",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX\x01: 1\r\n\r\n",
            "control char in name",
            "invalid header name 'X\\x01'",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n", "empty name", "invalid header name ''"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            "NUL in value",
            "invalid characters in the value of header 'X-A'",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n",
            "bare CR",
            "invalid characters in the value of header 'Host'",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host", "missing Host header"),
        (b"\r\n\r\n", "empty request line", "malformed request line ''"),
    ],
)
def test_bad_request_400(data: bytes, why: str, reason: str) -> None:
    error = expect_status(data, 400)
    assert error.close_code == 1002
    assert error.reason == reason


def test_unsupported_major_version_505() -> None:
    expect_status(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)


@pytest.mark.parametrize("version", ["8", "12", "13, 8", "14"])
def test_wrong_version_426(version: str) -> None:
    data = make_request(drop=("Sec-WebSocket-Version",), extra=[("Sec-WebSocket-Version", version)])
    server = ServerHandshake()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data)
    assert info.value.http_status == 426
    response = server.reject(426, body="use version 13")
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert ("Sec-WebSocket-Version", "13") in split_head(response)
    assert ("Connection", "close") in split_head(response)
    assert response.endswith(b"\r\n\r\nuse version 13")


def test_oversize_head_431() -> None:
    big = make_request(extra=[("X-Big", "a" * 9000)])
    expect_status(big, 431)


def test_oversize_head_431_in_small_chunks() -> None:
    server = ServerHandshake(max_head_size=1024)
    data = b"GET / HTTP/1.1\r\nX-Filler: " + b"a" * 2000
    for fed in range(1024):
        assert server.receive_data(data[fed : fed + 1]) is None
    # Raised as soon as the buffer goes over the limit, not later.
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data[1024:1025])
    assert info.value.http_status == 431
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\r\n\r\n")


def test_head_size_limit_is_inclusive() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert receive(data, max_head_size=len(data)).host == "x"
    expect_status(data, 431, max_head_size=len(data) - 1)
    # The head is complete within the limit even if the chunk brings more bytes.
    server = ServerHandshake(max_head_size=len(data))
    assert server.receive_data(data + b"x" * 100) is not None
    assert server.trailing_data == b"x" * 100


def test_too_many_headers_431() -> None:
    fields = [("Host", "x")] + [(f"X-{i}", "v") for i in range(10)]
    data = make_request(fields, request_line="GET / HTTP/1.1")
    assert receive(data, max_headers=11).host == "x"
    expect_status(data, 431, max_headers=10)


def test_reject_before_request_and_after_error() -> None:
    server = ServerHandshake()
    assert server.reject(503, body=b"full") == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nfull"
    )
    server = ServerHandshake()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"nonsense\r\n\r\n")
    assert server.reject(400).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(LocalProtocolError):
        server.accept()


def test_accept_errors() -> None:
    server = ServerHandshake()
    with pytest.raises(LocalProtocolError):
        server.accept()  # nothing received yet
    server.receive_data(make_request())
    with pytest.raises(LocalProtocolError):
        server.accept(subprotocol="mqtt")
    with pytest.raises(LocalProtocolError):
        server.accept(headers=[("X-Bad", "a\r\nInjected: 1")])
    assert server.accept(subprotocol="superchat")  # still possible after a refused call


# -------------------------------------------------------------------------------------
# Server: properties


@settings(max_examples=200)
@given(st.data())
def test_chunking_invariance(data: st.DataObject) -> None:
    raw = make_request() + b"\x81\x00"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    server = ServerHandshake()
    results = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        results.append(server.receive_data(raw[start:end]))
    requests = [r for r in results if r is not None]
    assert requests == [receive(raw)]
    assert server.trailing_data == b"\x81\x00"


@settings(max_examples=200)
@given(st.data())
def test_chunking_invariance_of_errors(data: st.DataObject) -> None:
    raw = data.draw(
        st.sampled_from(
            [
                make_request(request_line="POST / HTTP/1.1"),
                make_request(extra=[("X-Big", "a" * 600)]),
                b"GET / HTTP/1.1\r\nX\x01: 1\r\n\r\n",
            ]
        )
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))

    def outcome(chunks: list[bytes]) -> int | None:
        server = ServerHandshake(max_head_size=1024)
        try:
            for chunk in chunks:
                server.receive_data(chunk)
        except RemoteProtocolError as exc:
            return exc.http_status
        return None

    chunks = [raw[s:e] for s, e in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert outcome(chunks) == outcome([raw]) is not None


_prefixes = st.sampled_from([b"", b"GET / HTTP/1.1\r\n", make_request()[:200]])


@settings(max_examples=300)
@given(_prefixes, st.lists(st.binary(max_size=64), max_size=8))
def test_server_garbage_only_raises_remote_error(prefix: bytes, chunks: list[bytes]) -> None:
    server = ServerHandshake(max_head_size=256)
    error = None
    try:
        server.receive_data(prefix)
        for chunk in chunks:
            server.receive_data(chunk)
    except RemoteProtocolError as exc:
        error = exc
    assert error is None or error.http_status in (400, 426, 431, 505)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_client_garbage_only_raises_remote_error(chunks: list[bytes]) -> None:
    client = ClientHandshake("x")
    error = None
    try:
        client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n")
        for chunk in chunks:
            client.receive_data(chunk)
    except RemoteProtocolError as exc:
        error = exc
    assert error is None or error.http_status is None


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True),
            st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?", fullmatch=True),
        ),
        max_size=6,
    )
)
def test_plain_request_headers_preserved(fields: list[tuple[str, str]]) -> None:
    fields = [(n, v) for n, v in fields if n.lower() not in ("host", "upgrade")]
    data = make_request([("Host", "h"), *fields], request_line="GET /a?b HTTP/1.1")
    request = receive(data)
    assert request.headers == (("Host", "h"), *fields)


# -------------------------------------------------------------------------------------
# build_response


def test_build_response() -> None:
    assert build_response(200, body="ok", keep_alive=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
    )
    assert build_response(204) == b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    assert build_response(304, headers=[("ETag", '"1"')], content_type=None, keep_alive=True) == (
        b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n'
    )
    html = build_response(
        200, body=b"<p>", content_type="text/html", headers=[("Cache-Control", "no-cache")]
    )
    assert split_head(html) == [
        ("Cache-Control", "no-cache"),
        ("Content-Type", "text/html"),
        ("Content-Length", "3"),
        ("Connection", "close"),
    ]
    # Caller-provided framing headers win (a HEAD answer declares the GET length).
    head = build_response(200, headers=[("Content-Length", "99")], content_type=None)
    assert split_head(head) == [("Content-Length", "99"), ("Connection", "close")]
    assert build_response(599).startswith(b"HTTP/1.1 599\r\n")
    for status in (101, 204, 301, 304, 400, 403, 404, 405, 408, 426, 429, 431, 500, 503):
        assert b"\r\n" in build_response(status, content_type=None)
    assert build_response(429).startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert build_response(431).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    with pytest.raises(LocalProtocolError):
        build_response(204, body="x")
    with pytest.raises(LocalProtocolError):
        build_response(42)
    with pytest.raises(LocalProtocolError):
        build_response(200, headers=[("X", "a\nb")])


# -------------------------------------------------------------------------------------
# Client


def server_answer(client: ClientHandshake, **accept_kwargs: object) -> bytes:
    server = ServerHandshake()
    request = server.receive_data(client.data_to_send())
    assert request is not None
    return server.accept(**accept_kwargs)  # type: ignore[arg-type]


def test_client_request_bytes() -> None:
    client = ClientHandshake(
        "example.com:8080",
        "/chat?x=1",
        subprotocols=["chat", "superchat"],
        extensions=["permessage-deflate; client_max_window_bits"],
        origin="http://example.com",
        headers=[("Cookie", "a=b")],
    )
    assert len(base64.b64decode(client.key)) == 16
    assert ClientHandshake("x").key != client.key
    data = client.data_to_send()
    assert data.startswith(b"GET /chat?x=1 HTTP/1.1\r\n")
    assert split_head(data) == [
        ("Host", "example.com:8080"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", client.key),
        ("Sec-WebSocket-Version", "13"),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ("Cookie", "a=b"),
    ]
    assert client.data_to_send() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": "/a b"},
        {"subprotocols": ["a b"]},
        {"extensions": ["x;"]},
        {"headers": [("X", "a\r\nb")]},
        {"origin": "http://x\r\n"},
    ],
)
def test_client_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        ClientHandshake("x", **kwargs)  # type: ignore[arg-type]


def test_round_trip() -> None:
    client = ClientHandshake(
        "localhost",
        "/ws",
        subprotocols=["chat", "superchat"],
        extensions=["permessage-deflate; client_max_window_bits"],
    )
    server = ServerHandshake()
    request = server.receive_data(client.data_to_send())
    assert request is not None
    assert request.is_websocket
    assert request.path == "/ws"
    assert request.subprotocols == ("chat", "superchat")
    answer = server.accept(
        subprotocol="superchat", extensions=["permessage-deflate; server_max_window_bits=12"]
    )
    answer += b"\x81\x02hi"
    # Byte by byte, to exercise the incremental reader on this side too.
    results = [client.receive_data(answer[i : i + 1]) for i in range(len(answer))]
    response = next(r for r in results if r is not None)
    assert sum(r is not None for r in results) == 1
    assert response.status == 101
    assert response.subprotocol == "superchat"
    assert response.extensions == (
        ExtensionOffer("permessage-deflate", (("server_max_window_bits", "12"),)),
    )
    assert client.response is response
    assert client.trailing_data == b"\x81\x02hi"


def test_client_against_wsproto_server() -> None:
    client = ClientHandshake("localhost", "/chat", subprotocols=["chat", "superchat"])
    peer = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    peer.receive_data(client.data_to_send())
    (event,) = peer.events()
    assert isinstance(event, wsproto.events.Request)
    assert event.target == "/chat"
    assert event.subprotocols == ["chat", "superchat"]
    answer = peer.send(wsproto.events.AcceptConnection(subprotocol="chat", extensions=[]))
    response = client.receive_data(answer)
    assert response is not None
    assert response.subprotocol == "chat"
    assert response.extensions == ()


def test_wsproto_client_against_our_server() -> None:
    peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    data = peer.send(
        wsproto.events.Request(host="localhost:9000", target="/ws?a=1", subprotocols=["chat"])
    )
    server = ServerHandshake()
    request = server.receive_data(data)
    assert request is not None
    assert request.is_websocket
    assert (request.path, request.query, request.host) == ("/ws", "a=1", "localhost:9000")
    assert request.subprotocols == ("chat",)
    peer.receive_data(server.accept(subprotocol="chat"))
    (event,) = peer.events()
    assert isinstance(event, wsproto.events.AcceptConnection)
    assert event.subprotocol == "chat"


def accepted_101(client: ClientHandshake, *fields: tuple[str, str]) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{n}: {v}" for n, v in fields), "", ""]
    return "\r\n".join(lines).encode()


def good_fields(client: ClientHandshake) -> list[tuple[str, str]]:
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(client.key)),
    ]


def test_client_accepts_case_insensitive_tokens() -> None:
    client = ClientHandshake("x", subprotocols=["chat"])
    response = client.receive_data(
        accepted_101(
            client,
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, upgrade"),
            ("sec-websocket-accept", accept_key(client.key)),
            ("Sec-WebSocket-Protocol", "chat"),
        )
    )
    assert response is not None
    assert response.subprotocol == "chat"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f, k: [x for x in f if x[0] != "Upgrade"], id="no-upgrade"),
        pytest.param(lambda f, k: [("Upgrade", "h2c"), *f[1:]], id="upgrade-not-websocket"),
        pytest.param(lambda f, k: [x for x in f if x[0] != "Connection"], id="no-connection"),
        pytest.param(
            lambda f, k: [*f[:2], ("Sec-WebSocket-Accept", RFC_ACCEPT)], id="wrong-accept"
        ),
        pytest.param(lambda f, k: f[:2], id="no-accept"),
        pytest.param(lambda f, k: [*f, ("Sec-WebSocket-Accept", accept_key(k))], id="two-accepts"),
        pytest.param(
            lambda f, k: [*f, ("Sec-WebSocket-Protocol", "mqtt")], id="unoffered-subprotocol"
        ),
        pytest.param(
            lambda f, k: [*f, ("Sec-WebSocket-Protocol", "chat, superchat")],
            id="two-subprotocols",
        ),
        pytest.param(
            lambda f, k: [*f, ("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")],
            id="unoffered-extension",
        ),
        pytest.param(
            lambda f, k: [*f, ("Sec-WebSocket-Extensions", "permessage-deflate; =")],
            id="bad-extension-syntax",
        ),
    ],
)
def test_client_rejects_bad_101(mutate: object) -> None:
    client = ClientHandshake(
        "x",
        subprotocols=["chat", "superchat"],
        extensions=["permessage-deflate; client_max_window_bits"],
    )
    fields = mutate(good_fields(client), client.key)  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(accepted_101(client, *fields))
    assert not isinstance(info.value, InvalidStatus)
    assert info.value.close_code == 1002
    assert info.value.http_status is None
    with pytest.raises(RemoteProtocolError) as again:
        client.receive_data(b"")
    assert again.value is info.value


def test_client_invalid_status() -> None:
    client = ClientHandshake("x")
    server = ServerHandshake()
    server.receive_data(client.data_to_send())
    answer = server.reject(403, body="forbidden origin")
    with pytest.raises(InvalidStatus) as info:
        client.receive_data(answer)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.response.status == 403
    assert ("Content-Length", "16") in info.value.response.headers
    assert info.value.body == b"forbidden origin"
    assert info.value.response.subprotocol is None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 101\r\n\r\n",  # no reason phrase, and no upgrade headers
        b"HTTP/1.1 1O1 Switching Protocols\r\n\r\n",
        b"HTTP/2 101 Switching Protocols\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nX\x01: 1\r\n\r\n",
    ],
)
def test_client_malformed_response(data: bytes) -> None:
    client = ClientHandshake("x")
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(data)
    assert not isinstance(info.value, InvalidStatus)
    assert info.value.http_status is None


def test_client_oversize_response() -> None:
    client = ClientHandshake("x", max_head_size=100)
    head = b"HTTP/1.1 101 x\r\n" + b"X-A: aaaaaaaaaa\r\n" * 10
    for i in range(100):
        assert client.receive_data(head[i : i + 1]) is None
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(head[100:])
    assert info.value.http_status is None
    assert "100 bytes" in info.value.reason


def test_constructor_limits() -> None:
    with pytest.raises(ValueError, match="max_head_size"):
        ServerHandshake(max_head_size=0)
    with pytest.raises(ValueError, match="max_headers"):
        ServerHandshake(max_headers=-1)


def test_request_built_directly() -> None:
    fields = (("Host", "x"), ("Sec-WebSocket-Extensions", "a; b=1"))
    request = Request("GET", "/", "/", "", "1.1", fields, is_websocket=True)
    assert request.extensions == (ExtensionOffer("a", (("b", "1"),)),)
    assert request == Request("GET", "/", "/", "", "1.1", fields, is_websocket=True)
    with pytest.raises(RemoteProtocolError):
        Request("GET", "/", "/", "", "1.1", (("Sec-WebSocket-Extensions", ";"),), True)


# -------------------------------------------------------------------------------------
# Exact texts, defaults and boundaries (each pins mutants of docs/mutation.md)


def test_head_terminator_at_the_very_start() -> None:
    # A blank line first: the head is one empty request line, whatever the chunking.
    assert expect_status(b"\n\nGET", 400).reason == "malformed request line ''"
    server = ServerHandshake()
    assert server.receive_data(b"\n") is None
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(b"\n")
    assert info.value.reason == "malformed request line ''"


def test_head_ends_at_the_first_terminator() -> None:
    # "\n\n" ends the head before the "\n\r\n" that overlaps it; later terminators are data.
    request = ServerHandshake()
    assert request.receive_data(b"GET / HTTP/1.1\nHost: x\n\n\r\nabc\r\n\r\n") is not None
    assert request.trailing_data == b"\r\nabc\r\n\r\n"
    # The first of two heads ends the head, not the last.
    server = ServerHandshake()
    assert server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nX-A: 1\r\n\r\n") is not None
    assert server.trailing_data == b"X-A: 1\r\n\r\n"


def test_head_size_limits_and_texts() -> None:
    base = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: "
    for size, max_size in ((8192, None), (1000, 1000)):
        data = base + b"a" * (size - len(base) - 4) + b"\r\n\r\n"
        assert len(data) == size
        kwargs = {} if max_size is None else {"max_head_size": max_size}
        assert receive(data, **kwargs).host == "x"
        error = expect_status(data[:-4] + b"a\r\n\r\n", 431, **kwargs)
        assert error.reason == f"request head larger than {size} bytes"
    client = ClientHandshake("x")
    filler = b"HTTP/1.1 404 Not Found\r\nX-A: "
    head = filler + b"a" * (65536 - len(filler) - 4) + b"\r\n\r\n"
    with pytest.raises(InvalidStatus):
        client.receive_data(head)
    client = ClientHandshake("x")
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(head[:-4] + b"a\r\n\r\n")
    assert info.value.reason == "response head larger than 65536 bytes"


def test_header_count_limits_and_texts() -> None:
    def head(count: int) -> bytes:
        return make_request([("Host", "x")] + [(f"X-{i}", "v") for i in range(count - 1)])

    assert len(receive(head(128)).headers) == 128
    assert expect_status(head(129), 431).reason == "more than 128 header fields"
    assert receive(b"GET / HTTP/1.0\r\n\r\n", max_headers=0).http_version == "1.0"
    error = expect_status(make_request([("Host", "x")]), 431, max_headers=0)
    assert error.reason == "more than 0 header fields"


def test_constructor_limit_boundaries() -> None:
    ServerHandshake(max_head_size=16, max_headers=0)
    with pytest.raises(ValueError, match=r"^max_head_size must be at least 16, not 15$"):
        ServerHandshake(max_head_size=15)
    with pytest.raises(ValueError, match=r"^max_headers must not be negative, not -1$"):
        ServerHandshake(max_headers=-1)
    assert ServerHandshake().request is None


def test_tab_fold_and_value_whitespace() -> None:
    error = expect_status(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400)
    assert error.reason == "obsolete line folding in header field"
    # Only SP and HTAB are trimmed: NBSP (obs-text) is part of the value.
    request = receive(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \t\xa0a\xa0 \r\n\r\n")
    assert request.get("X-A") == "\xa0a\xa0"


def test_quoted_input_is_cut() -> None:
    long = "A" * 200
    cases = [
        (f"GET {long}".encode(), f"malformed request line {('GET ' + long)[:100]!r}"),
        (
            b"GET /" + b"\x7f" * 200 + b" HTTP/1.1",
            f"invalid request target {'/' + chr(127) * 99!r}",
        ),
        (f"GET / {long}".encode(), f"invalid HTTP version {long[:32]!r}"),
    ]
    for line, reason in cases:
        assert expect_status(line + b"\r\nHost: x\r\n\r\n", 400).reason == reason
    error = expect_status(b"G(" + b"T" * 100 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    assert error.reason == f"invalid method {('G(' + 'T' * 100)[:32]!r}"
    error = expect_status(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"N" * 100 + b"\r\n\r\n", 400)
    assert error.reason == f"header line without a colon: {'N' * 64!r}"
    error = expect_status(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"N" * 99 + b"(: 1\r\n\r\n", 400)
    assert error.reason == f"invalid header name {'N' * 64!r}"
    error = expect_status(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
    assert error.reason == "unsupported HTTP version 'HTTP/2.0'"


def test_key_and_version_texts() -> None:
    def with_key(key: str) -> bytes:
        return make_request(drop=("Sec-WebSocket-Key",), extra=[("Sec-WebSocket-Key", key)])

    # Not base64 once anything outside the alphabet is in it, even if the rest decodes.
    error = expect_status(with_key("dGhl*IHNhbXBsZSBub25jZQ=="), 400)
    assert error.reason == "Sec-WebSocket-Key 'dGhl*IHNhbXBsZSBub25jZQ==' is not base64"
    error = expect_status(with_key("*" * 100), 400)
    assert error.reason == f"Sec-WebSocket-Key {'*' * 64!r} is not base64"
    key = base64.b64encode(b"x" * 60).decode()
    error = expect_status(with_key(key), 400)
    assert error.reason == f"Sec-WebSocket-Key {key[:64]!r} does not decode to 16 bytes"
    versions = [("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Version", "9" * 40)]
    error = expect_status(make_request(drop=("Sec-WebSocket-Version",), extra=versions), 426)
    assert error.reason == f"unsupported Sec-WebSocket-Version {('8, ' + '9' * 40)[:32]!r}"


def test_accept_and_reject_texts() -> None:
    server = ServerHandshake()
    with pytest.raises(LocalProtocolError) as info:
        server.accept()
    assert info.value.args[0] == "cannot accept in state RECEIVING"
    server.receive_data(make_request())
    with pytest.raises(LocalProtocolError) as info:
        server.accept(subprotocol="mqtt")
    assert info.value.args[0] == "subprotocol 'mqtt' was not offered"
    with pytest.raises(LocalProtocolError) as info:
        server.accept(headers=[("X A", "1")])
    assert info.value.args[0] == "invalid header name 'X A'"
    with pytest.raises(LocalProtocolError) as info:
        server.accept(headers=[("X-A", "1 ")])
    assert info.value.args[0] == "invalid value for header 'X-A': '1 '"
    answer = server.accept(extensions=["a", "b"], headers=[("X-A", "\xa01\xa0")])
    assert split_head(answer)[3:] == [("Sec-WebSocket-Extensions", "a, b"), ("X-A", "\xa01\xa0")]
    with pytest.raises(LocalProtocolError) as info:
        server.reject(400)
    assert info.value.args[0] == "the handshake was answered already"
    # A plain request is not accepted, even with a key.
    server = ServerHandshake()
    server.receive_data(
        b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: " + RFC_KEY.encode() + b"\r\n\r\n"
    )
    with pytest.raises(LocalProtocolError) as info:
        server.accept()
    assert info.value.args[0] == "cannot accept a plain HTTP request as a WebSocket"
    # After a failure.
    server = ServerHandshake()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"nonsense\r\n\r\n")
    with pytest.raises(LocalProtocolError) as info:
        server.accept()
    assert info.value.args[0] == "cannot accept in state FAILED"


def test_reject_defaults_and_own_headers() -> None:
    assert ServerHandshake().reject(503) == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    answer = ServerHandshake().reject(426, headers=[("Sec-WebSocket-Version", "13, 8")])
    assert [f for f in split_head(answer) if f[0] == "Sec-WebSocket-Version"] == [
        ("Sec-WebSocket-Version", "13, 8")
    ]
    answer = ServerHandshake().reject(403, body="<p>", content_type="text/html")
    assert ("Content-Type", "text/html") in split_head(answer)


def test_build_response_boundaries_and_texts() -> None:
    assert build_response(100) == b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n"
    assert build_response(999, content_type=None).startswith(b"HTTP/1.1 999\r\n")
    for status in (99, 1000):
        with pytest.raises(LocalProtocolError) as info:
            build_response(status)
        assert info.value.args[0] == f"invalid HTTP status {status}"
    with pytest.raises(LocalProtocolError) as info:
        build_response(204, body="x")
    assert info.value.args[0] == "a 204 response cannot have a body"
    head = build_response(200, headers=[("content-type", "a/b"), ("Connection", "keep-alive")])
    assert split_head(head) == [
        ("content-type", "a/b"),
        ("Connection", "keep-alive"),
        ("Content-Length", "0"),
    ]


def test_client_defaults_and_argument_texts() -> None:
    client = ClientHandshake("x", extensions=["a", "b; c"])
    assert client.data_to_send().startswith(b"GET / HTTP/1.1\r\n")
    for kwargs, text in [
        ({"target": "/a b"}, "invalid request target '/a b'"),
        ({"subprotocols": ["a b"]}, "subprotocol 'a b' is not a token"),
        ({"extensions": ["x;"]}, "invalid Sec-WebSocket-Extensions header 'x;': "),
    ]:
        with pytest.raises(LocalProtocolError) as info:
            ClientHandshake("x", **kwargs)  # type: ignore[arg-type]
        assert info.value.args[0].startswith(text)
    server = ServerHandshake()
    request = server.receive_data(ClientHandshake("x", extensions=["a", "b; c"]).data_to_send())
    assert request is not None
    assert request.get_all("Sec-WebSocket-Extensions") == ["a, b; c"]


def test_client_refusal_texts() -> None:
    def refusal(*fields: tuple[str, str], status_line: str | None = None) -> str:
        client = ClientHandshake("x", subprotocols=["chat", "superchat"], extensions=["a", "b"])
        lines = [status_line or "HTTP/1.1 101 Switching Protocols"]
        lines += [f"{n}: {v}" for n, v in (fields or good_fields(client))]
        with pytest.raises(RemoteProtocolError) as info:
            client.receive_data("\r\n".join([*lines, "", ""]).encode())
        assert info.value.close_code == 1002
        return info.value.reason

    assert refusal(("Connection", "Upgrade")) == "101 response without Upgrade: websocket"
    assert refusal(("Upgrade", "websocket")) == "101 response without Connection: Upgrade"
    assert refusal(("Upgrade", "websocket"), ("Connection", "Upgrade")) == (
        "wrong or missing Sec-WebSocket-Accept"
    )
    long = "HTTP/1.1 101 " + "\x01" * 200
    assert refusal(status_line=long) == f"malformed status line {long[:100]!r}"
    assert refusal(status_line="HTTP/2.1 101 x") == "malformed status line 'HTTP/2.1 101 x'"

    client = ClientHandshake("x", subprotocols=["chat", "superchat"], extensions=["a", "b"])
    good = good_fields(client)

    def refused(*more: tuple[str, str]) -> str:
        with pytest.raises(RemoteProtocolError) as info:
            ClientHandshake.receive_data(copy, accepted_101(copy, *good, *more))
        return info.value.reason

    for more, text in [
        (
            (("Sec-WebSocket-Protocol", "chat, superchat"),),
            "server chose more than one subprotocol",
        ),
        ((("Sec-WebSocket-Protocol", "mqtt"),), "server chose subprotocol 'mqtt', not offered"),
        (
            (("Sec-WebSocket-Extensions", "c"),),
            "server accepted extension 'c', which was not offered",
        ),
    ]:
        copy = ClientHandshake("x", subprotocols=["chat", "superchat"], extensions=["a", "b"])
        good = good_fields(copy)
        assert refused(*more) == text
    good = good_fields(client)
    response = client.receive_data(
        accepted_101(
            client,
            *good,
            ("Sec-WebSocket-Extensions", "a"),
            ("Sec-WebSocket-Extensions", "b; x=1"),
        )
    )
    assert response is not None
    assert response.extensions == (ExtensionOffer("a", ()), ExtensionOffer("b", (("x", "1"),)))
    assert response.headers[:3] == tuple(good)


def test_client_http_1_0_status() -> None:
    client = ClientHandshake("x")
    with pytest.raises(InvalidStatus) as info:
        client.receive_data(b"HTTP/1.0 404 Not Found\r\nX-A: 1\r\n\r\nbody")
    assert info.value.reason == "server rejected the WebSocket handshake with HTTP 404"
    assert info.value.response.extensions == ()
    assert info.value.response.headers == (("X-A", "1"),)
    assert info.value.body == b"body"
    assert InvalidStatus(info.value.response).body == b""


def test_invalid_subprotocol_text_is_cut() -> None:
    data = make_request(
        drop=("Sec-WebSocket-Protocol",), extra=[("Sec-WebSocket-Protocol", "/" * 100)]
    )
    assert expect_status(data, 400).reason == f"invalid subprotocol {'/' * 64!r}, not a token"


def test_header_helpers_texts_and_whitespace() -> None:
    # Only SP and HTAB around list items are whitespace (RFC 7230 §7: OWS).
    assert parse_token_list(" chat\xa0,\tb ,") == ["chat\xa0", "b"]
    for offer, text in [
        (ExtensionOffer("a b"), "extension name 'a b' is not a token"),
        (ExtensionOffer("a", (("b c", None),)), "extension parameter name 'b c' is not a token"),
        (ExtensionOffer("a", (("b", "c d"),)), "extension parameter value 'c d' is not a token"),
    ]:
        with pytest.raises(LocalProtocolError) as info:
            serialize_extension(offer)
        assert info.value.args[0] == text


def test_parse_extensions_skips_one_empty_element_at_a_time() -> None:
    assert parse_extensions(",ab") == [ExtensionOffer("ab")]
    assert parse_extensions(",,ab, ,c") == [ExtensionOffer("ab"), ExtensionOffer("c")]


def test_private_checks_on_their_own() -> None:
    # _check_upgrade checks Host itself (§4.2.1 item 2), though _parse_request, its only
    # caller, refuses a request without Host first.
    with pytest.raises(RemoteProtocolError) as info:
        _handshake._check_upgrade("GET", "1.1", [("Connection", "Upgrade")])
    assert (info.value.reason, info.value.http_status) == ("missing Host header", 400)
    # _client_error keeps the close code and drops the HTTP status.
    error = _handshake._client_error(RemoteProtocolError("x", close_code=1007, http_status=400))
    assert (error.reason, error.close_code, error.http_status) == ("x", 1007, None)
