"""Bearer tokens for the payments API (INTERNAL_API_TOKENS): a small middleware.

Several tokens are accepted at once so they can be rotated without downtime. Health, readiness
and metrics stay open: probes and Prometheus carry no token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

REFUSED = Counter(
    "payments_webhook_api_unauthorized_total", "Payments API calls refused for want of a token"
)


def bearer_token_auth(tokens: Sequence[str]) -> Middleware:
    """401 for any call outside OPEN_PATHS without `Authorization: Bearer <one of tokens>`;
    no tokens means no auth (dev only, said once at start)."""
    accepted = [token.encode("utf-8", "surrogateescape") for token in tokens]
    if not accepted:
        logger.warning("INTERNAL_API_TOKENS is not set: the payments API asks no token (dev only)")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if accepted and request.path not in OPEN_PATHS and not _bears_one_of(request, accepted):
            REFUSED.inc()
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return authenticate


def _bears_one_of(request: web.Request, accepted: list[bytes]) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    presented = credentials.strip().encode("utf-8", "surrogateescape")
    # Every token is compared, in constant time: the answer's timing tells nothing.
    matches = [hmac.compare_digest(presented, token) for token in accepted]
    return any(matches)
