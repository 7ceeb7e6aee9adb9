"""What a rider still owes: every ride not paid yet, oldest first, with a total per currency.
A ride `processing` (a bank debit on its way) is listed and counted: it is not paid until Stripe
says so, and it may still fail; it has no link to pay.

Read through the userId+status+createdAt index, so a user with thousands of rides costs an
index range, not a collection scan.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from shared.model import PaymentStatus
from shared.store import Document, PaymentStore


async def outstanding(store: PaymentStore, user_id: str, now: datetime) -> dict[str, Any]:
    rides = [_ride(document, now) async for document in store.outstanding(user_id)]
    total: dict[str, int] = defaultdict(int)
    for ride in rides:
        total[ride["currency"]] += ride["amount"]
    return {"userId": user_id, "rides": rides, "total": dict(total)}


def _ride(document: Document, now: datetime) -> dict[str, Any]:
    current: Document = next(
        (a for a in document.get("attempts", []) if a["attempt"] == document.get("attempt", 1)),
        {},
    )
    expires_at: datetime | None = current.get("expiresAt")
    payable = (
        document["status"] in (PaymentStatus.PENDING, PaymentStatus.FAILED)
        and (expires_at is None or expires_at > now)
        and current.get("asyncPayment") is None  # a session completed unpaid is paid no more
    )
    return {
        "rideId": document["rideId"],
        "amount": document["amount"],
        "currency": document["currency"],
        "status": document["status"],
        "attempt": document.get("attempt") or 1,
        "paymentUrl": document.get("paymentUrl") if payable else None,
        "expiresAt": expires_at.isoformat() if expires_at else None,
        "createdAt": document["createdAt"].isoformat(),
    }
