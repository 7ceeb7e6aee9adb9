"""Stripe's shapes as a test oracle: the fields of each object as Stripe's own example has them
(resources.json, copied unchanged from fixtures3.json of github.com/stripe/openapi at f6c2a48,
MIT, Stripe, Inc.), and which may be null as the `stripe` SDK declares them (Stripe generates
both from one OpenAPI specification).

An object has Stripe's shape when it has every field of the example, each with the example's
JSON type (a field null in the example may be anything; a nested object is checked by presence
and type, not inside), null only where Stripe allows null, and no field Stripe does not define.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import stripe
from stripe import checkout

RESOURCES_FILE = Path(__file__).with_name("resources.json")

SDK_CLASSES: Mapping[str, type[stripe.StripeObject]] = {
    "checkout.session": checkout.Session,
    "payment_intent": stripe.PaymentIntent,
    "charge": stripe.Charge,
    "refund": stripe.Refund,
    "dispute": stripe.Dispute,
    "balance_transaction": stripe.BalanceTransaction,
    "event": stripe.Event,
}

# Fields Stripe sends only when a request expands them, and webhooks never expand: since API
# version 2022-11-15 a charge's `refunds` (a `charge.refunded` event says `amount_refunded`).
ONLY_WHEN_EXPANDED: Mapping[str, frozenset[str]] = {"charge": frozenset({"refunds"})}

STRING, INTEGER, BOOLEAN, OBJECT, NULL = "string", "integer", "boolean", "object", "null"

# The fields the project reads from Stripe's objects (the consumer, the webhook, the gateway)
# and the JSON types it is ready for. If Stripe's example or its SDK says otherwise, the
# project's reading of that field must be looked at.
PROJECT_READS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "event": {
        "id": frozenset({STRING}),
        "type": frozenset({STRING}),
        "created": frozenset({INTEGER}),
        "data": frozenset({OBJECT}),
        "api_version": frozenset({STRING, NULL}),
    },
    "checkout.session": {
        "id": frozenset({STRING}),
        "status": frozenset({STRING, NULL}),
        "payment_status": frozenset({STRING}),
        "payment_intent": frozenset({STRING, OBJECT, NULL}),
        "url": frozenset({STRING, NULL}),
        "expires_at": frozenset({INTEGER}),
        "amount_total": frozenset({INTEGER, NULL}),
        "currency": frozenset({STRING, NULL}),
        "metadata": frozenset({OBJECT, NULL}),
        "client_reference_id": frozenset({STRING, NULL}),
        "mode": frozenset({STRING}),
    },
    "payment_intent": {
        "id": frozenset({STRING}),
        "status": frozenset({STRING}),
        "amount": frozenset({INTEGER}),
        "currency": frozenset({STRING}),
        "metadata": frozenset({OBJECT}),
        "last_payment_error": frozenset({OBJECT, NULL}),
        "latest_charge": frozenset({STRING, OBJECT, NULL}),
    },
    "charge": {
        "id": frozenset({STRING}),
        "amount": frozenset({INTEGER}),
        "amount_refunded": frozenset({INTEGER}),
        "refunded": frozenset({BOOLEAN}),
        "currency": frozenset({STRING}),
        "payment_intent": frozenset({STRING, OBJECT, NULL}),
        "metadata": frozenset({OBJECT}),
    },
    "refund": {
        "id": frozenset({STRING}),
        "status": frozenset({STRING, NULL}),
        "amount": frozenset({INTEGER}),
        "currency": frozenset({STRING}),
        "payment_intent": frozenset({STRING, OBJECT, NULL}),
        "charge": frozenset({STRING, OBJECT, NULL}),
        "metadata": frozenset({OBJECT, NULL}),
        "failure_reason": frozenset({STRING, NULL}),  # only on a failed refund
    },
    "dispute": {
        "id": frozenset({STRING}),
        "status": frozenset({STRING}),
        "amount": frozenset({INTEGER}),
        "currency": frozenset({STRING}),
        "payment_intent": frozenset({STRING, OBJECT, NULL}),
        "charge": frozenset({STRING, OBJECT}),
        "metadata": frozenset({OBJECT}),
    },
}

_MISSING = object()
_EVENT_DATA = frozenset({"object", "previous_attributes"})


@cache
def examples() -> Mapping[str, Mapping[str, Any]]:
    resources: dict[str, dict[str, Any]] = json.loads(RESOURCES_FILE.read_text())["resources"]
    return resources


def json_type(value: object) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return "array"
    return OBJECT if isinstance(value, dict) else type(value).__name__


@cache
def declared(kind: str) -> Mapping[str, Any]:
    """Every field the SDK declares for `kind`, with its type annotation."""
    fields: dict[str, Any] = {}
    for base in reversed(SDK_CLASSES[kind].__mro__):
        fields.update(getattr(base, "__annotations__", {}))
    return {name: kind_ for name, kind_ in fields.items() if not name.startswith("_")}


def sdk_json_types(annotation: Any) -> frozenset[str]:
    """The JSON types an SDK annotation allows: `Optional[int]` -> integer or null."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(sdk_json_types(arg) for arg in args))
    if origin is typing.Literal:
        return frozenset(json_type(arg) for arg in args)
    if origin is list:
        return frozenset({"array"})
    if annotation is type(None):
        return frozenset({NULL})
    simple = {int: INTEGER, str: STRING, bool: BOOLEAN, float: "number"}
    if annotation in simple:
        return frozenset({simple[annotation]})
    # A forward reference names another resource; dicts, StripeObjects and list envelopes
    # (`{"object": "list", ...}`) are JSON objects.
    return frozenset({OBJECT})


