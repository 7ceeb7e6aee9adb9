"""Test events shaped as Stripe sends them: Stripe's own example of each resource, with only the
fields a test is about replaced.

The examples are in tests/stripe_fixtures/resources.json, copied unchanged from
openapi/fixtures3.json of github.com/stripe/openapi at f6c2a48 (2026-08-21), MIT, Stripe, Inc.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

RESOURCES_FILE = Path(__file__).parent / "stripe_fixtures" / "resources.json"

_event_numbers = itertools.count()


@cache
def _examples() -> dict[str, dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = json.loads(RESOURCES_FILE.read_text())["resources"]
    return examples


def stripe_object(kind: str, **fields: Any) -> dict[str, Any]:
    """Stripe's example `kind` (`checkout.session`, `payment_intent`, `charge`, `refund`,
    `dispute`) with `fields` replacing its own."""
    return {**copy.deepcopy(_examples()[kind]), **fields}


def stripe_event(
    kind: str,
    resource: dict[str, Any],
    *,
    previous_attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Stripe's example event of type `kind` about `resource`, with a fresh id unless `fields`
    give one; `previous_attributes` (of a `*.updated` event) are the changed fields' values
    before."""
    data: dict[str, Any] = {"object": resource}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    event = {
        "id": f"evt_{next(_event_numbers):08d}{time.time_ns() % 10**9:09d}",
        "type": kind,
        "created": int(time.time()),
        "data": data,
    }
    return stripe_object("event", **(event | fields))


def charge_as_sent(**fields: Any) -> dict[str, Any]:
    """Stripe's example Charge as a webhook carries it: since API version 2022-11-15 without
    `refunds` (only a request that expands it lists them, and webhooks never expand)."""
    charge = stripe_object("charge", **fields)
    del charge["refunds"]
    return charge
