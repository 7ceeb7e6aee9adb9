"""Checkout Sessions: validating a create request and what the customer can do on the page.

Every function here is synchronous on purpose: a state change and the events describing it
happen without an `await` in between, so no other request can observe half of it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from .errors import StripeApiError, invalid_param, missing_param
from .state import JSONObject, SessionRecord, SimulatorState, new_id

SESSION_TTL_S = 24 * 3600

# Real Checkout parameters the simulator accepts and ignores; anything else is a typo.
_IGNORED_PARAMS = frozenset(
    {
        "adaptive_pricing", "after_expiration", "allow_promotion_codes",
        "automatic_tax", "billing_address_collection", "consent_collection", "currency",
        "custom_fields", "custom_text", "customer", "customer_creation", "customer_update",
        "discounts", "expand", "invoice_creation", "locale", "payment_method_collection",
        "payment_method_configuration", "payment_method_options", "payment_method_types",
        "phone_number_collection", "shipping_address_collection", "shipping_options",
        "submit_type", "tax_id_collection", "ui_mode",
    }
)  # fmt: skip
_USED_PARAMS = frozenset(
    {
        "mode", "line_items", "success_url", "cancel_url", "client_reference_id", "metadata",
        "payment_intent_data", "expires_at", "customer_email",
    }
)  # fmt: skip

Change = tuple[str, JSONObject]
"""An event type and the object it is about."""


class Action(StrEnum):
    PAY = "pay"
    DECLINE = "decline"
    CANCEL = "cancel"
    EXPIRE = "expire"
    ABANDON = "abandon"


class SessionNotOpenError(Exception):
    def __init__(self, session: SessionRecord, status: str | None = None) -> None:
        self.status = status or str(session.obj["status"])
        super().__init__(
            f'Only Checkout Sessions with a status in ["open"] can be changed. '
            f'This Checkout Session has a status of "{self.status}".'
        )


def create_session(params: JSONObject, *, public_base_url: str, now: int) -> SessionRecord:
    """Build a Checkout Session from decoded form params, raising Stripe's 400s."""
    for name in params:
        if name not in _USED_PARAMS and name not in _IGNORED_PARAMS:
            raise invalid_param(name, f"Received unknown parameter: {name}", "parameter_unknown")
    mode = _required_str(params, "mode")
    if mode != "payment":
        raise invalid_param("mode", f"The simulator supports only mode=payment, not {mode!r}.")
    currency, amount = _line_items(params.get("line_items"))
    success_url = _required_str(params, "success_url")
    cancel_url = _required_str(params, "cancel_url")
    pi_data = _hash(params.get("payment_intent_data"), "payment_intent_data")
    session_id = new_id("cs_test_", 40)
    obj: JSONObject = {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": cancel_url,
        "client_reference_id": _optional_str(params, "client_reference_id", 200),
        "created": now,
        "currency": currency,
        "customer": None,
        "customer_email": _optional_str(params, "customer_email", 800),
        "expires_at": _expires_at(params.get("expires_at"), now),
        "livemode": False,
        "metadata": _metadata(params.get("metadata"), "metadata"),
        "mode": mode,
        "payment_intent": None,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "status": "open",
        "success_url": success_url,
        "ui_mode": "hosted",
        "url": f"{public_base_url}/checkout/{session_id}",
    }
    pi_metadata = _metadata(pi_data.get("metadata"), "payment_intent_data[metadata]")
    return SessionRecord(obj, pi_metadata)


def apply_action(state: SimulatorState, session: SessionRecord, action: Action) -> list[Change]:
    """Change the session as the customer's `action` would and return the events, in order."""
    if not session.is_open:
        raise SessionNotOpenError(session)
    if action is not Action.EXPIRE and session.obj["expires_at"] <= state.now():
        # Past `expires_at` Stripe takes no payment, even before its sweep marks it expired.
        raise SessionNotOpenError(session, status="expired")
    if action is Action.PAY:
        return _pay(state, session)
    if action is Action.DECLINE:
        return _decline(state, session)
    if action is Action.EXPIRE:
        return _expire(state, session)
    if action is Action.ABANDON:
        # A payment was started, then the session expired: Stripe cancels the PaymentIntent
        # first, so the payment ends `canceled` rather than `expired`.
        _payment_intent(state, session)
        return _expire(state, session)
    return []  # Stripe says nothing when the customer just leaves.


def _pay(state: SimulatorState, session: SessionRecord) -> list[Change]:
    intent = _payment_intent(state, session)
    intent.update(
        status="succeeded",
        amount_received=intent["amount"],
        latest_charge=new_id("ch_"),
        last_payment_error=None,
    )
    session.obj.update(status="complete", payment_status="paid", url=None)
    return [("payment_intent.succeeded", intent), ("checkout.session.completed", session.obj)]


