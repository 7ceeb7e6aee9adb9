"""Notifier authentication: HS256 with a shared secret, RS256 and ES256 with a public key."""

from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from services.notifier.auth import verifier_from_settings
from shared import messages
from shared.settings import ConfigError
from tests.conftest import RunningPart
from tests.helpers import next_message
from tests.integration.test_notifier import (
    RunningNotifier,
    StartNotifier,
    expect_close,
    notifier_settings,
    send,
)
from tests.integration.test_notifier import notifiers as notifiers
from tests.integration.test_notifier import session as session

SECRET = "notifier-test-secret-of-a-decent-length"


@dataclass(frozen=True)
class Signer:
    """Signs tokens the way the configured notifier expects (or, on purpose, not)."""

    algorithm: str
    key: Any

    def token(self, sub: object, *, expires_in_s: float = 300, **claims: Any) -> str:
        payload = {"sub": sub, "exp": int(time.time() + expires_in_s), **claims}
        return jwt.encode(payload, self.key, algorithm=self.algorithm)


@dataclass(frozen=True)
class AuthCase:
    signer: Signer
    forger: Signer
    """Same algorithm, another key: its signatures must not verify."""
    settings: dict[str, SecretStr]


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _auth_case(algorithm: str) -> AuthCase:
    if algorithm == "HS256":
        return AuthCase(
            Signer("HS256", SECRET),
            Signer("HS256", "another-secret-of-the-same-length-xx"),
            {"notifier_jwt_secret": SecretStr(SECRET)},
        )
    if algorithm == "RS256":
        key, other = (rsa.generate_private_key(65537, 2048) for _ in range(2))
        return AuthCase(
            Signer("RS256", key),
            Signer("RS256", other),
            {"notifier_jwt_public_key": SecretStr(_pem(key))},
        )
    ec_key, ec_other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    return AuthCase(
        Signer("ES256", ec_key),
        Signer("ES256", ec_other),
        {"notifier_jwt_public_key": SecretStr(_pem(ec_key))},
    )


@pytest.fixture(scope="module", params=["HS256", "RS256", "ES256"])
def auth(request: pytest.FixtureRequest) -> AuthCase:
    return _auth_case(request.param)


@pytest.fixture
async def guarded(
    notifiers: StartNotifier,
    redis_server: RunningPart,
    auth: AuthCase,
) -> RunningNotifier:
    return await notifiers(notifier_settings(redis_server.url, **auth.settings))


async def test_a_valid_token_registers_through_the_url_or_a_message(
    guarded: RunningNotifier,
    session: aiohttp.ClientSession,
    auth: AuthCase,
    unique: str,
) -> None:
    user = f"user-{unique}"
    by_url = await session.ws_connect(
        guarded.socket_url(userId=user, token=auth.signer.token(user))
    )
    assert await next_message(by_url) == messages.registration_success(user)
    by_message = await session.ws_connect(guarded.socket_url())
    await send(by_message, {"type": "register", "userId": user, "token": auth.signer.token(user)})
    assert await next_message(by_message) == messages.registration_success(user)
    token_in_url = await session.ws_connect(guarded.socket_url(token=auth.signer.token(user)))
    await send(token_in_url, {"type": "register", "userId": user})
    assert await next_message(token_in_url) == messages.registration_success(user)
    for socket in (by_url, by_message, token_in_url):
        await socket.close()


def _refused_tokens(auth: AuthCase, user: str) -> dict[str, str | None]:
    return {
        "missing": None,
        "empty": "",
        "garbage": "not.a.jwt",
        "bad signature": auth.forger.token(user),
        "expired": auth.signer.token(user, expires_in_s=-60),
        "other user": auth.signer.token(f"{user}-not"),
        "no exp": jwt.encode({"sub": user}, auth.signer.key, algorithm=auth.signer.algorithm),
        "unsigned": jwt.encode({"sub": user, "exp": int(time.time()) + 60}, "", "none"),
        "eternal": auth.signer.token(user, expires_in_s=10**20),
        "long-lived": auth.signer.token(user, expires_in_s=60, iat=int(time.time()) - 86_400),
    }