def nullable(kind: str, field: str) -> bool:
    annotation = declared(kind).get(field)
    return annotation is not None and NULL in sdk_json_types(annotation)


def shape_problems(obj: Mapping[str, Any], where: str | None = None) -> list[str]:
    """What keeps `obj` (kind from its `object` field) from having Stripe's shape: one line
    per field, each naming it (`charge.refunds: ...`)."""
    kind = str(obj.get("object"))
    where = where or kind
    if kind not in SDK_CLASSES:
        return [f"{where}: the oracle knows no Stripe object {kind!r}"]
    example = examples()[kind]
    problems = [
        problem
        for name, sample in example.items()
        for problem in _field_problems(kind, name, sample, obj.get(name, _MISSING), where)
    ]
    problems += [
        f"{where}.{name}: Stripe's {kind} has no such field"
        for name in obj
        if name not in example and name not in declared(kind)
    ]
    if kind == "event" and isinstance(obj.get("data"), dict):
        problems += _event_data_problems(obj["data"], where)
    return problems


def read_field_problem(kind: str, field: str, expected: frozenset[str]) -> str | None:
    """Why Stripe's `kind.field` is no longer what the project reads, None when it still is."""
    sample = examples()[kind].get(field, _MISSING)
    annotation = declared(kind).get(field, _MISSING)
    name = f"{kind}.{field}"
    if sample is _MISSING and annotation is _MISSING:
        return f"{name}: Stripe no longer has it"
    if sample is not _MISSING and json_type(sample) not in expected | {NULL}:
        return f"{name}: Stripe's example is {json_type(sample)}, the project reads {_or(expected)}"
    if sample is None and NULL not in expected:
        return f"{name}: null in Stripe's example, the project reads {_or(expected)}"
    if annotation is not _MISSING and not sdk_json_types(annotation) <= expected:
        allowed = _or(sdk_json_types(annotation))
        return f"{name}: Stripe's SDK allows {allowed}, the project reads {_or(expected)}"
    return None


def _field_problems(kind: str, name: str, sample: Any, value: Any, where: str) -> list[str]:
    path = f"{where}.{name}"
    if name in ONLY_WHEN_EXPANDED.get(kind, ()):
        present = value is not _MISSING
        return [f"{path}: Stripe sends it only when a request expands it"] if present else []
    if value is _MISSING:
        return [f"{path}: missing, Stripe always returns it"]
    if sample is None:
        return []
    if value is None:
        return [] if nullable(kind, name) else [f"{path}: null, Stripe never sends it null"]
    if _expanded(kind, name, sample, value):
        return shape_problems(value, path)
    if json_type(value) != json_type(sample):
        return [f"{path}: {json_type(value)}, Stripe's is {json_type(sample)}"]
    if isinstance(sample, list) and sample:
        wrong = {json_type(item) for item in value} - {json_type(sample[0])}
        if wrong:
            return [f"{path}: items of type {_or(wrong)}, Stripe's are {json_type(sample[0])}"]
    return []


def _expanded(kind: str, name: str, sample: Any, value: Any) -> bool:
    """An id field a request asked to expand: the object it names, in its place."""
    annotation = declared(kind).get(name)
    expandable = annotation is not None and OBJECT in sdk_json_types(annotation)
    return json_type(sample) == STRING and isinstance(value, dict) and expandable


def _event_data_problems(data: Mapping[str, Any], where: str) -> list[str]:
    problems = [
        f"{where}.data.{key}: not in Stripe's events" for key in data if key not in _EVENT_DATA
    ]
    previous = data.get("previous_attributes", {})
    if not isinstance(previous, dict):
        problems.append(f"{where}.data.previous_attributes: {json_type(previous)}, not an object")
    resource = data.get("object")
    if not isinstance(resource, dict):
        return [*problems, f"{where}.data.object: {json_type(resource)}, not an object"]
    return problems + shape_problems(resource, f"{where}.data.object")


def _or(kinds: frozenset[str] | set[str]) -> str:
    return " or ".join(sorted(kinds))
