"""Login policies: name rules, signed tokens, and running sync and async policies."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_ws
from trio_ws import App
from trio_ws._login import (
    NAME_RE,
    LoginAccepted,
    LoginPolicy,
    LoginRefused,
    LoginRequest,
    LoginResult,
    make_token,
    run_policy,
    signed_tokens,
    unique_names,
    valid_name,
)

from .conftest import receive_json, running

SECRET = b"s3cret-key-for-tests"
NOW = 1_700_000_000.0


SIGNED_ALICE = LoginAccepted("alice", authenticated=True)
"""What signed_tokens accepts: the token's name, authenticated (it may take over)."""


def login(**fields: Any) -> LoginRequest:
    return LoginRequest(message={"type": "login", **fields}, request=None, peer="127.0.0.1:5000")


def decide(policy: LoginPolicy, request: LoginRequest) -> LoginResult:
    result = policy(request)
    assert isinstance(result, LoginAccepted | LoginRefused)
    return result


# ---------------------------------------------------------------------------------------
# Names

GOOD_NAMES = ["a", "Alice", "bob_2", "x.y-z", "0", "_", "-", ".", "A" * 32]
BAD_NAMES: list[object] = [
    "",
    "A" * 33,
    "héloïse",
    "名前",
    "bob smith",
    " bob",
    "bob\n",
    "bob\t",
    "a/b",
    "a@b",
    "a\x00",
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth "alice" is not ASCII
    "٣",  # an Arabic-Indic digit matches \d but not [0-9]
]
NOT_STRINGS: list[object] = [None, 42, 4.2, True, ["alice"], {"name": "alice"}, b"alice"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names(name: str) -> None:
    assert valid_name(name)
    assert NAME_RE.fullmatch(name)


@pytest.mark.parametrize("name", BAD_NAMES + NOT_STRINGS)
def test_invalid_names(name: object) -> None:
    assert not valid_name(name)
    if isinstance(name, str):
        assert not NAME_RE.fullmatch(name)


def test_valid_name_max_length() -> None:
    assert valid_name("g" * 64, max_length=64)
    assert not valid_name("g" * 65, max_length=64)
    assert not valid_name("g" * 33)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_unique_names_accepts_valid_names_as_given(name: str) -> None:
    assert decide(unique_names(), login(name=name)) == LoginAccepted(name)


@pytest.mark.parametrize("name", BAD_NAMES + NOT_STRINGS)
def test_unique_names_refuses_bad_names(name: object) -> None:
    result = decide(unique_names(), login(name=name))
    assert isinstance(result, LoginRefused)
    assert result.code == "bad_name"
    assert result.message


def test_unique_names_refuses_a_missing_name() -> None:
    result = decide(unique_names(), login())
    assert isinstance(result, LoginRefused)
    assert result.code == "bad_name"
    assert "no name" in result.message


def test_unique_names_ignores_other_fields() -> None:
    assert decide(unique_names(), login(name="eve", token=1, x=[1])) == LoginAccepted("eve")


def test_results_check_their_field_types() -> None:
    with pytest.raises(TypeError):
        LoginAccepted(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        LoginRefused("bad_name", None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Signed tokens


def clock_at(now: float) -> Any:
    return lambda: now


def token_policy(now: float = NOW, **kwargs: Any) -> LoginPolicy:
    return signed_tokens(SECRET, clock=clock_at(now), **kwargs)


def refused_unauthorized(result: LoginResult) -> str:
    assert isinstance(result, LoginRefused)
    assert result.code == "unauthorized"
    return result.message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_format() -> None:
    token = make_token(SECRET, "alice", NOW + 60.9)
    name, expiry, mac = token.split(".")
    assert base64.urlsafe_b64decode(name + "==") == b"alice"
    assert expiry == str(int(NOW) + 60)
    assert len(mac) == 43  # 32 bytes of HMAC-SHA256, unpadded base64url
    assert token.isascii()
    assert "=" not in token


def test_a_valid_token_logs_in_as_its_name() -> None:
    token = make_token(SECRET, "alice", NOW + 60)
    assert decide(token_policy(), login(token=token)) == SIGNED_ALICE


def test_a_matching_name_field_is_fine() -> None:
    token = make_token(SECRET, "alice", NOW + 60)
    assert decide(token_policy(), login(token=token, name="alice")) == SIGNED_ALICE


@pytest.mark.parametrize("name", ["bob", "Alice", "", None, 42])
def test_a_name_field_must_match_the_token(name: object) -> None:
    token = make_token(SECRET, "alice", NOW + 60)
    message = refused_unauthorized(decide(token_policy(), login(token=token, name=name)))
    assert "does not match" in message


def test_an_expired_token_is_refused() -> None:
    token = make_token(SECRET, "alice", NOW + 60)
    assert decide(token_policy(NOW + 59.9), login(token=token)) == SIGNED_ALICE
    assert refused_unauthorized(decide(token_policy(NOW + 60), login(token=token))) == (
        "token expired"
    )
    assert refused_unauthorized(decide(token_policy(NOW + 3600), login(token=token))) == (
        "token expired"
    )


def test_leeway_extends_expiry() -> None:
    token = make_token(SECRET, "alice", NOW)
    assert decide(token_policy(NOW + 29, leeway=30), login(token=token)) == SIGNED_ALICE
    refused_unauthorized(decide(token_policy(NOW + 30, leeway=30), login(token=token)))


def test_the_clock_is_read_at_each_login() -> None:
    now = [NOW]
    policy = signed_tokens(SECRET, clock=lambda: now[0])
    token = make_token(SECRET, "alice", NOW + 10)
    assert decide(policy, login(token=token)) == SIGNED_ALICE
    now[0] += 10
    refused_unauthorized(decide(policy, login(token=token)))


def test_a_tampered_name_is_refused() -> None:
    _, expiry, mac = make_token(SECRET, "alice", NOW + 60).split(".")
    forged = f"{b64(b'admin')}.{expiry}.{mac}"
    assert refused_unauthorized(decide(token_policy(), login(token=forged))) == "invalid token"


def test_a_tampered_expiry_is_refused() -> None:
    name, _, mac = make_token(SECRET, "alice", NOW - 60).split(".")
    forged = f"{name}.{int(NOW) + 10**9}.{mac}"
    assert refused_unauthorized(decide(token_policy(), login(token=forged))) == "invalid token"


def test_a_tampered_mac_is_refused() -> None:
    token = make_token(SECRET, "alice", NOW + 60)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert refused_unauthorized(decide(token_policy(), login(token=flipped))) == "invalid token"


def test_a_token_from_another_secret_is_refused() -> None:
    token = make_token(b"another secret", "alice", NOW + 60)
    assert refused_unauthorized(decide(token_policy(), login(token=token))) == "invalid token"


def test_a_signed_but_invalid_name_is_refused() -> None:
    # Signed with the right secret, but not by make_token (which refuses such names).
    import hashlib
    import hmac

    signed = f"{b64(b'bob smith')}.{int(NOW) + 60}"
    mac = b64(hmac.new(SECRET, signed.encode(), hashlib.sha256).digest())
    result = decide(token_policy(), login(token=f"{signed}.{mac}"))
    assert refused_unauthorized(result) == "invalid token"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "...",
        "abc",
        "a.b",
        "a.b.c.d",
        "YWxpY2U.notanumber.mac",
        "YWxpY2U.-5.mac",
        "YWxpY2U.+5.mac",
        "YWxpY2U.1_0.mac",
        "YWxpY2U.٣.mac",
        "YWxpY2U.1.mäc",
        "x" * 10_000,
        "a.1." + "A" * 10_000,
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refused_unauthorized(decide(token_policy(), login(token=token))) == "invalid token"


@pytest.mark.parametrize("token", [None, 42, ["t"], {"t": 1}, b"token"])
def test_a_missing_or_non_string_token_is_refused(token: object) -> None:
    fields = {} if token is None else {"token": token}
    message = refused_unauthorized(decide(token_policy(), login(**fields)))
    assert "required" in message


def test_make_token_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="secret"):
        make_token(b"", "alice", NOW)
    with pytest.raises(ValueError, match="invalid name"):
        make_token(SECRET, "bob smith", NOW)
    with pytest.raises(ValueError, match="negative"):
        make_token(SECRET, "alice", -1)


def test_signed_tokens_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="secret"):
        signed_tokens(b"")
    with pytest.raises(ValueError, match="leeway"):
        signed_tokens(SECRET, leeway=-1)


def test_signed_tokens_uses_the_real_clock_by_default() -> None:
    import time

    policy = signed_tokens(SECRET)
    fresh = make_token(SECRET, "alice", time.time() + 3600)
    stale = make_token(SECRET, "alice", time.time() - 3600)
    assert decide(policy, login(token=fresh)) == SIGNED_ALICE
    refused_unauthorized(decide(policy, login(token=stale)))


# ---------------------------------------------------------------------------------------
# run_policy


async def test_run_policy_with_a_sync_policy() -> None:
    assert await run_policy(unique_names(), login(name="alice")) == LoginAccepted("alice")
    result = await run_policy(unique_names(), login(name=""))
    assert isinstance(result, LoginRefused)


async def test_run_policy_with_an_async_policy() -> None:
    seen: list[LoginRequest] = []

    async def from_database(request: LoginRequest) -> LoginResult:
        await trio.lowlevel.checkpoint()
        seen.append(request)
        if request.message.get("name") == "root":
            return LoginRefused("unauthorized", "no")
        return LoginAccepted(str(request.message["name"]).lower())

    request = login(name="Alice")
    assert await run_policy(from_database, request) == LoginAccepted("alice")
    assert seen == [request]
    assert await run_policy(from_database, login(name="root")) == LoginRefused("unauthorized", "no")


async def test_run_policy_with_a_callable_object_returning_an_awaitable() -> None:
    class Policy:
        def __call__(self, request: LoginRequest) -> Any:
            async def decide() -> LoginResult:
                return LoginAccepted(request.message["name"])

            return decide()

    assert await run_policy(Policy(), login(name="bob")) == LoginAccepted("bob")


@pytest.mark.parametrize("returned", [None, "alice", True, {"name": "alice"}])
async def test_run_policy_refuses_a_wrong_return_value(returned: object) -> None:
    def sync_policy(request: LoginRequest) -> Any:
        return returned

    async def async_policy(request: LoginRequest) -> Any:
        return returned

    for policy in (sync_policy, async_policy):
        with pytest.raises(TypeError, match="expected LoginAccepted or LoginRefused"):
            await run_policy(policy, login(name="alice"))


async def test_run_policy_lets_policy_exceptions_through() -> None:
    async def broken(request: LoginRequest) -> LoginResult:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        await run_policy(broken, login(name="alice"))


async def test_run_policy_can_be_cancelled() -> None:
    async def slow(request: LoginRequest) -> LoginResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.move_on_after(0) as scope:
        await run_policy(slow, login(name="alice"))
    assert scope.cancelled_caught


async def test_login_request_carries_the_http_request() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def by_cookie(request: LoginRequest) -> LoginResult:
        assert request.request is not None
        seen.append((request.request.path, request.request.query, request.request.get("Cookie")))
        if request.request.get("Cookie") == "session=abc":
            return LoginAccepted("alice")
        return LoginRefused("unauthorized", "no session")

    app = App(login=by_cookie)
    with trio.fail_after(5):
        async with running(app) as address:
            url = f"ws://{address}/ws?room=1"
            async with trio_ws.connect(url, headers=[("Cookie", "session=abc")]) as conn:
                await conn.send({"type": "login"})
                assert await receive_json(conn) == {"type": "welcome", "name": "alice"}
            async with trio_ws.connect(url) as conn:
                await conn.send({"type": "login"})
                assert (await receive_json(conn))["code"] == "unauthorized"
    assert seen == [("/ws", "room=1", "session=abc"), ("/ws", "room=1", None)]
