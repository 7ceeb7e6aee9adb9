"""Refunds in the payment domain: the `refund-requests` message, a refund's statuses, and what
may still go back. Pure logic, no I/O (the record's changes are in shared/refunds.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared.model import (
    PAID_STATUSES,
    InvalidRideEvent,
    PaymentStatus,
    decode_json_object,
    identifier_problem,
    parse_fare,
    to_minor_units,
)

REFUND_REASONS = frozenset({"requested_by_customer", "duplicate", "fraudulent"})


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @classmethod
    def from_stripe(cls, status: str) -> RefundStatus:
        """Stripe's refund status; `requires_action` (and anything new) is still pending."""
        return cls(status) if status in cls.__members__.values() else cls.PENDING

    @property
    def holds_money(self) -> bool:
        """Whether the refund's amount counts against what may still be refunded."""
        return self in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


class RefundRefused(Exception):
    """A refund request that can never be carried out; `reason` goes to the dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RefundRequest:
    refund_id: str
    ride_id: str
    amount: Decimal | None  # major units; None: what remains
    reason: str | None


def parse_refund_request(raw: bytes) -> RefundRequest:
    """Decode and validate one `refund-requests` value, or raise InvalidRideEvent."""
    document = decode_json_object(raw)
    amount, reason = document.get("amount"), document.get("reason")
    if reason is not None and reason not in REFUND_REASONS:
        raise InvalidRideEvent(f"reason must be one of {', '.join(sorted(REFUND_REASONS))}")
    return RefundRequest(
        refund_id=_identifier(document, "refundId"),
        ride_id=_identifier(document, "rideId"),
        amount=None if amount is None else parse_fare(amount, what="amount"),
        reason=reason,
    )


def _identifier(document: dict[str, object], key: str) -> str:
    value = document.get(key)
    problem = identifier_problem(value, key)
    if problem is not None:
        raise InvalidRideEvent(problem)
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True)
class Refund:
    """One entry of a payment's `refunds`."""

    refund_id: str
    stripe_refund_id: str | None
    amount: int
    reason: str | None
    status: RefundStatus
    created_at: datetime
    updated_at: datetime
    failure_reason: str | None = None

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Refund:
        return cls(
            refund_id=entry["refundId"],
            stripe_refund_id=entry.get("stripeRefundId"),
            amount=entry["amount"],
            reason=entry.get("reason"),
            status=RefundStatus(entry["status"]),
            created_at=entry["createdAt"],
            updated_at=entry["updatedAt"],
            failure_reason=entry.get("failureReason"),
        )

    def entry(self) -> dict[str, Any]:
        return {
            "refundId": self.refund_id,
            "stripeRefundId": self.stripe_refund_id,
            "amount": self.amount,
            "reason": self.reason,
            "status": self.status.value,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "failureReason": self.failure_reason,
        }


def amount_refunded(refunds: list[Refund]) -> int:
    return sum(refund.amount for refund in refunds if refund.status is RefundStatus.SUCCEEDED)


def amount_held(refunds: list[Refund]) -> int:
    """Pending and succeeded refunds: what is no longer available to refund."""
    return sum(refund.amount for refund in refunds if refund.status.holds_money)


def amount_to_refund(
    status: PaymentStatus,
    charged: int,
    currency: str,
    refunds: list[Refund],
    requested: Decimal | None,
) -> int:
    """The minor units a new refund takes: what was asked, or all that remains; refused when
    the ride is not paid or the amount is over what remains (counting pending refunds)."""
    if status not in PAID_STATUSES:
        raise RefundRefused(f"ride is not paid (status {status.value})")
    remaining = charged - amount_held(refunds)
    if remaining <= 0:
        if amount_refunded(refunds) >= charged:
            raise RefundRefused("ride is already fully refunded")
        raise RefundRefused("nothing remains to refund: the rest is in pending refunds")
    if requested is None:
        return remaining
    amount = to_minor_units(requested, currency, what="amount")
    if amount > remaining:
        raise RefundRefused(
            f"refund of {amount} is over what remains unrefunded: {remaining} "
            f"{currency.upper()} minor units of {charged}, counting pending refunds"
        )
    return amount
