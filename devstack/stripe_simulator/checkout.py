"""Checkout Sessions: validating a create request and what the customer can do on the page.

Every function here is synchronous on purpose: a state change and the events describing it
happen without an `await` in between, so no other request can observe half of it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from . import charges, resources
from .amounts import CHECKOUT_TOTAL, check_amount
from .errors import StripeApiError, invalid_param, missing_param
from .events import Change
from .resources import SessionFields
from .state import JSONObject, SessionRecord, SimulatorState, new_id

SESSION_TTL_S = 24 * 3600

# Real Checkout parameters the simulator accepts and ignores; anything else is a typo.
_IGNORED_PARAMS = frozenset(
    {
        "adaptive_pricing", "after_expiration", "allow_promotion_codes",
        "automatic_tax", "billing_address_collection", "consent_collection", "currency",
        "custom_fields", "custom_text", "customer", "customer_creation", "customer_update",
        "discounts", "expand", "invoice_creation", "locale", "payment_method_collection",
        "payment_method_configuration", "payment_method_options",
        "phone_number_collection", "shipping_address_collection", "shipping_options",
        "submit_type", "tax_id_collection", "ui_mode",
    }
)  # fmt: skip
_USED_PARAMS = frozenset(
    {
        "mode", "line_items", "success_url", "cancel_url", "client_reference_id", "metadata",
        "payment_intent_data", "expires_at", "customer_email", "payment_method_types",
    }
)  # fmt: skip


class Action(StrEnum):
    PAY = "pay"
    DEBIT = "debit"  # pay by bank debit: the session completes unpaid, the money comes later
    DECLINE = "decline"
    CANCEL = "cancel"
    EXPIRE = "expire"
    ABANDON = "abandon"
    # What the bank says of a debit, days later at Stripe:
    DEBIT_SUCCEEDS = "debit_succeeds"
    DEBIT_FAILS = "debit_fails"


_LATER = frozenset({Action.DEBIT_SUCCEEDS, Action.DEBIT_FAILS})


class ActionRefusedError(Exception):
    """The session is not in a state where the action can happen; `code` says which."""

    code = "action_refused"


class SessionNotOpenError(ActionRefusedError):
    code = "checkout_session_not_open"

    def __init__(self, session: SessionRecord, status: str | None = None) -> None:
        self.status = status or str(session.obj["status"])
        super().__init__(
            f'Only Checkout Sessions with a status in ["open"] can be changed. '
            f'This Checkout Session has a status of "{self.status}".'
        )


class NoDebitError(ActionRefusedError):
    code = "no_bank_debit"


def create_session(params: JSONObject, *, public_base_url: str, now: int) -> SessionRecord:
    """Build a Checkout Session from decoded form params, raising Stripe's 400s."""
    for name in params:
        if name not in _USED_PARAMS and name not in _IGNORED_PARAMS:
            raise invalid_param(name, f"Received unknown parameter: {name}", "parameter_unknown")
    mode = _required_str(params, "mode")
    if mode != "payment":
        raise invalid_param("mode", f"The simulator supports only mode=payment, not {mode!r}.")
    currency, amount = _line_items(params.get("line_items"))
    check_amount(amount, currency, param=None, subject=CHECKOUT_TOTAL)
    pi_data = _hash(params.get("payment_intent_data"), "payment_intent_data")
    fields = SessionFields(
        amount=amount,
        currency=currency,
        success_url=_required_str(params, "success_url"),
        cancel_url=_required_str(params, "cancel_url"),
        client_reference_id=_optional_str(params, "client_reference_id", 200),
        customer_email=_optional_str(params, "customer_email", 800),
        metadata=_metadata(params.get("metadata"), "metadata"),
        expires_at=_expires_at(params.get("expires_at"), now),
        payment_method_types=_method_types(params.get("payment_method_types"), currency),
    )
    session_id = new_id("cs_test_", 40)
    url = f"{public_base_url}/checkout/{session_id}"
    obj = resources.checkout_session(fields, session_id=session_id, url=url, now=now)
    pi_metadata = _metadata(pi_data.get("metadata"), "payment_intent_data[metadata]")
    return SessionRecord(obj, pi_metadata)


def apply_action(state: SimulatorState, session: SessionRecord, action: Action) -> list[Change]:
    """Change the session as the customer's `action` (or the bank's, for a debit in progress)
    would and return the events, in order."""
    if action in _LATER:
        return _settle_debit(state, session, succeeded=action is Action.DEBIT_SUCCEEDS)
    if not session.is_open:
        raise SessionNotOpenError(session)
    if action is not Action.EXPIRE and session.obj["expires_at"] <= state.now():
        # Past `expires_at` Stripe takes no payment, even before its sweep marks it expired.
        raise SessionNotOpenError(session, status="expired")
    if action is Action.PAY:
        return _pay(state, session)
    if action is Action.DEBIT:
        return _debit(state, session)
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


