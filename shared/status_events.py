"""`payment-status-events`: every status change, told to the rest of the platform.

Key: the rideId. Value: JSON with the fields below. Delivery is at least once, in any order:
`eventId` stays the same however often one change is re-sent, and `version` is the record's
version after the change, so a consumer that keeps the event with the highest `version` per
ride never regresses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

STATUS_EVENTS_TOPIC = "payment-status-events"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    rideId: str
    userId: str
    status: str
    amount: int
    currency: str
    stripeSessionId: str | None
    attempt: int
    version: int
    amountRefunded: int
    occurredAt: str
    eventId: str

    @property
    def key(self) -> bytes:
        return self.rideId.encode()

    def value(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def status_events_of(payment: dict[str, Any]) -> list[StatusEvent]:
    """The status events waiting in a payment document's outbox, oldest first."""
    return [
        StatusEvent(
            rideId=payment["rideId"],
            userId=payment["userId"],
            status=entry["status"],
            amount=payment["amount"],
            currency=payment["currency"],
            # A success on an earlier attempt names that attempt's session, not the current one.
            stripeSessionId=entry.get("stripeSessionId", payment.get("stripeSessionId")),
            attempt=entry.get("attempt", payment.get("attempt") or 1),
            # Entries written before versions were recorded take the record's own.
            version=entry.get("version", payment["version"]),
            amountRefunded=entry.get("amountRefunded", payment.get("amountRefunded", 0)),
            occurredAt=_iso(entry["at"]),
            eventId=entry["eventId"],
        )
        for entry in payment.get("outbox", [])
    ]


def _iso(moment: datetime) -> str:
    return moment.isoformat()