def _decline(state: SimulatorState, session: SessionRecord) -> list[Change]:
    intent = _payment_intent(state, session)
    intent.update(
        status="requires_payment_method",
        latest_charge=new_id("ch_"),
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
        },
    )
    return [("payment_intent.payment_failed", intent)]


def _expire(state: SimulatorState, session: SessionRecord) -> list[Change]:
    changes: list[Change] = []
    intent_id = session.obj["payment_intent"]
    if intent_id is not None:
        intent = state.payment_intents[intent_id]
        intent.update(status="canceled", canceled_at=state.now(), cancellation_reason="abandoned")
        changes.append(("payment_intent.canceled", intent))
    session.obj.update(status="expired", url=None)
    changes.append(("checkout.session.expired", session.obj))
    return changes


def _payment_intent(state: SimulatorState, session: SessionRecord) -> JSONObject:
    """The session's PaymentIntent, created at the first payment attempt as Stripe does now."""
    existing = session.obj["payment_intent"]
    if existing is not None:
        return state.payment_intents[existing]
    intent: JSONObject = {
        "id": new_id("pi_"),
        "object": "payment_intent",
        "amount": session.obj["amount_total"],
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "created": state.now(),
        "currency": session.obj["currency"],
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(session.payment_intent_metadata),
        "payment_method_types": ["card"],
        "status": "requires_payment_method",
    }
    state.payment_intents[intent["id"]] = intent
    session.obj["payment_intent"] = intent["id"]
    return intent


def _line_items(raw: Any) -> tuple[str, int]:
    """Validate the line items; return their common currency and the total amount."""
    if raw is None:
        raise missing_param("line_items")
    if not isinstance(raw, list) or not raw:
        raise invalid_param("line_items", "line_items must be a non-empty array.")
    currencies: set[str] = set()
    total = 0
    for index, item in enumerate(raw):
        currency, amount = _line_item(item, f"line_items[{index}]")
        currencies.add(currency)
        total += amount
    if len(currencies) > 1:
        raise invalid_param("line_items", "All line items must use the same currency.")
    return currencies.pop(), total


def _line_item(item: Any, where: str) -> tuple[str, int]:
    item = _hash(item, where)
    if "price" in item:
        raise StripeApiError(
            400,
            f"No such price: '{item['price']}' (the simulator only supports price_data)",
            code="resource_missing",
            param=f"{where}[price]",
            replayable=False,
        )
    if "price_data" not in item:
        raise missing_param(f"{where}[price_data]")
    price = _hash(item["price_data"], f"{where}[price_data]")
    currency = _required_str(price, "currency", f"{where}[price_data]").lower()
    if len(currency) != 3 or not currency.isalpha():
        raise invalid_param(f"{where}[price_data][currency]", f"Invalid currency: {currency}.")
    unit_amount = _int(price.get("unit_amount"), f"{where}[price_data][unit_amount]")
    if unit_amount <= 0:
        raise invalid_param(
            f"{where}[price_data][unit_amount]", "unit_amount must be a positive integer."
        )
    product = _hash(price.get("product_data"), f"{where}[price_data][product_data]")
    _required_str(product, "name", f"{where}[price_data][product_data]")
    quantity = _int(item.get("quantity"), f"{where}[quantity]")
    if quantity < 1:
        raise invalid_param(f"{where}[quantity]", "quantity must be at least 1.")
    return currency, unit_amount * quantity


def _expires_at(raw: Any, now: int) -> int:
    if raw is None:
        return now + SESSION_TTL_S
    expires_at = _int(raw, "expires_at")
    # Stripe also demands at least 30 minutes; the simulator allows short ones for tests.
    if not now < expires_at <= now + SESSION_TTL_S:
        raise invalid_param(
            "expires_at", "expires_at must be in the future and at most 24 hours from now."
        )
    return expires_at


def _metadata(raw: Any, param: str) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    metadata = _hash(raw, param)
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 40 or len(value) > 500:
            raise invalid_param(
                f"{param}[{key}]", "Metadata keys are at most 40 and values 500 characters."
            )
    # Stripe drops keys set to the empty string.
    return {k: v for k, v in metadata.items() if v != ""}


def _hash(raw: Any, param: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid_param(param, f"Invalid object: {param} must be a hash.")
    return raw


def _int(raw: Any, param: str) -> int:
    if raw is None:
        raise missing_param(param)
    try:
        return int(str(raw), 10)
    except ValueError:
        raise invalid_param(param, f"Invalid integer: {raw}") from None


def _required_str(params: dict[str, Any], name: str, where: str = "") -> str:
    param = f"{where}[{name}]" if where else name
    value = params.get(name)
    if value is None or value == "":
        raise missing_param(param)
    if not isinstance(value, str):
        raise invalid_param(param, f"Invalid string: {param} must be a string.")
    return value


def _optional_str(params: dict[str, Any], name: str, max_length: int) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise invalid_param(name, f"Invalid {name}: a string of at most {max_length} characters.")
    return value
