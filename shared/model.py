"""The payment domain: ride events, money in minor units, statuses and their transitions.

Pure logic, no I/O: everything here can be tested without a server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

from shared import currencies

MAX_EVENT_BYTES = 64 * 1024
# A ride event is flat; the bounds leave room for extra fields without letting the recursive
# json decoder, Python's int parsing or Decimal see a pathological document.
MAX_NESTING_DEPTH = 32
MAX_NUMBER_LENGTH = 100
MAX_ID_LENGTH = 200
# The largest amount Stripe takes, in major units of a zero-decimal currency.
MAX_FARE = Decimal(99_999_999)
# Stripe refuses amounts above eight digits in minor units for most currencies.
MAX_AMOUNT_MINOR = 99_999_999


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"  # a delayed payment method (a bank debit) is on its way
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    DISPUTE_LOST = "dispute_lost"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


# Final as far as paying goes: no checkout event moves them (refunds and disputes move a paid
# ride on), and their payment link is no longer offered.
FINAL_STATUSES = frozenset(
    {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.CANCELED,
        PaymentStatus.EXPIRED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DISPUTED,
        PaymentStatus.DISPUTE_LOST,
    }
)

# `failed` is not final: the customer may retry the card in the same Checkout Session, or pay
# there by bank debit (`processing`). A session completed by bank debit can no longer expire:
# the debit succeeds or fails (or, rarely, its PaymentIntent is canceled).
ALLOWED_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset(
        {
            PaymentStatus.PROCESSING,
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.CANCELED,
            PaymentStatus.EXPIRED,
        }
    ),
    PaymentStatus.PROCESSING: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED}
    ),
    PaymentStatus.FAILED: frozenset(
        {
            PaymentStatus.PROCESSING,
            PaymentStatus.SUCCEEDED,
            PaymentStatus.CANCELED,
            PaymentStatus.EXPIRED,
        }
    ),
    PaymentStatus.SUCCEEDED: frozenset(),
    PaymentStatus.CANCELED: frozenset(),
    PaymentStatus.EXPIRED: frozenset(),
    # Refunds and disputes move a paid ride on (shared/refunds.py); no collection event does.
    PaymentStatus.PARTIALLY_REFUNDED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
    PaymentStatus.DISPUTED: frozenset(),
    PaymentStatus.DISPUTE_LOST: frozenset(),
}

# A ride whose charge went through: money may go back from it (refunds) or be contested.
PAID_STATUSES = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
)


def status_after_refunds(amount: int, amount_refunded: int) -> PaymentStatus:
    """The status of a paid ride once `amount_refunded` of its `amount` went back."""
    if amount_refunded <= 0:
        return PaymentStatus.SUCCEEDED
    if amount_refunded >= amount:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED


# A ride in one of these is still owed: a new attempt (a new Checkout Session) may collect it,
# and a success on any attempt, even an earlier one, settles it.
UNPAID_STATUSES: tuple[PaymentStatus, ...] = (
    PaymentStatus.PENDING,
    PaymentStatus.FAILED,
    PaymentStatus.EXPIRED,
    PaymentStatus.CANCELED,
)

# What a rider still owes (the outstanding list): the unpaid rides, and those whose delayed
# payment is on its way, since it may yet fail.
OWED_STATUSES: tuple[PaymentStatus, ...] = (*UNPAID_STATUSES, PaymentStatus.PROCESSING)

# Statuses in which the ride's current link is not offered to the rider: paid or ended, or its
# session completed by a delayed payment that is on its way (it can never be paid again).
LINK_NOT_OFFERED_STATUSES = FINAL_STATUSES | {PaymentStatus.PROCESSING}


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
    """Decode and validate one `payment-events` value, or raise InvalidRideEvent.

    No input raises anything else: the size is checked before decoding, the nesting depth and
    number lengths before the (recursive) json decoder runs.
    """
    document = decode_json_object(raw)
    return RideEvent(
        ride_id=_identifier(document, "rideId"),
        user_id=_identifier(document, "userId"),
        fare=parse_fare(document.get("fare")),
    )


def decode_json_object(raw: bytes) -> dict[str, object]:
    """A Kafka value as a JSON object (numbers as Decimal), or raise InvalidRideEvent.

    No input raises anything else: the size is checked before decoding, the nesting depth and
    number lengths before the (recursive) json decoder runs.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidRideEvent(f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidRideEvent(f"event is not valid JSON: not UTF-8 ({error.reason})") from None
    _check_bounds(text)
    try:
        document = json.loads(text, parse_float=_json_number, parse_int=_json_number)
    except InvalidRideEvent:
        raise
    except (ValueError, RecursionError) as error:
        raise InvalidRideEvent(f"event is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidRideEvent("event must be a JSON object")
    return document


# A JSON string (an unterminated one runs to the end, so matching never backtracks), a bracket,
# or a run of number characters. Only what is outside strings counts for the bounds.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]|[-+.0-9eE]++', re.DOTALL)


def _check_bounds(text: str) -> None:
    """Refuse nesting deeper than MAX_NESTING_DEPTH and numbers longer than MAX_NUMBER_LENGTH,
    in one pass without recursion."""
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                raise InvalidRideEvent(f"event is nested deeper than {MAX_NESTING_DEPTH} levels")
        elif token in ("]", "}"):
            depth -= 1
        elif token[0] != '"' and len(token) > MAX_NUMBER_LENGTH:
            raise InvalidRideEvent(f"event has a number longer than {MAX_NUMBER_LENGTH} characters")


def _json_number(text: str) -> Decimal:
    """Every JSON number as a Decimal: exact, and free of the int parsing limit."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidRideEvent(f"event has a number out of range: {_shown(text)}") from None


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
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        return f"{key} contains an unpaired surrogate (not valid Unicode)"
    return None


def parse_fare(value: object, what: str = "fare") -> Decimal:
    """A fare is a decimal string or a JSON number, finite, positive and chargeable. `what`
    names the value in the reasons (a refund's `amount` is checked the same way)."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidRideEvent(f"{what} must be a decimal string or a number")
    try:
        fare = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidRideEvent(f"{what} {_shown(value)} is not a decimal number") from None
    if not fare.is_finite() or fare <= 0:
        raise InvalidRideEvent(f"{what} {_shown(value)} must be a finite positive number")
    if fare > MAX_FARE:
        raise InvalidRideEvent(f"{what} {_shown(value)} is over the largest chargeable amount")
    return fare


def _shown(value: object, limit: int = 40) -> str:
    """A value as a reason may quote it: an attacker's megabyte never reaches a log line."""
    text = repr(value) if isinstance(value, str | bytes) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def currency_exponent(currency: str) -> int:
    return currencies.decimals(currency)


def to_minor_units(fare: Decimal, currency: str, what: str = "fare") -> int:
    """The fare in the currency's minor unit, rounded half-up; raise if it is not chargeable.
    `what` names the value in the reasons."""
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    try:
        minor = int(
            fare.quantize(quantum, rounding=ROUND_HALF_UP).scaleb(currency_exponent(currency))
        )
    except InvalidOperation:
        raise InvalidRideEvent(f"{what} {_shown(fare)} is too large") from None
    if minor < 1:
        raise InvalidRideEvent(f"{what} {_shown(fare)} rounds to zero {currency.upper()}")
    if minor > MAX_AMOUNT_MINOR:
        raise InvalidRideEvent(f"{what} {_shown(fare)} is over the largest chargeable amount")
    return minor


def chargeable_amount(fare: Decimal, currency: str) -> int:
    """The fare in minor units, as to_minor_units, or raise when Stripe would refuse to charge
    it (shared/currencies.py): below its minimum charge, or off the currency's step."""
    amount = to_minor_units(fare, currency)
    refusal = currencies.charge_refusal(amount, currency)
    if refusal is None:
        return amount
    shown = currencies.format_amount(amount, currency)
    if refusal.reason == "too_small":
        minimum = currencies.format_amount(refusal.minimum or 1, currency)
        raise InvalidRideEvent(f"fare {shown} is below Stripe's minimum charge of {minimum}")
    step = currencies.to_major(refusal.step, currency)
    raise InvalidRideEvent(
        f"fare {shown} cannot be charged: Stripe takes {currency.upper()} in steps of {step}"
    )
