"""PaymentIntents created through the API: checked as Stripe checks them (its minimum charge
among them) and left `requires_payment_method`. The simulator does not confirm them: the
payments it takes go through Checkout."""

from __future__ import annotations

from typing import Any

from . import charges, resources
from .amounts import check_amount, whole_amount
from .errors import invalid_param, missing_param
from .events import Change
from .state import JSONObject, SimulatorState

_USED_PARAMS = frozenset({"amount", "currency", "metadata", "description", "payment_method_types"})
_IGNORED_PARAMS = frozenset({"expand", "statement_descriptor_suffix", "receipt_email"})


def create(state: SimulatorState, params: JSONObject) -> tuple[JSONObject, list[Change]]:
    for name in params:
        if name not in _USED_PARAMS and name not in _IGNORED_PARAMS:
            raise invalid_param(
                name,
                f"Received unknown parameter: {name} (the simulator does not confirm "
                "PaymentIntents created through the API)",
                "parameter_unknown",
            )
    currency = _currency(params.get("currency"))
    amount = _amount(params.get("amount"))
    check_amount(amount, currency, param="amount", subject="Amount")
    intent = resources.payment_intent(
        amount=amount,
        currency=currency,
        metadata=_metadata(params.get("metadata")),
        methods=_methods(params.get("payment_method_types"), currency),
        now=state.now(),
    )
    description = params.get("description")
    if isinstance(description, str) and description:
        intent["description"] = description
    state.payment_intents[intent["id"]] = intent
    return intent, [Change("payment_intent.created", intent)]


def _currency(raw: Any) -> str:
    if raw is None:
        raise missing_param("currency")
    currency = str(raw).lower()
    if len(currency) != 3 or not currency.isalpha():
        raise invalid_param("currency", f"Invalid currency: {raw}.")
    return currency


def _amount(raw: Any) -> int:
    if raw is None:
        raise missing_param("amount")
    return whole_amount(raw, below_one="This value must be greater than or equal to 1.")


def _methods(raw: Any, currency: str) -> list[str]:
    if raw is None:
        return charges.payment_method_types(currency)
    if not isinstance(raw, list) or not all(isinstance(kind, str) for kind in raw):
        raise invalid_param("payment_method_types", "payment_method_types must be a list.")
    return list(raw)


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid_param("metadata", "Invalid object: metadata must be a hash of strings.")
    return {k: v for k, v in raw.items() if v != ""}
