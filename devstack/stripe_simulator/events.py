"""Stripe event objects: a typed snapshot of an object at the moment it changed."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .state import JSONObject, new_id

API_VERSION = "2025-09-30.clover"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The API request that caused an event (Stripe leaves both null for customer actions)."""

    id: str | None = None
    idempotency_key: str | None = None


def build_event(
    type_: str,
    obj: JSONObject,
    *,
    created: int,
    pending_webhooks: int,
    request: RequestInfo | None = None,
) -> JSONObject:
    request = request or RequestInfo()
    return {
        "id": new_id("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request.id, "idempotency_key": request.idempotency_key},
        "type": type_,
    }
