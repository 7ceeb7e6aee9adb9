"""Refund requests and what may still go back: pure logic."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared import messages
from shared.bus import StoredMessage, still_relevant
from shared.model import InvalidRideEvent, PaymentStatus, status_after_refunds
from shared.refund_model import (
    Refund,
    RefundRefused,
    RefundStatus,
    amount_to_refund,
    parse_refund_request,
)
from tests.helpers import status_update

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def refund(amount: int, status: RefundStatus) -> Refund:
    return Refund(f"rf-{amount}-{status}", None, amount, None, status, NOW, NOW)


def test_a_request_without_amount_or_reason_is_valid() -> None:
    request = parse_refund_request(b'{"refundId": "rf-1", "rideId": "ride-1"}')
    assert (request.refund_id, request.ride_id, request.amount, request.reason) == (
        "rf-1",
        "ride-1",
        None,
        None,
    )
    assert parse_refund_request(b'{"refundId":"r","rideId":"x","amount":5.5}').amount == Decimal(
        "5.5"
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"rideId": "x"}', "refundId must be a non-empty string"),
        (b'{"refundId": "r", "rideId": ""}', "rideId must be a non-empty string"),
        (b'{"refundId": "r", "rideId": "x", "amount": "0"}', "finite positive"),
        (b'{"refundId": "r", "rideId": "x", "reason": "whim"}', "reason must be one of"),
        (b"[" * 40, "nested deeper"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRideEvent) as refused:
        parse_refund_request(raw)
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (b'"abc"', "amount 'abc' is not a decimal number"),
        (b'"-5"', "amount '-5' must be a finite positive number"),
        (b"true", "amount must be a decimal string or a number"),
        (b'"1e9"', "amount '1e9' is over the largest chargeable amount"),
    ],
)
def test_a_bad_amount_is_refused_naming_the_amount(amount: bytes, reason: str) -> None:
    with pytest.raises(InvalidRideEvent) as refused:
        parse_refund_request(b'{"refundId": "r", "rideId": "x", "amount": ' + amount + b"}")
    assert refused.value.reason == reason


def test_an_amount_below_the_minor_unit_is_refused_naming_the_amount() -> None:
    with pytest.raises(InvalidRideEvent) as refused:
        amount_to_refund(PaymentStatus.SUCCEEDED, 2000, "usd", [], Decimal("0.001"))
    assert refused.value.reason == "amount 0.001 rounds to zero USD"


def test_pending_and_succeeded_refunds_count_against_what_remains() -> None:
    refunds = [
        refund(500, RefundStatus.SUCCEEDED),
        refund(700, RefundStatus.PENDING),
        refund(900, RefundStatus.FAILED),  # released
    ]
    assert amount_to_refund(PaymentStatus.PARTIALLY_REFUNDED, 2000, "usd", refunds, None) == 800
    assert amount_to_refund(PaymentStatus.SUCCEEDED, 2000, "usd", refunds, Decimal("8")) == 800
    with pytest.raises(RefundRefused, match="over what remains"):
        amount_to_refund(PaymentStatus.SUCCEEDED, 2000, "usd", refunds, Decimal("8.01"))


@pytest.mark.parametrize(
    ("status", "refunds", "reason"),
    [
        (PaymentStatus.PENDING, [], "not paid (status pending)"),
        (PaymentStatus.DISPUTED, [], "not paid (status disputed)"),
        (PaymentStatus.REFUNDED, [refund(2000, RefundStatus.SUCCEEDED)], "already fully refunded"),
        (PaymentStatus.SUCCEEDED, [refund(2000, RefundStatus.PENDING)], "pending refunds"),
    ],
)
def test_refusals_say_why(status: PaymentStatus, refunds: list[Refund], reason: str) -> None:
    with pytest.raises(RefundRefused, match=re.escape(reason)):
        amount_to_refund(status, 2000, "usd", refunds, None)


def test_the_status_follows_the_sum_refunded() -> None:
    assert status_after_refunds(2000, 0) is PaymentStatus.SUCCEEDED
    assert status_after_refunds(2000, 1) is PaymentStatus.PARTIALLY_REFUNDED
    assert status_after_refunds(2000, 2000) is PaymentStatus.REFUNDED


def test_stripe_statuses_we_do_not_know_stay_pending() -> None:
    assert RefundStatus.from_stripe("requires_action") is RefundStatus.PENDING
    assert RefundStatus.from_stripe("canceled") is RefundStatus.CANCELED


@pytest.mark.parametrize("status", ["partially_refunded", "refunded", "disputed", "dispute_lost"])
def test_a_refunded_or_disputed_ride_no_longer_offers_its_payment_link(status: str) -> None:
    link = StoredMessage("1-0", messages.payment_url("ride-1", "https://pay/cs_1"))
    update = StoredMessage("2-0", status_update("ride-1", status, "cs_1"))
    assert still_relevant([link, update]) == [update]