def debit_in_progress(state: SimulatorState, session: SessionRecord) -> bool:
    """Whether the session completed with a bank debit whose outcome is still to come."""
    intent = state.payment_intents.get(session.obj["payment_intent"] or "")
    return intent is not None and intent["status"] == "processing"


def _pay(state: SimulatorState, session: SessionRecord) -> list[Change]:
    intent = _payment_intent(state, session)
    charges.charge_intent(state, intent, charges.visa(), "succeeded")
    _intent_succeeded(intent)
    _complete(session, payment_status="paid")
    return [
        Change("payment_intent.succeeded", intent),
        Change("checkout.session.completed", session.obj),
    ]


def _debit(state: SimulatorState, session: SessionRecord) -> list[Change]:
    kind = charges.bank_debit_of(session.obj)
    if kind is None:
        raise NoDebitError(f"Checkout Session {session.id} offers no bank debit.")
    intent = _payment_intent(state, session)
    charges.charge_intent(state, intent, charges.bank_account(kind), "pending")
    intent.update(status="processing", last_payment_error=None)
    _complete(session, payment_status="unpaid")
    return [
        Change("payment_intent.processing", intent),
        Change("checkout.session.completed", session.obj),
    ]


def _settle_debit(state: SimulatorState, session: SessionRecord, succeeded: bool) -> list[Change]:
    if not debit_in_progress(state, session):
        raise NoDebitError(f"Checkout Session {session.id} has no bank debit in progress.")
    intent = state.payment_intents[session.obj["payment_intent"]]
    charged = charges.of_intent(state, intent)
    if succeeded:
        charges.succeed(charged)
        _intent_succeeded(intent)
        session.obj["payment_status"] = "paid"
        return [
            Change("payment_intent.succeeded", intent),
            Change("checkout.session.async_payment_succeeded", session.obj),
        ]
    error = charges.fail(charged, *charges.DEBIT_FAILURE)
    intent.update(status="requires_payment_method", last_payment_error=error, payment_method=None)
    return [
        Change("payment_intent.payment_failed", intent),
        Change("checkout.session.async_payment_failed", session.obj),
    ]


def _decline(state: SimulatorState, session: SessionRecord) -> list[Change]:
    intent = _payment_intent(state, session)
    charged = charges.charge_intent(state, intent, charges.visa("0002"), "failed")
    error = charges.fail(charged, *charges.CARD_DECLINE)
    intent.update(status="requires_payment_method", last_payment_error=error, payment_method=None)
    return [Change("payment_intent.payment_failed", intent)]


def _intent_succeeded(intent: JSONObject) -> None:
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)


def _complete(session: SessionRecord, *, payment_status: str) -> None:
    """The customer finished Checkout: the session can never be paid again."""
    session.obj.update(
        status="complete",
        payment_status=payment_status,
        url=None,
        customer_details=resources.customer_details(session.obj["customer_email"]),
    )


def _expire(state: SimulatorState, session: SessionRecord) -> list[Change]:
    changes: list[Change] = []
    intent_id = session.obj["payment_intent"]
    if intent_id is not None:
        intent = state.payment_intents[intent_id]
        intent.update(status="canceled", canceled_at=state.now(), cancellation_reason="abandoned")
        changes.append(Change("payment_intent.canceled", intent))
    session.obj.update(status="expired", url=None)
    changes.append(Change("checkout.session.expired", session.obj))
    return changes


def _payment_intent(state: SimulatorState, session: SessionRecord) -> JSONObject:
    """The session's PaymentIntent, created at the first payment attempt as Stripe does now."""
    existing = session.obj["payment_intent"]
    if existing is not None:
        return state.payment_intents[existing]
    obj = session.obj
    intent = resources.payment_intent(
        amount=obj["amount_total"],
        currency=obj["currency"],
        metadata=session.payment_intent_metadata,
        methods=obj["payment_method_types"],
        now=state.now(),
    )
    state.payment_intents[intent["id"]] = intent
    obj["payment_intent"] = intent["id"]
    return intent


def _method_types(raw: Any, currency: str) -> list[str]:
    if raw is None:
        return charges.payment_method_types(currency)
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise invalid_param("payment_method_types", "payment_method_types must be a list.")
    known = ("card", *charges.BANK_DEBITS.values())
    for kind in raw:
        if kind not in known:
            raise invalid_param(
                "payment_method_types", f"The simulator offers only {', '.join(known)}."
            )
    return list(raw)


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
