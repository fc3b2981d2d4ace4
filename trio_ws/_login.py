"""Login policies: how a connection's login message becomes a named client.

This is the Push Framework's client factory role. When the session stage machine
(:mod:`trio_ws.protocol._stages`) returns ``AttemptLogin``, the runtime wraps the message in
a :class:`LoginRequest`, runs the application's policy on it with :func:`run_policy`, and
reports the :class:`LoginAccepted` or :class:`LoginRefused` back to the session.

A policy is any callable taking a :class:`LoginRequest` and returning a result, or an
awaitable of one (to ask a database, say). Two are provided: :func:`unique_names`, the
demo's, which accepts any well-formed pseudonym, and :func:`signed_tokens`, which requires
an HMAC-signed token made by :func:`make_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._names import MAX_NAME_LENGTH, NAME_RE, valid_name

if TYPE_CHECKING:
    from .protocol._handshake import Request

__all__ = [
    "MAX_NAME_LENGTH",
    "NAME_RE",
    "LoginAccepted",
    "LoginPolicy",
    "LoginRefused",
    "LoginRequest",
    "LoginResult",
    "authenticates_nobody",
    "make_token",
    "run_policy",
    "signed_tokens",
    "unique_names",
    "valid_name",
]

# A token for a 32-character name is about 110 characters; anything far longer is refused
# before any decoding or hashing is spent on it.
_MAX_TOKEN_LENGTH = 256


@attrs.frozen
class LoginRequest:
    """One login attempt, as a policy sees it."""

    message: dict[str, Any]
    """The decoded login message; ``message["type"] == "login"``. Other fields unchecked."""
    request: Request | None
    """The HTTP request that opened the connection (headers, cookies, path), if known."""
    peer: str | None
    """The remote address as ``"ip:port"``, if known."""


@attrs.frozen
class LoginAccepted:
    """The attempt succeeds: the connection becomes the client called ``name``."""

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    """The client's name, the key by which it is found."""
    authenticated: bool = attrs.field(
        default=False, kw_only=True, validator=attrs.validators.instance_of(bool)
    )
    """Whether the policy verified the client's claim to the name (a token, a password).
    Only an authenticated login may take over (``on_name_conflict="takeover"``) a
    connection holding the same name, spelled the same: anyone else gets ``name_taken``."""


@attrs.frozen
class LoginRefused:
    """The attempt fails; the client receives ``error`` with ``code`` and ``message``."""

    code: str = attrs.field(validator=attrs.validators.instance_of(str))
    """``"bad_name"``, ``"unauthorized"``, ``"name_taken"`` (PROTOCOL.md) or an app's own."""
    message: str = attrs.field(validator=attrs.validators.instance_of(str))
    """A human-readable explanation, sent to the client."""


LoginResult = LoginAccepted | LoginRefused
"""What a login policy decides."""

LoginPolicy = Callable[[LoginRequest], LoginResult | Awaitable[LoginResult]]
"""A callable deciding a :class:`LoginRequest`, synchronously or asynchronously."""


def _name_refusal(name: object) -> LoginRefused:
    if name is None:
        return LoginRefused("bad_name", "the login message has no name")
    if not isinstance(name, str):
        return LoginRefused("bad_name", "the name must be a string")
    return LoginRefused(
        "bad_name",
        f"a name is 1 to {MAX_NAME_LENGTH} characters: letters, digits, '_', '-' and '.'",
    )


def unique_names() -> LoginPolicy:
    """The demo's policy: any well-formed ``"name"`` is accepted as given.

    A missing, non-string or malformed name is refused with ``bad_name``. Uniqueness is
    *not* checked here: the runtime's client registry enforces it (case-insensitively,
    across every node) when it registers the accepted name: as configured, it refuses a
    name already in use with ``name_taken`` or hands it over to the new connection.
    A policy could only check a snapshot, which another login may change the next instant.
    """

    def unique_names_policy(login: LoginRequest) -> LoginResult:
        name = login.message.get("name")
        if valid_name(name):
            return LoginAccepted(name)
        return _name_refusal(name)

    setattr(unique_names_policy, "authenticates", False)  # noqa: B010 - read by authenticates_nobody
    return unique_names_policy


