"""The payments API, served on the internal port only: what the cluster's other services ask
about a ride's payment. The record carries live checkout links, so it never faces the internet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from services.webhook.checkout_links import (
    CheckoutLinks,
    LinkNotReady,
    RideNotFound,
    RideNotPayable,
)
from services.webhook.outstanding import outstanding
from shared.retry import is_transient
from shared.store import PaymentStore, public_view

logger = logging.getLogger(__name__)

PAYMENTS_PATH = "/payment-service/payments/{rideId}"
CHECKOUT_PATH = "/payment-service/payments/{rideId}/checkout"
OUTSTANDING_PATH = "/payment-service/users/{userId}/outstanding"


def payments_api_routes(
    store: Callable[[], PaymentStore],
    links: Callable[[], CheckoutLinks | None] = lambda: None,
) -> list[web.RouteDef]:
    """`store` and `links` give the running service's adapters (they exist once the service
    has started; `links` is None without a Stripe key)."""

    async def get_payment(request: web.Request) -> web.Response:
        ride_id = request.match_info["rideId"]
        document = await store().find_document(ride_id)
        if document is None:
            return _error(404, f"no payment for ride {ride_id}")
        return web.json_response(public_view(document))

    async def checkout_link(request: web.Request) -> web.Response:
        ride_id = request.match_info["rideId"]
        use_case = links()
        if use_case is None:
            return _error(503, "Stripe is not configured (STRIPE_SECRET_KEY)")
        try:
            payment = await use_case.link_for(ride_id)
        except RideNotFound:
            return _error(404, f"no payment for ride {ride_id}")
        except RideNotPayable as refusal:
            return _error(409, str(refusal))
        except LinkNotReady as error:
            return _error(503, str(error))
        except Exception as error:
            if not is_transient(error):
                raise
            logger.warning(
                "no checkout link: a dependency is unavailable",
                extra={"rideId": ride_id, "error": str(error)},
            )
            return _error(503, "Stripe or the payment store is unavailable, retry later")
        expires_at = payment.expires_at
        return web.json_response(
            {
                "rideId": payment.ride_id,
                "attempt": payment.attempt,
                "stripeSessionId": payment.stripe_session_id,
                "paymentUrl": payment.payment_url,
                "expiresAt": expires_at.isoformat() if expires_at else None,
                "status": "pending",
            }
        )

    async def user_outstanding(request: web.Request) -> web.Response:
        payments = store()
        try:
            owed = await outstanding(payments, request.match_info["userId"], await payments.clock())
        except Exception as error:
            if not is_transient(error):
                raise
            return _error(503, "the payment store is unavailable, retry later")
        return web.json_response(owed)

    return [
        web.get(PAYMENTS_PATH, get_payment),
        web.post(CHECKOUT_PATH, checkout_link),
        web.get(OUTSTANDING_PATH, user_outstanding),
    ]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
