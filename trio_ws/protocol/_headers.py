"""HTTP header values shared by the handshake and the extensions.

Parsers for the list-valued headers of the opening handshake: ``Sec-WebSocket-Extensions``
(RFC 6455 §9.1) and the plain comma-separated token lists of ``Connection``, ``Upgrade`` and
``Sec-WebSocket-Protocol`` (RFC 7230 §7).
"""

from __future__ import annotations

import re

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError

# RFC 7230 §3.2.6: token = 1*tchar.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Optional whitespace, RFC 7230 §3.2.3: OWS = *( SP / HTAB ).
_OWS = " \t"


def is_token(value: str) -> bool:
    """Whether ``value`` is a non-empty RFC 7230 §3.2.6 ``token``."""
    return _TOKEN_RE.fullmatch(value) is not None


@attrs.frozen
class ExtensionOffer:
    """One element of a ``Sec-WebSocket-Extensions`` header (RFC 6455 §9.1).

    ``params`` keeps the order and duplicates of the header; a parameter without a value has
    ``None`` as its value. Quoted values arrive unquoted.
    """

    name: str
    params: tuple[tuple[str, str | None], ...] = ()


def _bad_extensions(value: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"invalid Sec-WebSocket-Extensions header {value!r}: {why}", http_status=400
    )


class _ExtensionScanner:
    """A one-pass scanner over one ``Sec-WebSocket-Extensions`` value."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.value)

    def peek(self) -> str:
        return self.value[self.pos] if self.pos < len(self.value) else ""

    def skip_ows(self) -> None:
        while self.pos < len(self.value) and self.value[self.pos] in _OWS:
            self.pos += 1

    def token(self, what: str) -> str:
        match = _TOKEN_RE.match(self.value, self.pos)
        if match is None:
            raise _bad_extensions(self.value, f"expected {what} at offset {self.pos}")
        self.pos = match.end()
        return match.group()

    def quoted_string(self) -> str:
        # RFC 7230 §3.2.6: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE.
        self.pos += 1  # the opening DQUOTE
        chars: list[str] = []
        while True:
            if self.at_end():
                raise _bad_extensions(self.value, "unterminated quoted-string")
            char = self.value[self.pos]
            self.pos += 1
            if char == '"':
                break
            if char == "\\":
                if self.at_end():
                    raise _bad_extensions(self.value, "unterminated quoted-pair")
                char = self.value[self.pos]
                self.pos += 1
            chars.append(char)
        unquoted = "".join(chars)
        # RFC 6455 §9.1: "When using the quoted-string syntax variant, the value after
        # quoted-string unescaping MUST conform to the 'token' ABNF."
        if not is_token(unquoted):
            raise _bad_extensions(self.value, f"quoted value {unquoted!r} is not a token")
        return unquoted


def parse_extensions(value: str) -> list[ExtensionOffer]:
    """Parse a ``Sec-WebSocket-Extensions`` header value (RFC 6455 §9.1).

    The grammar is::

        extension-list = 1#extension
        extension      = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    Empty list elements are ignored (RFC 7230 §7), so an empty value gives an empty list.

    Args:
        value: the header value; several headers may be joined with ``", "`` first.

    Returns:
        The offers in the order of the header, quoted parameter values unquoted.

    Raises:
        RemoteProtocolError: the value does not follow the grammar (``http_status`` 400).
    """
    scanner = _ExtensionScanner(value)
    offers: list[ExtensionOffer] = []
    while True:
        scanner.skip_ows()
        if scanner.at_end():
            return offers
        if scanner.peek() == ",":  # an empty list element
            scanner.pos += 1
            continue
        name = scanner.token("an extension name")
        params: list[tuple[str, str | None]] = []
        while True:
            scanner.skip_ows()
            char = scanner.peek()
            if char == ";":
                scanner.pos += 1
                scanner.skip_ows()
                param = scanner.token("a parameter name")
                scanner.skip_ows()
                param_value: str | None = None
                if scanner.peek() == "=":
                    scanner.pos += 1
                    scanner.skip_ows()
                    if scanner.peek() == '"':
                        param_value = scanner.quoted_string()
                    else:
                        param_value = scanner.token("a parameter value")
                params.append((param, param_value))
            elif char in (",", ""):
                break
            else:
                raise _bad_extensions(value, f"unexpected {char!r} at offset {scanner.pos}")
        offers.append(ExtensionOffer(name, tuple(params)))


def serialize_extension(offer: ExtensionOffer) -> str:
    """Render one extension as a ``Sec-WebSocket-Extensions`` list element.

    For example ``"permessage-deflate; client_max_window_bits=10; server_no_context_takeover"``.

    Raises:
        LocalProtocolError: the name, a parameter name or a value is not a token; RFC 6455
            §9.1 allows nothing else (quoted values must unquote to a token too).
    """
    if not is_token(offer.name):
        raise LocalProtocolError(f"extension name {offer.name!r} is not a token")
    parts = [offer.name]
    for name, value in offer.params:
        if not is_token(name):
            raise LocalProtocolError(f"extension parameter name {name!r} is not a token")
        if value is None:
            parts.append(name)
        elif is_token(value):
            parts.append(f"{name}={value}")
        else:
            raise LocalProtocolError(f"extension parameter value {value!r} is not a token")
    return "; ".join(parts)


def parse_token_list(value: str) -> list[str]:
    """Split a comma-separated list header (``Connection``, ``Upgrade``, subprotocols).

    Whitespace around elements is stripped and empty elements are ignored (RFC 7230 §7);
    case is preserved, so compare with ``.lower()`` where the header is case-insensitive.
    """
    return [item for item in (part.strip(_OWS) for part in value.split(",")) if item]
