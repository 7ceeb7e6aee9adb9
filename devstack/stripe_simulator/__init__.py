"""A Stripe simulator for tests and the local stack.

It speaks enough of Stripe's /v1 API (Checkout Sessions, PaymentIntents, idempotency keys,
Stripe-shaped errors) for the real `stripe` SDK, serves a hosted Checkout page, and signs and
delivers webhooks the way Stripe does. `/_sim/` is a JSON API to drive it from tests.
"""

from .app import create_app
from .config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app"]