def authenticates_nobody(policy: LoginPolicy) -> bool:
    """Whether ``policy`` is known never to authenticate anyone (like :func:`unique_names`),
    so that a takeover could only ever steal a name."""
    return getattr(policy, "authenticates", True) is False


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Lenient decoding is harmless here: it runs only on text whose MAC already matched.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> str:
    return _b64encode(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def make_token(secret: bytes, name: str, expires_at: float) -> str:
    """A credential for :func:`signed_tokens`: ``name`` may log in until ``expires_at``.

    The token is ``<base64url(name)>.<expiry>.<base64url(mac)>``, where the expiry is
    ``expires_at`` in whole seconds since the epoch (rounded down) and the MAC is
    HMAC-SHA256 with ``secret`` over the text before the second dot.

    Raises:
        ValueError: an empty secret, an invalid name, or a negative expiry.
    """
    if not secret:
        raise ValueError("the secret must not be empty")
    if not valid_name(name):
        raise ValueError(f"invalid name {name!r}")
    if expires_at < 0:
        raise ValueError(f"negative expiry {expires_at!r}")
    signed = f"{_b64encode(name.encode('ascii'))}.{int(expires_at)}"
    return f"{signed}.{_mac(secret, signed)}"


def _check_token(secret: bytes, token: str, now: float) -> str | LoginRefused:
    invalid = LoginRefused("unauthorized", "invalid token")
    if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        return invalid
    parts = token.split(".")
    if len(parts) != 3:
        return invalid
    name_part, expiry_part, mac_part = parts
    if not expiry_part.isdigit():  # ASCII already; rejects "", "+1", "1_0", "-1"
        return invalid
    if not hmac.compare_digest(_mac(secret, f"{name_part}.{expiry_part}"), mac_part):
        return invalid
    try:
        name = _b64decode(name_part).decode("ascii")
    except (binascii.Error, ValueError):
        return invalid
    if now >= int(expiry_part):
        return LoginRefused("unauthorized", "token expired")
    return name


def signed_tokens(
    secret: bytes,
    *,
    clock: Callable[[], float] = time.time,
    leeway: float = 0.0,
) -> LoginPolicy:
    """A policy admitting whoever presents a valid token made by :func:`make_token`.

    The login message's ``"token"`` must carry a token signed with ``secret`` and not yet
    expired; the client's name is the one in the token. A ``"name"`` field is optional and,
    if present, must equal it. Any failure is refused with ``unauthorized``.

    Args:
        secret: the HMAC key shared with whatever issues tokens.
        clock: returns the current time in seconds since the epoch.
        leeway: seconds a token stays valid past its expiry, for clock skew between the
            issuer and this server.

    Raises:
        ValueError: an empty secret or a negative leeway.
    """
    if not secret:
        raise ValueError("the secret must not be empty")
    if leeway < 0:
        raise ValueError(f"negative leeway {leeway!r}")

    def signed_tokens_policy(login: LoginRequest) -> LoginResult:
        token = login.message.get("token")
        if not isinstance(token, str):
            return LoginRefused("unauthorized", "a login token is required")
        checked = _check_token(secret, token, clock() - leeway)
        if isinstance(checked, LoginRefused):
            return checked
        if not valid_name(checked):  # signed, but not by make_token
            return LoginRefused("unauthorized", "invalid token")
        if "name" in login.message and login.message["name"] != checked:
            return LoginRefused("unauthorized", "the name does not match the token")
        return LoginAccepted(checked, authenticated=True)

    return signed_tokens_policy


async def run_policy(policy: LoginPolicy, login: LoginRequest) -> LoginResult:
    """Run ``policy`` on ``login``, awaiting its result if it is awaitable.

    Exceptions from the policy propagate; the runtime's per-connection firewall handles
    them. Cancellation: if cancelled while awaiting an asynchronous policy, the policy is
    cancelled with it and no result is returned.

    Raises:
        TypeError: the policy returned something other than :class:`LoginAccepted` or
            :class:`LoginRefused` (for instance ``None``, or a bare name).
    """
    result: object = policy(login)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, LoginAccepted | LoginRefused):
        raise TypeError(
            f"login policy {policy!r} returned {result!r}; expected LoginAccepted or LoginRefused"
        )
    return result
