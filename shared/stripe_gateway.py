"""Checkout Sessions and Refunds through the Stripe SDK's async client.

Errors are sorted into the two kinds callers act on: transient (retry later) and permanent
(the request itself is wrong and will never succeed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from prometheus_client import Histogram

STRIPE_LATENCY = Histogram(
    "payments_stripe_request_seconds",
    "Latency of Stripe API calls",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class TransientStripeError(Exception):
    """Stripe could not answer now (network, 429, 5xx): the same call may succeed later."""


class PermanentStripeError(Exception):
    """Stripe refused the request (4xx other than 429): retrying the same call cannot help."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    ride_id: str
    user_id: str
    amount: int
    currency: str
    success_url: str
    cancel_url: str
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        """The first attempt keeps the key rides always had; each later one has its own."""
        if self.attempt == 1:
            return f"checkout-{self.ride_id}"
        return f"checkout-{self.ride_id}-{self.attempt}"

    def params(self) -> dict[str, Any]:
        metadata = {"rideId": self.ride_id, "userId": self.user_id, "attempt": str(self.attempt)}
        return {
            "mode": "payment",
            "client_reference_id": self.ride_id,
            "success_url": self.success_url,
            "cancel_url": self.cancel_url,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": self.currency,
                        "unit_amount": self.amount,
                        "product_data": {"name": f"Ride {self.ride_id}"},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
        }


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str
    payment_status: str
    payment_intent_id: str | None
    expires_at: int | None
    payment_intent_status: str | None = None
    payment_failed: bool = False

    @classmethod
    def from_stripe(cls, session: Any) -> CheckoutSession:
        """From the SDK's object (or a plain dict), reading only these fields: `to_dict()`
        would copy the whole object first."""
        intent = _field(session, "payment_intent")
        expanded = None if intent is None or isinstance(intent, str) else intent
        return cls(
            id=session["id"],
            url=_field(session, "url"),
            status=_field(session, "status") or "open",
            payment_status=_field(session, "payment_status") or "unpaid",
            payment_intent_id=intent if isinstance(intent, str) else _field(expanded, "id"),
            expires_at=_field(session, "expires_at"),
            payment_intent_status=_field(expanded, "status"),
            payment_failed=bool(_field(expanded, "last_payment_error")),
        )


@dataclass(frozen=True, slots=True)
class RefundCall:
    """A refund of (part of) a ride's PaymentIntent; `refund_id` is the caller's key."""

    ride_id: str
    refund_id: str
    payment_intent_id: str
    amount: int
    reason: str | None

    @property
    def idempotency_key(self) -> str:
        return f"refund-{self.refund_id}"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "payment_intent": self.payment_intent_id,
            "amount": self.amount,
            "metadata": {"rideId": self.ride_id, "refundId": self.refund_id},
        }
        if self.reason:
            params["reason"] = self.reason
        return params


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    status: str
    amount: int
    failure_reason: str | None

    @classmethod
    def from_stripe(cls, refund: Any) -> StripeRefund:
        return cls(
            id=refund["id"],
            status=_field(refund, "status") or "pending",
            amount=refund["amount"],
            failure_reason=_field(refund, "failure_reason"),
        )


def expires_at_of(session: CheckoutSession) -> datetime | None:
    """When the session stops being payable, as a time (Stripe gives Unix seconds)."""
    return datetime.fromtimestamp(session.expires_at, UTC) if session.expires_at else None


def _field(stripe_object: Any, name: str) -> Any:
    """A field of a `StripeObject` or dict, None when absent (StripeObject has no `get`)."""
    if stripe_object is None or name not in stripe_object:
        return None
    return stripe_object[name]


class StripeGateway:
    def __init__(self, secret_key: str, api_base: str, *, max_network_retries: int = 0) -> None:
        # The SDK's aiohttp client: about a quarter of the CPU per call of its HTTPX client
        # (see docs/benchmarks.md), and aiohttp is already ours.
        self._http = stripe.AIOHTTPClient(timeout=20)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSession:
        async with _classified("create_checkout_session"):
            session = await self._client.v1.checkout.sessions.create_async(
                params=request.params(),  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        return CheckoutSession.from_stripe(session)

    async def retrieve_checkout_session(self, session_id: str) -> CheckoutSession:
        async with _classified("retrieve_checkout_session"):
            session = await self._client.v1.checkout.sessions.retrieve_async(
                session_id, params={"expand": ["payment_intent"]}
            )
        return CheckoutSession.from_stripe(session)

    async def expire_checkout_session(self, session_id: str) -> CheckoutSession:
        async with _classified("expire_checkout_session"):
            session = await self._client.v1.checkout.sessions.expire_async(session_id)
        return CheckoutSession.from_stripe(session)

    async def create_refund(self, call: RefundCall) -> StripeRefund:
        async with _classified("create_refund"):
            refund = await self._client.v1.refunds.create_async(
                params=call.params(),  # type: ignore[arg-type]
                options={"idempotency_key": call.idempotency_key},
            )
        return StripeRefund.from_stripe(refund)

    async def retrieve_refund(self, stripe_refund_id: str) -> StripeRefund:
        async with _classified("retrieve_refund"):
            refund = await self._client.v1.refunds.retrieve_async(stripe_refund_id)
        return StripeRefund.from_stripe(refund)


class _classified:
    """Times a Stripe call and turns the SDK's errors into Transient/PermanentStripeError."""

    def __init__(self, operation: str) -> None:
        self._operation = operation
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        STRIPE_LATENCY.labels(self._operation).observe(time.perf_counter() - self._started)
        if error is None or not isinstance(error, stripe.StripeError):
            return
        status = error.http_status
        message = f"stripe {self._operation}: {error.user_message or error}"
        if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or status is None:
            raise TransientStripeError(message) from error
        if status == 429 or status >= 500 or status == 409:
            raise TransientStripeError(message) from error
        raise PermanentStripeError(f"{message} (HTTP {status})") from error
