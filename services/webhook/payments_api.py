"""The payments API, served on the internal port only: what the cluster's other services ask
about a ride's payment. The record carries live checkout links, so it never faces the internet.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from shared.store import PaymentStore, public_view

PAYMENTS_PATH = "/payment-service/payments/{rideId}"


def payments_api_routes(store: Callable[[], PaymentStore]) -> list[web.RouteDef]:
    """`store` gives the running service's store (it exists once the service has started)."""

    async def get_payment(request: web.Request) -> web.Response:
        ride_id = request.match_info["rideId"]
        document = await store().find_document(ride_id)
        if document is None:
            return web.json_response({"error": f"no payment for ride {ride_id}"}, status=404)
        return web.json_response(public_view(document))

    return [web.get(PAYMENTS_PATH, get_payment)]
