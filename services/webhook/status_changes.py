"""The use case: apply what a Stripe event means to its payment, once and atomically."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.webhook.events import PaymentUpdate
from shared.store import Payment, PaymentStore, StatusChange


class Result(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # a repeat, or a transition the rules refuse
    UNKNOWN_PAYMENT = "unknown_payment"


@dataclass(frozen=True, slots=True)
class Applied:
    result: Result
    payment: Payment | None


async def apply_update(store: PaymentStore, update: PaymentUpdate, *, source: str) -> Applied:
    change = StatusChange(update.target, update.event_id, source, update.payment_intent_id)
    for selector in update.selectors:
        payment = await store.apply(selector, change)
        if payment is not None:
            return Applied(Result.APPLIED, payment)
    for selector in update.selectors:
        existing = await store.find(selector)
        if existing is not None:
            if update.payment_intent_id and existing.payment_intent_id is None:
                await store.remember_payment_intent(selector, update.payment_intent_id)
            return Applied(Result.UNCHANGED, existing)
    return Applied(Result.UNKNOWN_PAYMENT, None)
