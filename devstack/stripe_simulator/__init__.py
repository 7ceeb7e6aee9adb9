"""A Stripe simulator for tests and the local stack.

It speaks enough of Stripe's /v1 API (Checkout Sessions, PaymentIntents, charges, refunds,
disputes, idempotency keys, Stripe-shaped errors) for the real `stripe` SDK, in the API version
the SDK pins and with every field Stripe returns (resources.py), serves a hosted Checkout page
(card or bank debit), and signs and delivers webhooks the way Stripe does. `/_sim/` is a JSON
API to drive it from tests: customer actions, a bank debit's outcome, refunds' settlement,
disputes (chargebacks and inquiries), faults and rate limits.
"""

from .app import create_app
from .config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app"]
