"""Charges: what each payment attempt of a PaymentIntent leaves behind, kept so that refunds and
disputes change the very object Stripe would, and the payment methods that make them.

Synchronous on purpose, like checkout.py.
"""

from __future__ import annotations

from . import resources
from .errors import no_such
from .resources import PaymentMethod
from .state import JSONObject, SimulatorState, new_id

# The bank debit Checkout offers next to cards, per currency (Stripe: ACH Direct Debit, SEPA
# Direct Debit, Bacs Direct Debit). Other currencies get cards only.
BANK_DEBITS = {"usd": "us_bank_account", "eur": "sepa_debit", "gbp": "bacs_debit"}
DEBIT_FAILURE = (
    "insufficient_funds",
    "The customer's account has insufficient funds to cover this payment.",
)
CARD_DECLINE = ("card_declined", "Your card was declined.")


def payment_method_types(currency: str) -> list[str]:
    """What a Checkout Session in `currency` offers when the request names no types."""
    debit = BANK_DEBITS.get(currency.lower())
    return ["card"] if debit is None else ["card", debit]


def bank_debit_of(session: JSONObject) -> str | None:
    """The bank debit a session offers, if any."""
    offered = [kind for kind in session["payment_method_types"] if kind in BANK_DEBITS.values()]
    return offered[0] if offered else None


def visa(last4: str = "4242") -> PaymentMethod:
    """Stripe's test Visa (4242) or its always-declined twin (0002)."""
    return PaymentMethod("card", _card(last4))


def bank_account(kind: str) -> PaymentMethod:
    mandate = new_id("mandate_")
    details: dict[str, JSONObject] = {
        "us_bank_account": {
            "account_holder_type": "individual",
            "account_type": "checking",
            "bank_name": "STRIPE TEST BANK",
            "fingerprint": new_id("", 16),
            "last4": "6789",
            "mandate": mandate,
            "payment_reference": None,
            "routing_number": "110000000",
        },
        "sepa_debit": {
            "bank_code": "37040044",
            "branch_code": None,
            "country": "DE",
            "fingerprint": new_id("", 16),
            "last4": "3000",
            "mandate": mandate,
        },
        "bacs_debit": {
            "fingerprint": new_id("", 16),
            "last4": "2345",
            "mandate": mandate,
            "sort_code": "108800",
        },
    }
    return PaymentMethod(kind, details[kind])


def charge_intent(
    state: SimulatorState, intent: JSONObject, method: PaymentMethod, status: str
) -> JSONObject:
    """A new charge of `intent`, which now points at it and at the method that made it."""
    charged = resources.charge(intent, method, status=status, now=state.now())
    if method.is_card:
        card = charged["payment_method_details"]["card"]
        card["amount_authorized"] = intent["amount"] if status != "failed" else None
        card["overcapture"]["maximum_amount_capturable"] = intent["amount"]
    state.charges[charged["id"]] = charged
    intent.update(latest_charge=charged["id"], payment_method=method.id)
    return charged


def succeed(charged: JSONObject) -> None:
    """A pending bank debit arrived."""
    charged.update(status="succeeded", paid=True, balance_transaction=new_id("txn_"))


def fail(charged: JSONObject, code: str, message: str) -> JSONObject:
    """The charge failed with Stripe's `code`; returns the PaymentIntent's last_payment_error."""
    card = charged["payment_method_details"]["type"] == "card"
    charged.update(
        status="failed",
        paid=False,
        captured=False,
        amount_captured=0,
        balance_transaction=None,
        failure_code=code,
        failure_message=message,
        outcome=resources.declined_outcome("generic_decline" if card else code, message),
    )
    error: JSONObject = {
        "charge": charged["id"],
        "code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "type": "card_error" if card else "invalid_request_error",
    }
    if card:
        error["decline_code"] = "generic_decline"
    return error


def of_intent(state: SimulatorState, intent: JSONObject) -> JSONObject:
    """The charge that paid `intent` (a state file of an older simulator kept none)."""
    charged = state.charges.get(intent["latest_charge"] or "")
    if charged is None:
        raise no_such("charge", str(intent["latest_charge"]), "charge")
    return charged


def _card(last4: str) -> JSONObject:
    return {
        "amount_authorized": None,
        "brand": "visa",
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": 2034,
        "extended_authorization": {"status": "disabled"},
        "fingerprint": new_id("", 16),
        "funding": "credit",
        "incremental_authorization": {"status": "unavailable"},
        "installments": None,
        "last4": last4,
        "mandate": None,
        "multicapture": {"status": "unavailable"},
        "network": "visa",
        "network_token": {"used": False},
        "network_transaction_id": new_id("", 15),
        "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"},
        "regulated_status": "unregulated",
        "three_d_secure": None,
        "wallet": None,
    }
