"""Everything the simulator remembers, in memory: objects, events, idempotency, faults."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import SimulatorConfig
from .idempotency import IdempotencyCache
from .rate_limits import RateLimiter

JSONObject = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(slots=True)
class SessionRecord:
    """A Checkout Session as the API shows it, plus what Stripe keeps out of sight."""

    obj: JSONObject
    payment_intent_metadata: dict[str, str]

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def is_open(self) -> bool:
        return bool(self.obj["status"] == "open")


@dataclass(slots=True)
class Delivery:
    """Webhook delivery of one event: `pending`, `delivered`, `failed`, `not_sent` (asked
    not to), `no_endpoint` (no webhook URL configured) or `canceled` (reset or shutdown)."""

    status: str = "pending"
    attempts: list[JSONObject] = field(default_factory=list)

    def to_json(self) -> JSONObject:
        return {"status": self.status, "attempts": list(self.attempts)}


@dataclass(slots=True)
class EventRecord:
    event: JSONObject
    session_id: str
    delivery: Delivery

    def to_json(self) -> JSONObject:
        return {**self.event, "delivery": self.delivery.to_json()}


@dataclass(slots=True)
class Faults:
    """Injected trouble for /v1 requests: the next `remaining` answer `status`; calls about a
    ride in `slow_rides` (by `client_reference_id`) take that many more milliseconds."""

    status: int | None = None
    remaining: int = 0
    should_retry: bool | None = None
    latency_ms: int | None = None
    slow_rides: dict[str, int] = field(default_factory=dict)

    def take(self) -> int | None:
        if self.status is None or self.remaining <= 0:
            return None
        self.remaining -= 1
        return self.status

    def to_json(self) -> JSONObject:
        return {
            "status": self.status,
            "remaining": self.remaining,
            "should_retry": self.should_retry,
            "latency_ms": self.latency_ms,
            "slow_rides": dict(self.slow_rides),
        }


@dataclass(slots=True)
class RefundSettings:
    """How new refunds end. `settle_after_ms` 0: a card refund is `succeeded` in the create
    call's answer, as at Stripe (a bank debit's settles after BANK_REFUND_SETTLE_MS); N: every
    refund is `pending` and settles after N ms; None: pending until told, through the control
    API. `fail_next` makes the next refunds fail (a card refund at once fails right after it
    succeeded: the money came back)."""

    settle_after_ms: int | None = 0
    fail_next: int = 0

    def to_json(self) -> JSONObject:
        return {"settle_after_ms": self.settle_after_ms, "fail_next": self.fail_next}


@dataclass(slots=True)
class WebhookSettings:
    url: str | None
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, url: str | None, secret: str) -> WebhookSettings:
        return cls(url or None, tuple(s.strip() for s in secret.split(",") if s.strip()))

    def to_json(self) -> JSONObject:
        return {"webhook_url": self.url, "webhook_secret": ",".join(self.secrets)}


class SimulatorState:
    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.sessions: dict[str, SessionRecord] = {}
        self.payment_intents: dict[str, JSONObject] = {}
        self.charges: dict[str, JSONObject] = {}
        self.refunds: dict[str, JSONObject] = {}
        self.disputes: dict[str, JSONObject] = {}
        self.refund_settings = RefundSettings()
        self.events: list[EventRecord] = []
        self.idempotency = IdempotencyCache(clock)
        self.faults = Faults()
        self.rate_limiter = RateLimiter(config.rate_limits)
        self.webhook = WebhookSettings.parse(config.webhook_url, config.webhook_secret)

    def now(self) -> int:
        return int(self.clock())

    def latency_ms(self) -> int:
        injected = self.faults.latency_ms
        return self.config.latency_ms if injected is None else injected

    def reset(self) -> None:
        """Forget everything and return to the startup configuration."""
        self.sessions.clear()
        self.payment_intents.clear()
        self.charges.clear()
        self.refunds.clear()
        self.disputes.clear()
        self.refund_settings = RefundSettings()
        self.events.clear()
        self.idempotency.clear()
        self.faults = Faults()
        self.rate_limiter = RateLimiter(self.config.rate_limits)
        self.webhook = WebhookSettings.parse(self.config.webhook_url, self.config.webhook_secret)
