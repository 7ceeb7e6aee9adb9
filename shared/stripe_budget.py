"""The Stripe account's rate limit, spent on purpose: one budget for every call of every process.

The budget is a GCRA schedule kept in Redis (one Lua script, atomic, on Redis's clock): each
call reserves the next free slot, `1 / STRIPE_MAX_REQUESTS_PER_S` after the previous one, and
waits for it. So every replica of every service shares the rate, and a burst becomes a queue
instead of a storm of 429s.

Priorities: a rider waiting for a link reserves a slot however far ahead the schedule runs;
housekeeping (the reconciler) takes a slot only when none is reserved ahead of now, that is
only what riders leave, and otherwise waits and asks again.

When Redis cannot be reached, each process keeps the same schedule in its own memory at an
equal share of the rate (the rate divided by STRIPE_BUDGET_PROCESSES), says so in a log line
and a gauge, and asks Redis again a few seconds later.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as redis
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from shared.settings import Settings

logger = logging.getLogger(__name__)

BUDGET_KEY = "payments:stripe-budget"
# After Redis failed, the local share is used this long before Redis is asked again; short,
# because processes back on Redis and processes still on their share overlap meanwhile.
LOCAL_SHARE_FOR_S = 1.0
# A call refused a turn (housekeeping while riders hold the budget, or any call further
# ahead than the local share gives out) asks again at least this often.
ASK_AGAIN_AFTER_S = 1.0
REDIS_TIMEOUT_S = 0.5

WAITED = Histogram(
    "payments_stripe_budget_wait_seconds",
    "Time a Stripe call waited for its turn in the shared budget",
    ["priority"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOCAL_SHARE = Gauge(
    "payments_stripe_budget_local_share",
    "1 while this process paces Stripe calls at its local share (Redis unreachable)",
)
LOCAL_SHARE_CALLS = Counter(
    "payments_stripe_budget_local_calls_total",
    "Stripe calls paced by the local share because Redis could not be reached",
)

# KEYS[1]: the theoretical arrival time (TAT) of the next free slot, in microseconds of
# Redis's clock. ARGV[1]: the interval between calls in microseconds; ARGV[2]: "1" when the
# caller is housekeeping; ARGV[3]: microseconds from now that the caller's process has
# already promised to its local share (after an outage), which no slot may overlap.
# Returns {1, wait} (slot taken: call after `wait` microseconds) or {0, wait} (housekeeping
# refused: riders hold the next `wait` microseconds).
RESERVE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
tat = math.max(tat, now + tonumber(ARGV[3]))
local wait = tat - now
if ARGV[2] == '1' and wait > 0 then
  return {0, wait}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
           'PX', math.floor((next_tat - now) / 1000) + 1000)
return {1, wait}
"""


class Priority(StrEnum):
    RIDER = "rider"  # a rider waits for this call (ride events, new links)
    HOUSEKEEPING = "housekeeping"  # takes only what riders leave (the reconciler)


@dataclass(frozen=True, slots=True)
class Turn:
    """The answer to a reservation: taken or not, and the wait in seconds."""

    taken: bool
    wait_s: float


class LocalSchedule:
    """The same GCRA schedule in this process's memory, at this process's share of the rate."""

    def __init__(self, rate_per_s: float) -> None:
        self._interval_s = 1.0 / rate_per_s
        self._next_free = 0.0

    def not_before(self, moment: float) -> None:
        """No local slot before `moment` (turns taken from Redis run until then)."""
        self._next_free = max(self._next_free, moment)

    def promised_s(self) -> float:
        """How far ahead of now local turns are already given out."""
        return max(0.0, self._next_free - time.monotonic())

    def reserve(self, priority: Priority) -> Turn:
        """Turns are given out at most LOCAL_SHARE_FOR_S ahead: when Redis is back, the ones
        still to run must not overlap for long with those Redis gives to other processes."""
        now = time.monotonic()
        slot = max(self._next_free, now)
        if slot > now and (priority is Priority.HOUSEKEEPING or slot > now + LOCAL_SHARE_FOR_S):
            return Turn(False, slot - now)
        self._next_free = slot + self._interval_s
        return Turn(True, slot - now)


class StripeBudget:
    def __init__(self, client: redis.Redis, rate_per_s: float, *, processes: int) -> None:
        self._redis = client
        self._interval_us = round(1_000_000 / rate_per_s)
        self._reserve_script = client.register_script(RESERVE_SCRIPT)
        self._local_rate_per_s = rate_per_s / processes
        self._local = LocalSchedule(self._local_rate_per_s)
        self._on_local_share = False
        self._local_until = 0.0
        self._shared_horizon = 0.0  # when the turns given out by Redis ran out, last we heard

    @classmethod
    def connect(cls, url: str, rate_per_s: float, *, processes: int) -> StripeBudget:
        """A client of its own with short timeouts and no retries: a Redis that does not
        answer at once sends the call to the local share instead of holding it up."""
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, retry=None
        )
        return cls(client, rate_per_s, processes=processes)

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeBudget:
        return cls.connect(
            settings.redis_url,
            settings.stripe_max_requests_per_s,
            processes=settings.stripe_budget_processes,
        )

    async def close(self) -> None:
        await self._redis.aclose()

    async def take(self, priority: Priority = Priority.RIDER) -> None:
        """Return when this call's turn has come."""
        started = time.monotonic()
        while True:
            turn = await self._reserve(priority)
            if turn.taken:
                break
            await asyncio.sleep(min(turn.wait_s, ASK_AGAIN_AFTER_S) * random.uniform(1, 1.5))
        if turn.wait_s > 0:
            await asyncio.sleep(turn.wait_s)
        WAITED.labels(priority.value).observe(time.monotonic() - started)

    async def _reserve(self, priority: Priority) -> Turn:
        if time.monotonic() < self._local_until:
            return self._reserve_locally(priority)
        # Turns given out locally during an outage still run: the shared ones come after them.
        promised_us = round(self._local.promised_s() * 1_000_000)
        try:
            taken, wait_us = await self._reserve_script(
                keys=[BUDGET_KEY],
                args=[self._interval_us, int(priority is Priority.HOUSEKEEPING), promised_us],
            )
        except (RedisError, OSError) as error:
            self._use_local_share(error)
            return self._reserve_locally(priority)
        if self._on_local_share:
            self._back_to_redis()
        turn = Turn(bool(taken), int(wait_us) / 1_000_000)
        self._shared_horizon = time.monotonic() + turn.wait_s + self._interval_us / 1_000_000
        return turn

    def _reserve_locally(self, priority: Priority) -> Turn:
        turn = self._local.reserve(priority)
        if turn.taken:
            LOCAL_SHARE_CALLS.inc()
        return turn

    def _use_local_share(self, error: BaseException) -> None:
        if not self._on_local_share:
            logger.warning(
                "Redis unreachable: pacing Stripe calls at this process's local share",
                extra={"error": str(error), "localSharePerS": round(self._local_rate_per_s, 2)},
            )
            # Turns already given out by Redis still run: local ones come after them, at a
            # random phase so that processes falling back together do not call together.
            phase_s = random.uniform(0, 1 / self._local_rate_per_s)
            self._local.not_before(max(self._shared_horizon, time.monotonic()) + phase_s)
        self._on_local_share = True
        LOCAL_SHARE.set(1)
        self._local_until = time.monotonic() + LOCAL_SHARE_FOR_S

    def _back_to_redis(self) -> None:
        self._on_local_share = False
        LOCAL_SHARE.set(0)
        logger.info("Redis reachable again: Stripe calls share the budget in Redis again")
