"""Refunds of a paid PaymentIntent, as Stripe checks and reports them.

A card refund is usually `succeeded` in the create call's answer (`refund.created` and
`charge.refunded` follow); a bank debit's stays `pending` for a while. Either can fail later,
even after it succeeded: the money came back to the account. Since API version 2022-11-15 a
charge carries no `refunds` list unless a request expands it, and webhooks never do:
`charge.refunded` says the total in `amount_refunded`.

Synchronous on purpose, like checkout.py: a change and the events describing it happen without
an `await` in between.
"""

from __future__ import annotations

from typing import Any

from . import charges, resources
from .amounts import whole_amount
from .errors import StripeApiError, invalid_param, missing_param, no_such
from .events import Change
from .state import JSONObject, SimulatorState, new_id

REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
FAILURE_REASON = "expired_or_canceled_card"
_REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "reason", "metadata", "expand"})
_CHARGEBACK_OPEN = frozenset({"needs_response", "under_review", "lost"})


def create_refund(
    state: SimulatorState, params: JSONObject, *, at_once: bool
) -> tuple[JSONObject, list[Change]]:
    """A refund of a succeeded PaymentIntent, refused as Stripe refuses it: `succeeded` at once
    when `at_once` and the charge is a card's, `pending` otherwise."""
    for name in params:
        if name not in _REFUND_PARAMS:
            raise invalid_param(name, f"Received unknown parameter: {name}", "parameter_unknown")
    intent = _refundable_intent(state, params)
    charged = charges.of_intent(state, intent)
    _refuse_charged_back(state, charged)
    amount = _amount(state, intent, params.get("amount"))
    reason = params.get("reason")
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid_param("reason", f"Invalid reason: must be one of {sorted(REFUND_REASONS)}")
    refund = resources.refund(
        charged,
        amount=amount,
        reason=reason,
        metadata=_metadata(params.get("metadata")),
        now=state.now(),
    )
    state.refunds[refund["id"]] = refund
    if not (at_once and is_card(state, refund)):
        return refund, [Change("refund.created", refund)]
    _succeed(state, refund)
    return refund, [Change("refund.created", refund), Change("charge.refunded", charged)]


def is_card(state: SimulatorState, refund: JSONObject) -> bool:
    return bool(state.charges[refund["charge"]]["payment_method_details"]["type"] == "card")


def settle_refund(state: SimulatorState, refund: JSONObject, succeed: bool) -> list[Change]:
    """A pending refund succeeds (refund.updated, charge.refunded) or fails (refund.failed); a
    succeeded one can still fail (refund.updated from `succeeded`, refund.failed)."""
    status = refund["status"]
    if status != "pending" and not (status == "succeeded" and not succeed):
        verb = "succeed" if succeed else "fail"
        raise StripeApiError(400, f"Refund {refund['id']} is {status}: it cannot {verb}.")
    if succeed:
        _succeed(state, refund)
        previous = {"status": "pending", "balance_transaction": None}
        charged = state.charges[refund["charge"]]
        return [Change("refund.updated", refund, previous), Change("charge.refunded", charged)]
    if status == "pending":
        refund.update(status="failed", failure_reason=FAILURE_REASON)
        return [Change("refund.failed", refund)]
    _fail_after_success(state, refund)
    previous = {"status": "succeeded", "failure_balance_transaction": None}
    return [Change("refund.updated", refund, previous), Change("refund.failed", refund)]


def session_of_intent(state: SimulatorState, intent_id: str) -> str:
    """The Checkout Session a PaymentIntent belongs to: its events share that delivery queue."""
    for session in state.sessions.values():
        if session.obj["payment_intent"] == intent_id:
            return session.id
    return intent_id


def _succeed(state: SimulatorState, refund: JSONObject) -> None:
    refund.update(status="succeeded", balance_transaction=new_id("txn_"))
    _count_refunds(state, state.charges[refund["charge"]])


def _fail_after_success(state: SimulatorState, refund: JSONObject) -> None:
    """The money came back: the refund no longer counts in the charge's `amount_refunded`."""
    refund.update(
        status="failed",
        failure_reason=FAILURE_REASON,
        failure_balance_transaction=new_id("txn_"),
    )
    _count_refunds(state, state.charges[refund["charge"]])


def _count_refunds(state: SimulatorState, charged: JSONObject) -> None:
    refunded = sum(
        r["amount"]
        for r in state.refunds.values()
        if r["charge"] == charged["id"] and r["status"] == "succeeded"
    )
    charged.update(amount_refunded=refunded, refunded=refunded >= charged["amount"])


def _refundable_intent(state: SimulatorState, params: JSONObject) -> JSONObject:
    intent_id, charge_id = params.get("payment_intent"), params.get("charge")
    if intent_id is None and charge_id is None:
        raise missing_param("payment_intent")
    if intent_id is None:
        found = [i for i in state.payment_intents.values() if i["latest_charge"] == charge_id]
        if not found:
            raise no_such("charge", str(charge_id), "charge")
        intent = found[0]
    elif str(intent_id) in state.payment_intents:
        intent = state.payment_intents[str(intent_id)]
    else:
        raise no_such("payment_intent", str(intent_id), "payment_intent")
    if intent["status"] != "succeeded":
        raise StripeApiError(
            400,
            f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
            code="charge_not_refundable",
        )
    return intent


def _refuse_charged_back(state: SimulatorState, charged: JSONObject) -> None:
    for dispute in state.disputes.values():
        if dispute["charge"] == charged["id"] and dispute["status"] in _CHARGEBACK_OPEN:
            raise StripeApiError(
                400,
                f"Charge {charged['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )


def _amount(state: SimulatorState, intent: JSONObject, raw: Any) -> int:
    remaining = intent["amount_received"] - _amount_held(state, intent["id"])
    if remaining <= 0:
        raise StripeApiError(
            400,
            f"Charge {intent['latest_charge']} has already been refunded.",
            code="charge_already_refunded",
        )
    amount = (
        remaining
        if raw is None
        else whole_amount(raw, below_one="Refund amount must be a positive integer.")
    )
    if amount > remaining:
        raise StripeApiError(
            400,
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            code="amount_too_large",
            param="amount",
        )
    return amount


def _amount_held(state: SimulatorState, intent_id: str) -> int:
    return sum(
        refund["amount"]
        for refund in state.refunds.values()
        if refund["payment_intent"] == intent_id and refund["status"] in ("pending", "succeeded")
    )


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid_param("metadata", "Invalid object: metadata must be a hash of strings.")
    return {k: v for k, v in raw.items() if v != ""}
