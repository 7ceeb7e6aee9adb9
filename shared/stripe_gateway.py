"""Checkout Sessions and Refunds through the Stripe SDK's async client.

Every call waits for its turn in the account's shared budget (shared/stripe_budget.py) and for
a free place under this process's in-flight limit, which halves while Stripe answers 429 and
grows back as calls succeed (shared/adaptive_limit.py). A 429 is retried here, after
`Retry-After` when Stripe gives one, else after a jittered backoff; it is never a permanent
refusal.

Errors are sorted into the two kinds callers act on: transient (retry later) and permanent
(the request itself is wrong and will never succeed).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe
from prometheus_client import Counter, Histogram

from shared.adaptive_limit import AdaptiveLimit
from shared.stripe_budget import Priority, StripeBudget

logger = logging.getLogger(__name__)

T = TypeVar("T")

STRIPE_LATENCY = Histogram(
    "payments_stripe_request_seconds",
    "Latency of Stripe API calls",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STRIPE_CALLS = Counter(
    "payments_stripe_calls_total",
    "Stripe API calls by operation and outcome (ok, rate_limited, transient, permanent, error)",
    ["operation", "outcome"],
)
RATE_LIMITED = Counter(
    "payments_stripe_rate_limited_total",
    "Stripe calls answered 429, by Stripe-Rate-Limited-Reason",
    ["operation", "reason"],
)
KNOWN_RATE_LIMIT_REASONS = frozenset(
    {"global-rate", "endpoint-rate", "global-concurrency", "endpoint-concurrency"}
)

# A call answered 429 is sent again at most this many times before the caller hears of it.
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_BACKOFF_FIRST_S = 0.25
RATE_LIMIT_BACKOFF_MAX_S = 5.0
MAX_RETRY_AFTER_S = 60.0


class TransientStripeError(Exception):
    """Stripe could not answer now (network, 429, 5xx): the same call may succeed later."""


class StripeRateLimited(TransientStripeError):
    """Stripe answered 429: slow down, and try again after `retry_after_s` when it says so."""

    def __init__(self, message: str, *, should_retry: bool, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.should_retry = should_retry
        self.retry_after_s = retry_after_s


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
    def __init__(
        self,
        secret_key: str,
        api_base: str,
        *,
        max_network_retries: int = 0,
        budget: StripeBudget | None = None,
        max_in_flight: int = 32,
    ) -> None:
        """Without a `budget`, calls are not paced (tests and tools that call Stripe alone)."""
        self._budget = budget
        self._priority = Priority.RIDER
        self._in_flight = AdaptiveLimit(max_in_flight)
        # The SDK's aiohttp client: about a quarter of the CPU per call of its HTTPX client
        # (see docs/benchmarks.md), and aiohttp is already ours.
        self._http = stripe.AIOHTTPClient(timeout=20)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    def with_priority(self, priority: Priority) -> StripeGateway:
        """The same gateway (client, budget, in-flight limit) drawing at another priority."""
        other = copy.copy(self)
        other._priority = priority
        return other

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
        if self._budget is not None:
            await self._budget.close()

    async def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSession:
        session = await self._paced(
            "create_checkout_session",
            lambda: self._client.v1.checkout.sessions.create_async(
                params=request.params(),  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            ),
            {"rideId": request.ride_id},
        )
        return CheckoutSession.from_stripe(session)

    async def retrieve_checkout_session(self, session_id: str) -> CheckoutSession:
        session = await self._paced(
            "retrieve_checkout_session",
            lambda: self._client.v1.checkout.sessions.retrieve_async(
                session_id, params={"expand": ["payment_intent"]}
            ),
            {"stripeSessionId": session_id},
        )
        return CheckoutSession.from_stripe(session)

    async def expire_checkout_session(self, session_id: str) -> CheckoutSession:
        session = await self._paced(
            "expire_checkout_session",
            lambda: self._client.v1.checkout.sessions.expire_async(session_id),
            {"stripeSessionId": session_id},
        )
        return CheckoutSession.from_stripe(session)

    async def create_refund(self, call: RefundCall) -> StripeRefund:
        refund = await self._paced(
            "create_refund",
            lambda: self._client.v1.refunds.create_async(
                params=call.params(),  # type: ignore[arg-type]
                options={"idempotency_key": call.idempotency_key},
            ),
            {"rideId": call.ride_id, "refundId": call.refund_id},
        )
        return StripeRefund.from_stripe(refund)

    async def retrieve_refund(self, stripe_refund_id: str) -> StripeRefund:
        refund = await self._paced(
            "retrieve_refund",
            lambda: self._client.v1.refunds.retrieve_async(stripe_refund_id),
            {"stripeRefundId": stripe_refund_id},
        )
        return StripeRefund.from_stripe(refund)

    async def _paced(
        self, operation: str, send: Callable[[], Awaitable[T]], log: Mapping[str, object]
    ) -> T:
        """One Stripe call in its turn; a 429 is sent again in a later turn. `log` names what
        the call is about (the rideId, or the session when the caller has only that)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._in_flight.slot():
                    if self._budget is not None:
                        await self._budget.take(self._priority)
                    async with _classified(operation):
                        result = await send()
                    self._in_flight.succeeded()
                    return result
            except StripeRateLimited as refusal:
                self._in_flight.refused()
                if not refusal.should_retry or attempt > RATE_LIMIT_RETRIES:
                    raise
                delay = _rate_limit_delay(refusal, attempt)
                logger.info(
                    "Stripe answered 429; slowing down",
                    extra={
                        **log,
                        "operation": operation,
                        "attempt": attempt,
                        "retryInS": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)


def _rate_limit_delay(refusal: StripeRateLimited, attempt: int) -> float:
    """Retry-After when Stripe sent one, plus jitter so that waiting callers do not return
    together; else full jitter over a capped exponential."""
    if refusal.retry_after_s is not None:
        return refusal.retry_after_s + random.uniform(0, RATE_LIMIT_BACKOFF_FIRST_S)
    cap = min(RATE_LIMIT_BACKOFF_MAX_S, RATE_LIMIT_BACKOFF_FIRST_S * 2 ** (attempt - 1))
    return random.uniform(0, cap)


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
        if error is None:
            STRIPE_CALLS.labels(self._operation, "ok").inc()
            return
        if not isinstance(error, stripe.StripeError):
            if isinstance(error, Exception):  # not a cancellation
                STRIPE_CALLS.labels(self._operation, "error").inc()
            return
        status = error.http_status
        message = f"stripe {self._operation}: {error.user_message or error}"
        if status == 429 or isinstance(error, stripe.RateLimitError):
            STRIPE_CALLS.labels(self._operation, "rate_limited").inc()
            raise self._rate_limited(error, message) from error
        if isinstance(error, stripe.APIConnectionError) or status is None:
            STRIPE_CALLS.labels(self._operation, "transient").inc()
            raise TransientStripeError(message) from error
        if status >= 500 or status == 409:
            STRIPE_CALLS.labels(self._operation, "transient").inc()
            raise TransientStripeError(message) from error
        STRIPE_CALLS.labels(self._operation, "permanent").inc()
        raise PermanentStripeError(f"{message} (HTTP {status})") from error

    def _rate_limited(self, error: stripe.StripeError, message: str) -> StripeRateLimited:
        headers = {name.lower(): value for name, value in (error.headers or {}).items()}
        reason = headers.get("stripe-rate-limited-reason", "unknown")
        RATE_LIMITED.labels(
            self._operation, reason if reason in KNOWN_RATE_LIMIT_REASONS else "other"
        ).inc()
        return StripeRateLimited(
            message,
            should_retry=headers.get("stripe-should-retry", "true").lower() != "false",
            retry_after_s=_seconds(headers.get("retry-after")),
        )


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (Stripe sends seconds, never an HTTP date), within reason."""
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds <= MAX_RETRY_AFTER_S:
        return None
    return seconds
