from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.model import (
    LINK_NOT_OFFERED_STATUSES,
    MAX_EVENT_BYTES,
    OWED_STATUSES,
    UNPAID_STATUSES,
    InvalidRideEvent,
    PaymentStatus,
    can_transition,
    chargeable_amount,
    parse_ride_event,
    statuses_that_may_become,
    to_minor_units,
)


def event(**fields: object) -> bytes:
    return json.dumps(
        {"rideId": "ride123", "userId": "user456", "fare": "25.50", **fields}
    ).encode()


def test_parses_the_contract_example() -> None:
    parsed = parse_ride_event(event())
    assert (parsed.ride_id, parsed.user_id, parsed.fare) == ("ride123", "user456", Decimal("25.50"))


def test_fare_may_be_a_json_number_without_float_error() -> None:
    assert parse_ride_event(b'{"rideId":"r","userId":"u","fare":0.1}').fare == Decimal("0.1")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (event(rideId=""), "rideId must be a non-empty string"),
        (event(rideId="   "), "rideId must be a non-empty string"),
        (event(userId=None), "userId must be a non-empty string"),
        (event(userId=7), "userId must be a non-empty string"),
        (event(rideId="r" * 201), "longer than"),
        (event(rideId="a\nb"), "control characters"),
        (event(fare="abc"), "not a decimal number"),
        (event(fare="-1"), "finite positive"),
        (event(fare="0"), "finite positive"),
        (event(fare="NaN"), "finite positive"),
        (event(fare="Infinity"), "finite positive"),
        (event(fare=True), "decimal string or a number"),
        (event(fare=None), "decimal string or a number"),
        (b'{"rideId":"r","userId":"u","fare":NaN}', "decimal string or a number"),
        (
            b'{"rideId":"r","userId":"u","fare":"1","pad":"' + b"x" * MAX_EVENT_BYTES + b'"}',
            "limit",
        ),
    ],
)
def test_invalid_events_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRideEvent, match=reason):
        parse_ride_event(raw)


def ride(fare: bytes, **extra: bytes) -> bytes:
    """A ride event with the fare and extra fields given as raw JSON text."""
    fields = b"".join(b',"%s":%s' % (name.encode(), value) for name, value in extra.items())
    return b'{"rideId":"r","userId":"u","fare":%s%s}' % (fare, fields)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (ride(b'"1"', deep=b"[" * 5000 + b"]" * 5000), "nested deeper than 32 levels"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested deeper than 32 levels"),
        (b"[" * 60_000, "nested deeper than 32 levels"),
        (ride(b"1" * 5000), "number longer than 100 characters"),
        (ride(b'"1"', n=b"-" + b"9" * 4301), "number longer than 100 characters"),
        (ride(b"1e999999999"), "over the largest chargeable amount"),
        (ride(b'"1e999999999"'), "over the largest chargeable amount"),
        (ride(b"1e9999999999999999999999"), "number out of range"),
        (ride(b'"1e9999999999999999999999"'), "not a decimal number"),
        (ride(b'"' + b"9" * 60_000 + b'"'), r"over the largest chargeable amount"),
        (ride(b"100000000"), "over the largest chargeable amount"),
        (b'{"rideId":"r\xff","userId":"u","fare":"1"}', "not UTF-8"),
        (b'{"rideId":"r\xed\xa0\x80","userId":"u","fare":"1"}', "not UTF-8"),
        ('{"rideId":"r","userId":"u","fare":"1"}'.encode("utf-16"), "not UTF-8"),
        (b'{"rideId":"r\\ud800","userId":"u","fare":"1"}', "unpaired surrogate"),
        (b'"' + b'\\"' * 30_000, "not valid JSON"),
        (ride(b'"1"', pad=b'"' + b"x" * 70_000 + b'"'), "over the 65536 byte limit"),
    ],
)
def test_hostile_events_are_refused_with_a_clear_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRideEvent, match=reason):
        parse_ride_event(raw)


def test_reasons_quote_at_most_a_short_excerpt_of_the_input() -> None:
    with pytest.raises(InvalidRideEvent) as refused:
        parse_ride_event(ride(b'"' + b"7" * 60_000 + b'"'))
    assert len(refused.value.reason) < 200


def test_a_long_fare_that_rounds_to_zero_is_quoted_only_in_part() -> None:
    fare = parse_ride_event(ride(b'"0.' + b"0" * 60_000 + b'1"')).fare
    with pytest.raises(InvalidRideEvent, match="rounds to zero") as refused:
        to_minor_units(fare, "usd")
    assert len(refused.value.reason) < 200


