"""Stripe-shaped API errors and JSON responses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Stripe's own error codes among those the simulator answers: Stripe links each to its page.
DOCUMENTED_CODES = frozenset(
    {
        "amount_too_large", "amount_too_small", "api_key_invalid", "charge_already_refunded",
        "charge_disputed", "charge_not_refundable", "idempotency_key_in_use",
        "invalid_charge_amount", "parameter_invalid", "parameter_missing", "parameter_unknown",
        "rate_limit", "resource_missing",
    }
)  # fmt: skip


class StripeApiError(Exception):
    """An error answered as `{"error": {...}}`, the way Stripe's API answers it.

    `replayable` says whether an idempotency key remembers this answer: Stripe does not save
    results of requests that failed parameter validation or never started executing.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        replayable: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.replayable = replayable
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message, "code": self.code}
        if self.code in DOCUMENTED_CODES:
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}

    def response(self) -> web.Response:
        response = json_response(self.body(), status=self.status)
        response.headers.update(self.headers)
        return response


def invalid_param(param: str, message: str, code: str = "parameter_invalid") -> StripeApiError:
    return StripeApiError(400, message, code=code, param=param, replayable=False)


def missing_param(param: str) -> StripeApiError:
    return invalid_param(param, f"Missing required param: {param}.", "parameter_missing")


def no_such(kind: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def json_response(body: Any, *, status: int = 200) -> web.Response:
    # Stripe pretty-prints its JSON; the exact bytes also become the idempotent replay.
    return web.Response(
        body=json.dumps(body, indent=2).encode(),
        status=status,
        content_type="application/json",
    )
