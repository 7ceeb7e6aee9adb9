"""Disputes of a paid charge: chargebacks and inquiries, as Stripe reports them.

A chargeback opens `needs_response` (the amount and Stripe's fee leave the balance at once),
may go `under_review` when evidence is submitted, and closes `won` (the amount comes back) or
`lost`. An inquiry (a retrieval request) opens `warning_needs_response`, may go
`warning_under_review`, and closes `warning_closed`; it never moves money. Opening sends
`charge.dispute.created`, evidence `charge.dispute.updated`, closing `charge.dispute.closed`.

Synchronous on purpose, like checkout.py.
"""

from __future__ import annotations

from . import charges, resources
from .errors import StripeApiError, invalid_param
from .events import Change
from .state import JSONObject, SessionRecord, SimulatorState

OUTCOMES = {"chargeback": ("won", "lost"), "inquiry": ("warning_closed",)}
CLOSED = frozenset({"won", "lost", "warning_closed"})
_UNDER_REVIEW = {"needs_response": "under_review", "warning_needs_response": "warning_under_review"}


def is_inquiry(dispute: JSONObject) -> bool:
    return str(dispute["status"]).startswith("warning_")


def open_dispute(
    state: SimulatorState, session: SessionRecord, *, inquiry: bool
) -> tuple[JSONObject, list[Change]]:
    intent = state.payment_intents.get(session.obj["payment_intent"] or "")
    if intent is None or intent["status"] != "succeeded":
        raise StripeApiError(400, f"Checkout Session {session.id} is not paid.")
    charged = charges.of_intent(state, intent)
    if any(d["charge"] == charged["id"] for d in state.disputes.values()):
        raise StripeApiError(400, f"Charge {charged['id']} is already disputed.")
    dispute = resources.dispute(charged, inquiry=inquiry, now=state.now())
    if not inquiry:
        withdrawal = resources.balance_transaction(
            dispute,
            amount=-dispute["amount"],
            fee=resources.DISPUTE_FEE,
            reversal=False,
            now=state.now(),
        )
        dispute["balance_transactions"].append(withdrawal)
    charged["disputed"] = True
    state.disputes[dispute["id"]] = dispute
    return dispute, [Change("charge.dispute.created", dispute)]


def submit_evidence(dispute: JSONObject) -> list[Change]:
    """The merchant answered: the dispute goes under review."""
    status = dispute["status"]
    if status not in _UNDER_REVIEW:
        raise StripeApiError(400, f"Dispute {dispute['id']} is {status}: it takes no evidence.")
    details = dispute["evidence_details"]
    previous = {"status": status, "evidence_details": dict(details)}
    dispute["status"] = _UNDER_REVIEW[status]
    dispute["evidence"]["uncategorized_text"] = "Submitted through the Stripe simulator."
    details.update(has_evidence=True, submission_count=details["submission_count"] + 1)
    return [Change("charge.dispute.updated", dispute, previous)]


def close_dispute(state: SimulatorState, dispute: JSONObject, outcome: str) -> list[Change]:
    if dispute["status"] in CLOSED:
        raise StripeApiError(400, f"Dispute {dispute['id']} is already closed.")
    kind = "inquiry" if is_inquiry(dispute) else "chargeback"
    if outcome not in OUTCOMES[kind]:
        allowed = " or ".join(OUTCOMES[kind])
        raise invalid_param("outcome", f"An open {kind} closes {allowed}, not {outcome!r}.")
    if outcome == "won":
        reinstated = resources.balance_transaction(
            dispute, amount=dispute["amount"], fee=0, reversal=True, now=state.now()
        )
        dispute["balance_transactions"].append(reinstated)
    dispute["status"] = outcome
    return [Change("charge.dispute.closed", dispute)]