@pytest.mark.parametrize("via", ["url", "message"])
async def test_a_refused_token_gets_an_error_then_close_1008(
    guarded: RunningNotifier,
    session: aiohttp.ClientSession,
    auth: AuthCase,
    unique: str,
    via: str,
) -> None:
    user = f"user-{unique}"
    for case, token in _refused_tokens(auth, user).items():
        if via == "url":
            query = {"userId": user} if token is None else {"userId": user, "token": token}
            socket = await session.ws_connect(guarded.socket_url(**query))
        else:
            socket = await session.ws_connect(guarded.socket_url())
            register: dict[str, object] = {"type": "register", "userId": user}
            if token is not None:
                register["token"] = token
            await send(socket, register)
        reply = await next_message(socket)
        assert reply["type"] == "error", case
        assert "authentication failed" in reply["message"], case
        await expect_close(socket, aiohttp.WSCloseCode.POLICY_VIOLATION)
    assert not guarded.notifier.hub.users


def test_the_reasons_are_clear(auth: AuthCase) -> None:
    verifier = verifier_from_settings(notifier_settings("redis://unused", **auth.settings))
    assert verifier is not None
    user = "user-1"
    reasons = {
        case: verifier.refusal(token, user) for case, token in _refused_tokens(auth, user).items()
    }
    assert reasons["missing"] == reasons["empty"] == "a token is required"
    assert reasons["expired"] == "the token has expired"
    assert reasons["bad signature"] == "the token's signature is invalid"
    assert reasons["other user"] == "the token was not issued for this userId"
    assert reasons["no exp"] == "the token has no exp claim"
    assert reasons["unsigned"] == "tokens signed with 'none' are not accepted"
    longer = "the token lives longer than NOTIFIER_MAX_TOKEN_LIFETIME_S (86400 s)"
    assert reasons["eternal"] == reasons["long-lived"] == longer
    assert verifier.refusal(auth.signer.token(user), user) is None


def test_a_token_may_live_up_to_the_cap_from_its_iat_or_from_now(auth: AuthCase) -> None:
    settings = notifier_settings(
        "redis://unused", notifier_max_token_lifetime_s=600, **auth.settings
    )
    verifier = verifier_from_settings(settings)
    assert verifier is not None
    now = int(time.time())
    assert verifier.refusal(auth.signer.token("u", expires_in_s=590), "u") is None
    assert verifier.refusal(auth.signer.token("u", expires_in_s=590, iat=now - 5), "u") is None
    for token in (
        auth.signer.token("u", expires_in_s=660),
        auth.signer.token("u", expires_in_s=300, iat=now - 400),
    ):
        assert verifier.refusal(token, "u") == (
            "the token lives longer than NOTIFIER_MAX_TOKEN_LIFETIME_S (600 s)"
        )


def test_without_keys_there_is_no_verifier_and_a_bad_key_stops_the_start() -> None:
    assert verifier_from_settings(notifier_settings("redis://unused")) is None
    blank = notifier_settings("redis://unused", notifier_jwt_secret=SecretStr("   "))
    assert verifier_from_settings(blank) is None, "a blank secret is no HS256 key"
    with pytest.raises(ConfigError, match="NOTIFIER_JWT_PUBLIC_KEY"):
        verifier_from_settings(
            notifier_settings("redis://unused", notifier_jwt_public_key=SecretStr("not a key"))
        )


def test_a_public_key_in_one_line_with_escaped_newlines_is_accepted() -> None:
    case = _auth_case("ES256")
    one_line = case.settings["notifier_jwt_public_key"].get_secret_value().replace("\n", "\\n")
    settings = notifier_settings("redis://unused", notifier_jwt_public_key=SecretStr(one_line))
    verifier = verifier_from_settings(settings)
    assert verifier is not None and verifier.refusal(case.signer.token("u"), "u") is None


def _hs256_by_hand(claims: dict[str, object], secret: bytes) -> str:
    """PyJWT refuses to sign with a PEM as HMAC secret; an attacker would not."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signed = f"{part(header)}.{part(json.dumps(claims).encode())}"
    return f"{signed}.{part(hmac.digest(secret, signed.encode(), 'sha256'))}"


def test_an_hs256_token_made_with_the_public_key_as_secret_is_refused() -> None:
    case = _auth_case("RS256")
    pem = case.settings["notifier_jwt_public_key"].get_secret_value()
    settings = notifier_settings(
        "redis://unused", notifier_jwt_public_key=SecretStr(pem), notifier_jwt_secret=None
    )
    verifier = verifier_from_settings(settings)
    assert verifier is not None
    forged = _hs256_by_hand({"sub": "u", "exp": int(time.time()) + 60}, pem.encode())
    assert verifier.refusal(forged, "u") == "tokens signed with 'HS256' are not accepted"
