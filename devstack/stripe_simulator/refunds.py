"""Refunds and disputes of a paid PaymentIntent, as Stripe checks and reports them.

Synchronous on purpose, like checkout.py: a change and the events describing it happen without
an `await` in between.
"""

from __future__ import annotations

from typing import Any

from .checkout import Change
from .errors import StripeApiError, invalid_param, missing_param, no_such
from .state import JSONObject, SessionRecord, SimulatorState, new_id

REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "reason", "metadata", "expand"})


def create_refund(state: SimulatorState, params: JSONObject) -> tuple[JSONObject, list[Change]]:
    """A pending refund of a succeeded PaymentIntent, refused as Stripe refuses it."""
    for name in params:
        if name not in _REFUND_PARAMS:
            raise invalid_param(name, f"Received unknown parameter: {name}", "parameter_unknown")
    intent = _refundable_intent(state, params)
    remaining = intent["amount_received"] - _amount_held(state, intent["id"])
    if remaining <= 0:
        raise StripeApiError(
            400,
            f"Charge {intent['latest_charge']} has already been refunded.",
            code="charge_already_refunded",
        )
    amount = remaining if params.get("amount") is None else _positive_int(params["amount"])
    if amount > remaining:
        raise StripeApiError(
            400,
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            code="amount_too_large",
            param="amount",
        )
    reason = params.get("reason")
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid_param("reason", f"Invalid reason: must be one of {sorted(REFUND_REASONS)}")
    refund: JSONObject = {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "charge": intent["latest_charge"],
        "created": state.now(),
        "currency": intent["currency"],
        "failure_reason": None,
        "metadata": _metadata(params.get("metadata")),
        "payment_intent": intent["id"],
        "reason": reason,
        "status": "pending",
    }
    state.refunds[refund["id"]] = refund
    return refund, [("refund.created", refund)]


def settle_refund(state: SimulatorState, refund: JSONObject, succeed: bool) -> list[Change]:
    """A pending refund succeeds (refund.updated, charge.refunded) or fails (refund.failed)."""
    if refund["status"] != "pending":
        raise StripeApiError(400, f"Refund {refund['id']} is {refund['status']}, not pending.")
    if not succeed:
        refund.update(status="failed", failure_reason="lost_or_stolen_card")
        return [("refund.failed", refund)]
    refund["status"] = "succeeded"
    return [("refund.updated", refund), ("charge.refunded", _charge(state, refund))]


def open_dispute(state: SimulatorState, session: SessionRecord) -> tuple[JSONObject, list[Change]]:
    intent = state.payment_intents.get(session.obj["payment_intent"] or "")
    if intent is None or intent["status"] != "succeeded":
        raise StripeApiError(400, f"Checkout Session {session.id} is not paid.")
    dispute: JSONObject = {
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": intent["amount_received"],
        "charge": intent["latest_charge"],
        "created": state.now(),
        "currency": intent["currency"],
        "metadata": {},
        "payment_intent": intent["id"],
        "reason": "fraudulent",
        "status": "needs_response",
    }
    state.disputes[dispute["id"]] = dispute
    return dispute, [("charge.dispute.created", dispute)]


def close_dispute(dispute: JSONObject, outcome: str) -> list[Change]:
    if outcome not in ("won", "lost"):
        raise invalid_param("outcome", "outcome must be won or lost")
    if dispute["status"] in ("won", "lost"):
        raise StripeApiError(400, f"Dispute {dispute['id']} is already closed.")
    dispute["status"] = outcome
    return [("charge.dispute.closed", dispute)]


def session_of_intent(state: SimulatorState, intent_id: str) -> str:
    """The Checkout Session a PaymentIntent belongs to: its events share that delivery queue."""
    for session in state.sessions.values():
        if session.obj["payment_intent"] == intent_id:
            return session.id
    return intent_id


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


def _amount_held(state: SimulatorState, intent_id: str) -> int:
    return sum(
        refund["amount"]
        for refund in state.refunds.values()
        if refund["payment_intent"] == intent_id and refund["status"] in ("pending", "succeeded")
    )


def _charge(state: SimulatorState, refund: JSONObject) -> JSONObject:
    intent = state.payment_intents[refund["payment_intent"]]
    refunds = [r for r in state.refunds.values() if r["payment_intent"] == intent["id"]]
    refunded = sum(r["amount"] for r in refunds if r["status"] == "succeeded")
    return {
        "id": intent["latest_charge"],
        "object": "charge",
        "amount": intent["amount_received"],
        "amount_refunded": refunded,
        "currency": intent["currency"],
        "metadata": dict(intent["metadata"]),
        "payment_intent": intent["id"],
        "refunded": refunded >= intent["amount_received"],
        "refunds": {"object": "list", "data": refunds, "has_more": False},
        "status": "succeeded",
    }


def _positive_int(raw: Any) -> int:
    try:
        amount = int(str(raw), 10)
    except ValueError:
        raise invalid_param("amount", f"Invalid integer: {raw}") from None
    if amount < 1:
        raise invalid_param("amount", "Refund amount must be a positive integer.")
    return amount


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid_param("metadata", "Invalid object: metadata must be a hash of strings.")
    return {k: v for k, v in raw.items() if v != ""}