def test_nesting_and_numbers_inside_strings_are_only_text() -> None:
    raw = ride(b'"25.50"', note=b'"' + b"[" * 5000 + b"1" * 5000 + b'\\"{"')
    assert parse_ride_event(raw).fare == Decimal("25.50")


def test_a_moderately_nested_extra_field_is_accepted() -> None:
    assert parse_ride_event(ride(b"7", meta=b"[" * 31 + b"]" * 31)).fare == Decimal(7)


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    assert parse_ride_event(b"\xef\xbb\xbf" + event()).ride_id == "ride123"


@pytest.mark.parametrize(
    ("fare", "currency", "minor"),
    [
        ("25.50", "usd", 2550),
        ("25.505", "usd", 2551),  # half-up, not banker's rounding
        ("25.515", "usd", 2552),
        ("25.5049999999", "usd", 2550),
        ("0.005", "usd", 1),
        ("1234.5", "jpy", 1235),
        ("1.2345", "kwd", 1235),
        ("1E+2", "eur", 10000),
    ],
)
def test_fare_to_minor_units_rounds_half_up(fare: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(fare), currency) == minor


@pytest.mark.parametrize("fare", ["0.004", "1000000", "1e400", "1e-999999999"])
def test_unchargeable_fares_are_refused(fare: str) -> None:
    with pytest.raises(InvalidRideEvent):
        to_minor_units(Decimal(fare), "usd")


def test_final_statuses_never_change() -> None:
    for final in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED):
        assert final.is_final
        assert not any(can_transition(final, target) for target in PaymentStatus)


def test_failed_can_still_succeed_but_not_repeat() -> None:
    assert can_transition(PaymentStatus.FAILED, PaymentStatus.SUCCEEDED)
    assert not can_transition(PaymentStatus.FAILED, PaymentStatus.FAILED)
    assert not can_transition(PaymentStatus.PENDING, PaymentStatus.PENDING)


def test_update_filter_lists_the_statuses_a_target_may_follow() -> None:
    assert set(statuses_that_may_become(PaymentStatus.SUCCEEDED)) == {
        PaymentStatus.PENDING,
        PaymentStatus.PROCESSING,
        PaymentStatus.FAILED,
    }
    assert set(statuses_that_may_become(PaymentStatus.FAILED)) == {
        PaymentStatus.PENDING,
        PaymentStatus.PROCESSING,
    }


def test_a_delayed_payment_on_its_way_ends_in_success_or_failure_never_expiry() -> None:
    """Its session completed: it cannot expire, and `processing` is not offered a link."""
    assert {t for t in PaymentStatus if can_transition(PaymentStatus.PROCESSING, t)} == {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    }
    assert can_transition(PaymentStatus.FAILED, PaymentStatus.PROCESSING)  # a card, then a debit
    assert PaymentStatus.PROCESSING in OWED_STATUSES
    assert PaymentStatus.PROCESSING not in UNPAID_STATUSES  # no new attempt while it is
    assert PaymentStatus.PROCESSING in LINK_NOT_OFFERED_STATUSES


@pytest.mark.parametrize(
    ("fare", "currency", "reason"),
    [
        ("0.01", "usd", "fare 0.01 USD is below Stripe's minimum charge of 0.50 USD"),
        ("0.49", "usd", "fare 0.49 USD is below Stripe's minimum charge of 0.50 USD"),
        ("0.494", "usd", "fare 0.49 USD is below Stripe's minimum charge of 0.50 USD"),
        ("0.29", "gbp", "fare 0.29 GBP is below Stripe's minimum charge of 0.30 GBP"),
        ("174.99", "huf", "fare 174.99 HUF is below Stripe's minimum charge of 175.00 HUF"),
        ("5.125", "kwd", "fare 5.125 KWD cannot be charged: Stripe takes KWD in steps of 0.010"),
        ("500.5", "isk", "fare 500.50 ISK cannot be charged: Stripe takes ISK in steps of 1.00"),
    ],
)
def test_a_fare_stripe_would_refuse_is_refused_before_stripe_with_its_rule(
    fare: str, currency: str, reason: str
) -> None:
    with pytest.raises(InvalidRideEvent) as refused:
        chargeable_amount(Decimal(fare), currency)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("fare", "currency", "minor"),
    [
        ("0.50", "usd", 50),
        ("0.495", "usd", 50),  # rounded half-up first: 0.50 is chargeable
        ("0.30", "gbp", 30),
        ("5.12", "kwd", 5120),
        ("500", "isk", 50000),
        ("50", "jpy", 50),
        ("0.01", "kes", 1),  # no minimum known without an exchange rate: one minor unit
    ],
)
def test_a_fare_stripe_takes_is_its_amount_in_minor_units(
    fare: str, currency: str, minor: int
) -> None:
    assert chargeable_amount(Decimal(fare), currency) == minor
