"""The API version Stripe renders each event in, held against the one the SDK pins.

Stripe sends events in the webhook endpoint's API version (set when the endpoint is created),
else in the account's default. The endpoint is created with the SDK's `stripe.api_version`, so
an event in another version means the endpoint (or the account) is not what the code expects:
its fields may be named or shaped otherwise. Such an event is still applied as far as its fields
are understood (each is checked as it is read, fields.py); it is counted by version for an
alert, and logged as a warning, once per version per LOG_EVERY_S so that a misconfigured
endpoint does not flood the log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import stripe
from prometheus_client import Counter

logger = logging.getLogger(__name__)

EXPECTED = stripe.api_version
# Few versions are ever seen; any beyond these (or not shaped like one) count as OTHER.
MOST_VERSIONS = 8
OTHER = "other"
LOG_EVERY_S = 600.0
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]{1,20})?")

OTHER_VERSIONS = Counter(
    "payments_webhook_event_api_version_total",
    "Stripe events in an API version other than the one the SDK pins, by that version",
    ["version"],
)


class ApiVersions:
    """What this process has seen of other versions: their labels, and when each was logged."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._labels: set[str] = set()
        self._logged: dict[str, float] = {}

    def note(self, version: str | None, event_id: str, event_type: str) -> None:
        """Count and log an event rendered in another version than EXPECTED (one that says
        none, from before Stripe versioned events, is left alone)."""
        if version is None or version == EXPECTED:
            return
        label = self._label(version)
        OTHER_VERSIONS.labels(label).inc()
        if self._due(label):
            logger.warning(
                "webhook event in another API version than the SDK's; applied as far as its "
                "fields are understood: check the endpoint's API version",
                extra={
                    "eventId": event_id,
                    "eventType": event_type,
                    "apiVersion": version[:40],
                    "expected": EXPECTED,
                },
            )

    def _label(self, version: str) -> str:
        if version in self._labels:
            return version
        if _VERSION.fullmatch(version) and len(self._labels) < MOST_VERSIONS:
            self._labels.add(version)
            return version
        return OTHER

    def _due(self, label: str) -> bool:
        now = self._clock()
        last = self._logged.get(label)
        if last is not None and now - last < LOG_EVERY_S:
            return False
        self._logged[label] = now
        return True


API_VERSIONS = ApiVersions()
