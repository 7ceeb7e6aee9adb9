"""The fields of a Stripe object, each checked as it is read.

A value that is not one Stripe sends is a MalformedEvent (answered 400 like any malformed
body), so nothing read from a signed body can fail later, when it is compared, stored or
encoded: a lone surrogate (`"\\ud800"`, which no UTF-8 encoder takes), an integer past 64 bits
(which BSON cannot hold), a negative amount. Fields the webhook never reads are not looked at.
"""

from __future__ import annotations

from typing import Any

from shared.model import identifier_problem

# Stripe's ids are at most 255 characters.
MAX_ID_CHARS = 255
# The largest integer a JSON number carries exactly: Stripe sends no larger amount (its largest,
# in IDR, is about 10^14 minor units), and MongoDB stores it as a 64-bit integer.
MAX_AMOUNT = 2**53 - 1

StripeObject = dict[str, Any]


class MalformedEvent(ValueError):
    """A correctly signed body that is not a Stripe event of the expected shape."""


def stripe_id(value: object, where: str) -> str | None:
    """An id (or an event type), None when absent: printable ASCII, as Stripe's are."""
    if value is None:
        return None
    if (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and value.isascii()
        and value.isprintable()
    ):
        return value
    raise MalformedEvent(f"{where} is not a Stripe id")


def id_of(stripe_object: StripeObject, key: str) -> str | None:
    """The id at `key`, or that of the object expanded there."""
    value = stripe_object.get(key)
    if isinstance(value, dict):
        value = value.get("id")
    return stripe_id(value, f"data.object.{key}")


def required_id(stripe_object: StripeObject, key: str) -> str:
    value = id_of(stripe_object, key)
    if value is None:
        raise MalformedEvent(f"data.object.{key} is missing")
    return value


def ride_id_of(stripe_object: StripeObject) -> str | None:
    """The rideId in the metadata, as the consumer accepts rideIds."""
    return metadata_identifier(stripe_object, "rideId")


def metadata_identifier(stripe_object: StripeObject, key: str) -> str | None:
    """An identifier this system put in the metadata (rideId, refundId), None when absent."""
    metadata = stripe_object.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return identifier(value, f"data.object.metadata.{key}")


def identifier(value: object, where: str) -> str | None:
    """A rideId-like value (what the consumer accepts), None when absent."""
    if value is None:
        return None
    problem = identifier_problem(value, where)
    if problem is not None:
        raise MalformedEvent(problem)
    assert isinstance(value, str)
    return value


def attempt_of(stripe_object: StripeObject) -> int | None:
    """The attempt number in the metadata; None when absent or not a small number (sessions
    made before attempts carry none)."""
    metadata = stripe_object.get("metadata")
    value = metadata.get("attempt") if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        return int(value) or None
    return None


def amount_of(stripe_object: StripeObject, key: str) -> int | None:
    """An amount in minor units, None when absent: a whole number, 0 to MAX_AMOUNT."""
    value = stripe_object.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_AMOUNT:
        return value
    raise MalformedEvent(f"data.object.{key} is not an amount in minor units")


def currency_of(stripe_object: StripeObject) -> str | None:
    """A three-letter currency code, lowercase as Stripe writes them; None when absent."""
    value = stripe_object.get("currency")
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha():
        return value.lower()
    raise MalformedEvent("data.object.currency is not a currency code")


def text_of(stripe_object: StripeObject, key: str) -> str | None:
    """A short printable text (a failure reason), None when absent."""
    value = stripe_object.get(key)
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS and value.isprintable():
        return value
    raise MalformedEvent(f"data.object.{key} is not a short text")
