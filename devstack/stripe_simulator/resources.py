"""Stripe's objects with every field Stripe returns, as in Stripe's published example of each
(openapi/fixtures3.json of github.com/stripe/openapi): what the simulator does not model is
there with the value an account without that feature gets (null, false, an empty list).

Only the fields a caller passes vary; the flows change them afterwards (checkout.py,
charges.py, refunds.py, disputes.py). tests/integration/test_stripe_simulator_shapes.py holds
every object the simulator serves or sends to Stripe's field list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import JSONObject, new_id

DISPUTE_FEE = 1500  # minor units, whatever the currency: the simulator keeps no fee table

_NO_ADDRESS: JSONObject = {
    "city": None, "country": None, "line1": None, "line2": None, "postal_code": None,
    "state": None,
}  # fmt: skip
_EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SessionFields:
    """What a Checkout Session create request decides."""

    amount: int
    currency: str
    success_url: str
    cancel_url: str
    client_reference_id: str | None
    customer_email: str | None
    metadata: dict[str, str]
    expires_at: int
    payment_method_types: list[str]


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    """What the customer paid with: its `type` and the charge's details of that type."""

    type: str
    details: JSONObject
    id: str = field(default_factory=lambda: new_id("pm_"))

    @property
    def is_card(self) -> bool:
        return self.type == "card"


def checkout_session(fields: SessionFields, *, session_id: str, url: str, now: int) -> JSONObject:
    return {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": fields.amount,
        "amount_total": fields.amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": fields.cancel_url,
        "client_reference_id": fields.client_reference_id,
        "client_secret": None,  # only embedded and elements sessions have one
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": fields.currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_account": None,
        "customer_creation": "if_required",
        "customer_details": None,  # filled in when the customer completes the session
        "customer_email": fields.customer_email,
        "discounts": [],
        "expires_at": fields.expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": _no_invoice(),
        "livemode": False,
        "locale": None,
        "managed_payments": None,
        "metadata": dict(fields.metadata),
        "mode": "payment",
        "origin_context": None,
        "payment_intent": None,  # created at the first payment attempt
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": list(fields.payment_method_types),
        "payment_status": "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": fields.success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": url,
        "wallet_options": None,
    }


def customer_details(email: str | None) -> JSONObject:
    """What Checkout collected from the customer who completed it."""
    return {
        "address": dict(_NO_ADDRESS),
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": None,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


def payment_intent(
    *, amount: int, currency: str, metadata: dict[str, str], methods: list[str], now: int
) -> JSONObject:
    intent_id = new_id("pi_")
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{intent_id}_secret_{new_id('', 25)}",
        "confirmation_method": "automatic",
        "created": now,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "description": None,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": dict(metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": list(methods),
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }


def charge(intent: JSONObject, method: PaymentMethod, *, status: str, now: int) -> JSONObject:
    """A charge of `intent` paid with `method`: `succeeded`, `pending` (a bank debit on its way)
    or `failed` (then charges.fail adds the reason)."""
    captured = status != "failed"
    return {
        "id": new_id("ch_"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if captured else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn_") if status == "succeeded" else None,
        "billing_details": {
            "address": dict(_NO_ADDRESS),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "STRIPE SIMULATOR",
        "captured": captured,
        "created": now,
        "currency": intent["currency"],
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": _approved(),
        "paid": status == "succeeded",
        "payment_intent": intent["id"],
        "payment_method": method.id,
        "payment_method_details": {method.type: dict(method.details), "type": method.type},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        # No `refunds`: Stripe includes it only when asked to expand it (API 2022-11-15 on).
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def declined_outcome(reason: str, message: str) -> JSONObject:
    return _approved() | {
        "network_status": "declined_by_network",
        "reason": reason,
        "seller_message": message,
        "type": "issuer_declined",
    }


def refund(
    charged: JSONObject, *, amount: int, reason: str | None, metadata: dict[str, str], now: int
) -> JSONObject:
    method_type = charged["payment_method_details"]["type"]
    return {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charged["id"],
        "created": now,
        "currency": charged["currency"],
        "customer": None,
        "customer_account": None,
        "destination_details": _refund_destination(method_type),
        "metadata": dict(metadata),
        "payment_intent": charged["payment_intent"],
        "payment_method": charged["payment_method"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending",
        "transfer_reversal": None,
    }


def dispute(charged: JSONObject, *, inquiry: bool, now: int) -> JSONObject:
    """A dispute of the whole charge: an inquiry (`warning_needs_response`, no money moves) or
    a chargeback (`needs_response`, the amount and the fee withdrawn at once)."""
    method_type = charged["payment_method_details"]["type"]
    return {
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": charged["amount"],
        "balance_transactions": [],
        "charge": charged["id"],
        "created": now,
        "currency": charged["currency"],
        "enhanced_eligibility_types": [],
        "evidence": dict.fromkeys(_EVIDENCE_FIELDS) | {"enhanced_evidence": {}},
        "evidence_details": {
            "due_by": now + 7 * 24 * 3600,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": inquiry,
        "livemode": False,
        "metadata": {},
        "payment_intent": charged["payment_intent"],
        "payment_method_details": _dispute_method(method_type, inquiry),
        "reason": "general" if inquiry else "fraudulent",
        "status": "warning_needs_response" if inquiry else "needs_response",
    }


def balance_transaction(
    disputed: JSONObject, *, amount: int, fee: int, reversal: bool, now: int
) -> JSONObject:
    """A dispute's movement of money: the withdrawal when it opens, the reinstatement if won."""
    kind = "Chargeback reversal" if reversal else "Chargeback withdrawal"
    fee_details = [
        {
            "amount": fee,
            "application": None,
            "currency": disputed["currency"],
            "description": "Dispute fee",
            "type": "stripe_fee",
        }
    ]
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "balance_type": "payments",
        "created": now,
        "currency": disputed["currency"],
        "description": f"{kind} for {disputed['charge']}",
        "exchange_rate": None,
        "fee": fee,
        "fee_details": fee_details if fee else [],
        "net": amount - fee,
        "reporting_category": "dispute_reversal" if reversal else "dispute",
        "source": disputed["id"],
        "status": "available",
        "type": "adjustment",
    }


def _no_invoice() -> JSONObject:
    return {
        "enabled": False,
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": None,
            "metadata": {},
            "rendering_options": None,
        },
    }


def _approved() -> JSONObject:
    return {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "seller_message": "Payment complete.",
        "type": "authorized",
    }


def _refund_destination(method_type: str) -> JSONObject:
    if method_type == "card":
        details: JSONObject = {
            "reference": None,
            "reference_status": "pending",
            "reference_type": "acquirer_reference_number",
            "type": "refund",
        }
        return {"card": details, "type": "card"}
    return {method_type: {"reference": None, "reference_status": "pending"}, "type": method_type}


def _dispute_method(method_type: str, inquiry: bool) -> JSONObject:
    if method_type != "card":
        return {method_type: {}, "type": method_type}
    card = {
        "brand": "visa",
        "case_type": "inquiry" if inquiry else "chargeback",
        "network": "visa",
        "network_reason_code": "10.4",
    }
    return {"card": card, "type": "card"}
