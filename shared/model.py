"""The payment domain: ride events, money in minor units, statuses and their transitions.

Pure logic, no I/O: everything here can be tested without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

MAX_EVENT_BYTES = 64 * 1024
MAX_ID_LENGTH = 200
# Stripe refuses amounts above eight digits in minor units for most currencies.
MAX_AMOUNT_MINOR = 99_999_999

# ISO 4217 currencies whose minor unit is not the cent (exponent 2).
_ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED})

# `failed` is not final: the customer may retry the card in the same Checkout Session.
ALLOWED_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset(
        {
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.CANCELED,
            PaymentStatus.EXPIRED,
        }
    ),
    PaymentStatus.FAILED: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED}
    ),
    PaymentStatus.SUCCEEDED: frozenset(),
    PaymentStatus.CANCELED: frozenset(),
    PaymentStatus.EXPIRED: frozenset(),
}


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def statuses_that_may_become(target: PaymentStatus) -> list[PaymentStatus]:
    """The statuses a record may hold for `target` to be applied (the update's filter)."""
    return [status for status, targets in ALLOWED_TRANSITIONS.items() if target in targets]


class InvalidRideEvent(ValueError):
    """A ride event that can never be processed; `reason` says why, for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RideEvent:
    ride_id: str
    user_id: str
    fare: Decimal


def parse_ride_event(raw: bytes) -> RideEvent:
    """Decode and validate one `payment-events` value, or raise InvalidRideEvent."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidRideEvent(f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit")
    try:
        document = json.loads(raw, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRideEvent(f"event is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidRideEvent("event must be a JSON object")
    return RideEvent(
        ride_id=_identifier(document, "rideId"),
        user_id=_identifier(document, "userId"),
        fare=parse_fare(document.get("fare")),
    )


def _identifier(document: dict[str, object], key: str) -> str:
    value = document.get(key)
    problem = identifier_problem(value, key)
    if problem is not None:
        raise InvalidRideEvent(problem)
    assert isinstance(value, str)
    return value


def identifier_problem(value: object, key: str) -> str | None:
    """What is wrong with a rideId or userId, or None: a non-empty string of sane length."""
    if not isinstance(value, str) or not value.strip():
        return f"{key} must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return f"{key} is longer than {MAX_ID_LENGTH} characters"
    if any(ord(char) < 0x20 for char in value):
        return f"{key} contains control characters"
    return None


def parse_fare(value: object) -> Decimal:
    """A fare is a decimal string or a JSON number, finite and positive."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidRideEvent("fare must be a decimal string or a number")
    try:
        fare = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidRideEvent(f"fare {value!r} is not a decimal number") from None
    if not fare.is_finite() or fare <= 0:
        raise InvalidRideEvent(f"fare {value!r} must be a finite positive number")
    return fare


def currency_exponent(currency: str) -> int:
    code = currency.lower()
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(fare: Decimal, currency: str) -> int:
    """The fare in the currency's minor unit, rounded half-up; raise if it is not chargeable."""
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    try:
        minor = int(
            fare.quantize(quantum, rounding=ROUND_HALF_UP).scaleb(currency_exponent(currency))
        )
    except InvalidOperation:
        raise InvalidRideEvent(f"fare {fare} is too large") from None
    if minor < 1:
        raise InvalidRideEvent(f"fare {fare} rounds to zero {currency.upper()}")
    if minor > MAX_AMOUNT_MINOR:
        raise InvalidRideEvent(f"fare {fare} is over the largest chargeable amount")
    return minor
