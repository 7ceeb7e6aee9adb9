"""Who may register for a user's notifications: JWTs whose `sub` is that user.

HS256 tokens are checked with NOTIFIER_JWT_SECRET, RS256 or ES256 tokens with the PEM public
key in NOTIFIER_JWT_PUBLIC_KEY (the key's type decides which). Each algorithm is tied to its
own key, so a token cannot pick a public key as its HMAC secret. A token may live at most
NOTIFIER_MAX_TOKEN_LIFETIME_S, from its `iat` (or from now, without one) to its `exp`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.settings import ConfigError, Settings

REQUIRED_CLAIMS = ["exp", "sub"]

VerifyingKey = str | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


# Far beyond any real token; keeps a huge `exp` (PyJWT accepts any integer) within a float.
LATEST_EXPIRY = 2**40


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What an accepted token allows: registering as its `sub` until it expires."""

    expires_at: float
    """Unix time of the token's `exp`."""


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    keys: dict[str, VerifyingKey]
    """Algorithm name to the key that verifies it."""
    max_lifetime_s: float
    """The longest a token may live (NOTIFIER_MAX_TOKEN_LIFETIME_S)."""

    def refusal(self, token: object, user_id: str) -> str | None:
        """Why `token` does not let its bearer register as `user_id`; None when it does."""
        outcome = self.verify(token, user_id)
        return outcome if isinstance(outcome, str) else None

    def verify(self, token: object, user_id: str) -> TokenGrant | str:
        """The grant `token` gives its bearer as `user_id`, or why it gives none."""
        if not isinstance(token, str) or not token:
            return "a token is required"
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            return "the token is malformed"
        key = self.keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None or not isinstance(algorithm, str):
            return f"tokens signed with {algorithm!r:.60} are not accepted"
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], options={"require": REQUIRED_CLAIMS}
            )
        except jwt.ExpiredSignatureError:
            return "the token has expired"
        except jwt.InvalidSignatureError:
            return "the token's signature is invalid"
        except jwt.MissingRequiredClaimError as error:
            return f"the token has no {error.claim} claim"
        except jwt.PyJWTError as error:
            return f"the token is invalid: {error}"
        if claims["sub"] != user_id:
            return "the token was not issued for this userId"
        expires_at = min(int(claims["exp"]), LATEST_EXPIRY)
        if expires_at - _issued_at(claims) > self.max_lifetime_s:
            return (
                "the token lives longer than NOTIFIER_MAX_TOKEN_LIFETIME_S "
                f"({self.max_lifetime_s:g} s)"
            )
        return TokenGrant(expires_at=float(expires_at))


def _issued_at(claims: dict[str, Any]) -> float:
    """The token's `iat` (PyJWT has checked that it is a number and not in the future), else
    now."""
    try:
        return float(claims.get("iat", time.time()))
    except (TypeError, ValueError, OverflowError):
        return time.time()


def verifier_from_settings(settings: Settings) -> TokenVerifier | None:
    """The configured verifier, or None when no key is set (authentication off).

    Raises ConfigError when NOTIFIER_JWT_PUBLIC_KEY is not a usable PEM public key.
    """
    keys: dict[str, VerifyingKey] = {}
    if settings.notifier_jwt_secret is not None:
        secret = settings.notifier_jwt_secret.get_secret_value()
        if secret.strip():  # blank is unset, as the start-up check has it
            keys["HS256"] = secret
    if settings.notifier_jwt_public_key is not None:
        pem = settings.notifier_jwt_public_key.get_secret_value()
        if pem.strip():
            keys.update(_public_key_algorithms(pem))
    return TokenVerifier(keys, settings.notifier_max_token_lifetime_s) if keys else None


def _public_key_algorithms(pem: str) -> dict[str, VerifyingKey]:
    # A PEM in one environment variable line often arrives with literal "\n" escapes.
    text = pem.replace("\\n", "\n") if "\n" not in pem.strip() else pem
    try:
        key = load_pem_public_key(text.strip().encode())
    except ValueError as error:
        raise ConfigError(f"NOTIFIER_JWT_PUBLIC_KEY is not a PEM public key: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return {"RS256": key}
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return {"ES256": key}
    raise ConfigError("NOTIFIER_JWT_PUBLIC_KEY must be an RSA or a P-256 (ES256) public key")
