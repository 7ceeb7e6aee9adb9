"""Stripe's rate limits, modelled: a global rate and a rate per endpoint, each a token bucket.

A refused request gets what Stripe sends: 429, a `rate_limit` error, `Stripe-Should-Retry` and
`Stripe-Rate-Limited-Reason`. What was accepted and refused is counted, so a test can check
both the refusals and the busiest second the simulator saw.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import StripeApiError

RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. Learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
# Enough arrival times to judge a long test run; older ones are dropped.
KEPT_ARRIVALS = 200_000


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Requests per second, None for no limit. `burst_s` is how much unused time a bucket may
    save up: a bucket holds `rate * burst_s` requests (at least one)."""

    global_per_s: float | None = None
    endpoint_per_s: float | None = None
    burst_s: float = 0.1

    def __post_init__(self) -> None:
        for rate in (self.global_per_s, self.endpoint_per_s):
            if rate is not None and rate <= 0:
                raise ValueError("a rate limit must be positive")
        if self.burst_s < 0:
            raise ValueError("burst_s must not be negative")

    def to_json(self) -> dict[str, Any]:
        return {
            "global_per_s": self.global_per_s,
            "endpoint_per_s": self.endpoint_per_s,
            "burst_s": self.burst_s,
        }


class TokenBucket:
    def __init__(self, rate_per_s: float, burst_s: float, clock: Callable[[], float]) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, rate_per_s * burst_s)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RateLimiter:
    def __init__(
        self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._global = self._bucket(settings.global_per_s)
        self._endpoints: dict[str, TokenBucket] = {}
        self._arrivals: deque[float] = deque(maxlen=KEPT_ARRIVALS)
        self.accepted = 0
        self.accepted_by_endpoint: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, endpoint: str) -> None:
        """Count the request in, or raise Stripe's 429."""
        if self._global is not None and not self._global.take():
            self._refuse("global-rate")
        endpoint_bucket = self._endpoint_bucket(endpoint)
        if endpoint_bucket is not None and not endpoint_bucket.take():
            self._refuse("endpoint-rate")
        self.accepted += 1
        self.accepted_by_endpoint[endpoint] += 1
        self._arrivals.append(self._clock())

    def busiest_second(self) -> int:
        """The most requests accepted within any one-second window."""
        arrivals, most, start = list(self._arrivals), 0, 0
        for end, arrived in enumerate(arrivals):
            while arrived - arrivals[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most

    def to_json(self) -> dict[str, Any]:
        return {
            **self.settings.to_json(),
            "accepted": self.accepted,
            "accepted_by_endpoint": dict(self.accepted_by_endpoint),
            "refused": sum(self.refused.values()),
            "refused_by_reason": dict(self.refused),
            "busiest_second": self.busiest_second(),
        }

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        raise StripeApiError(
            429,
            RATE_LIMIT_MESSAGE,
            code="rate_limit",
            replayable=False,
            headers={"Stripe-Should-Retry": "true", "Stripe-Rate-Limited-Reason": reason},
        )

    def _endpoint_bucket(self, endpoint: str) -> TokenBucket | None:
        if self.settings.endpoint_per_s is None:
            return None
        if endpoint not in self._endpoints:
            bucket = self._bucket(self.settings.endpoint_per_s)
            assert bucket is not None
            self._endpoints[endpoint] = bucket
        return self._endpoints[endpoint]

    def _bucket(self, rate_per_s: float | None) -> TokenBucket | None:
        if rate_per_s is None:
            return None
        return TokenBucket(rate_per_s, self.settings.burst_s, self._clock)
