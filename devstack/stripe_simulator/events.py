"""Stripe event objects: a typed snapshot of an object at the moment it changed."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

from .state import JSONObject, new_id

# The version of the stripe SDK the project pins (stripe.api_version): the webhook endpoint is
# created with it, so Stripe sends every event in it.
API_VERSION = "2026-10-28.endive"


class Change(NamedTuple):
    """An event to send: its type, the object it is about and, for `*.updated` events, the
    values the changed fields had before (`data.previous_attributes`)."""

    type: str
    obj: JSONObject
    previous: JSONObject | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The API request that caused an event (Stripe leaves both null for customer actions)."""

    id: str | None = None
    idempotency_key: str | None = None


def build_event(
    change: Change,
    *,
    created: int,
    pending_webhooks: int,
    request: RequestInfo | None = None,
) -> JSONObject:
    request = request or RequestInfo()
    data: JSONObject = {"object": copy.deepcopy(change.obj)}
    if change.previous is not None:
        data["previous_attributes"] = copy.deepcopy(change.previous)
    return {
        "id": new_id("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request.id, "idempotency_key": request.idempotency_key},
        "type": change.type,
    }
