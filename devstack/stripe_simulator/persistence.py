"""The simulator's state on disk, so that a restart of the local stack keeps its sessions (a
pending ride's link still opens) and its idempotency keys (a redelivered ride event still gets
the same session).

Charges, refunds and disputes are kept too (format 2; a format 1 file has none). The state is
written as one JSON file, atomically (a temporary file renamed over it), within a
second of a change and once more at shutdown; a kill -9 loses at most that last second.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from .idempotency import SavedResponse
from .state import Delivery, EventRecord, JSONObject, SessionRecord, SimulatorState

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2 added charges, refunds and disputes
_READABLE_VERSIONS = (1, 2)
KEPT_EVENTS = 1_000  # the newest; older ones only matter to /_sim/events
SAVE_EVERY_S = 1.0


def snapshot(state: SimulatorState) -> JSONObject:
    return {
        "version": FORMAT_VERSION,
        "sessions": [
            {"obj": s.obj, "paymentIntentMetadata": s.payment_intent_metadata}
            for s in state.sessions.values()
        ],
        "paymentIntents": list(state.payment_intents.values()),
        "charges": list(state.charges.values()),
        "refunds": list(state.refunds.values()),
        "disputes": list(state.disputes.values()),
        "events": [
            {"event": r.event, "sessionId": r.session_id, "delivery": r.delivery.to_json()}
            for r in state.events[-KEPT_EVENTS:]
        ],
        "idempotency": [
            {
                "key": key,
                "fingerprint": saved.fingerprint,
                "status": saved.status,
                "body": saved.body.decode(),
                "requestId": saved.request_id,
                "savedAt": saved.saved_at,
            }
            for key, saved in state.idempotency.saved()
        ],
    }


def restore(state: SimulatorState, document: dict[str, Any]) -> None:
    if document.get("version") not in _READABLE_VERSIONS:
        raise ValueError(f"unknown state format {document.get('version')!r}")
    for item in document["sessions"]:
        session = SessionRecord(item["obj"], item["paymentIntentMetadata"])
        state.sessions[session.id] = session
    for intent in document["paymentIntents"]:
        state.payment_intents[intent["id"]] = intent
    kept = {"charges": state.charges, "refunds": state.refunds, "disputes": state.disputes}
    for kind, objects in kept.items():
        objects.update((obj["id"], obj) for obj in document.get(kind, []))
    for item in document["events"]:
        delivery = Delivery(item["delivery"]["status"], item["delivery"]["attempts"])
        if delivery.status == "pending":  # its delivery died with the previous process
            delivery.status = "canceled"
        state.events.append(EventRecord(item["event"], item["sessionId"], delivery))
    for item in document["idempotency"]:
        saved = SavedResponse(
            item["fingerprint"],
            item["status"],
            item["body"].encode(),
            item["requestId"],
            item["savedAt"],
        )
        state.idempotency.save_response(item["key"], saved)


def load(state: SimulatorState, path: Path) -> None:
    """Fill `state` from `path` when it exists; a file that cannot be read is set aside."""
    if not path.exists():
        return
    try:
        restore(state, json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        aside = path.with_suffix(".unreadable")
        path.replace(aside)
        log.warning("could not read %s (%s); moved it to %s and started empty", path, error, aside)
        return
    log.info("restored %d sessions from %s", len(state.sessions), path)


class StateFile:
    """Writes the state to `path` whenever it changed since the last write."""

    def __init__(self, state: SimulatorState, path: Path) -> None:
        self._state = state
        self._path = path
        self._written = ""

    def save(self) -> None:
        text = json.dumps(snapshot(self._state))
        if text == self._written:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self._path)
        self._written = text

    async def keep_saved(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            try:
                self.save()
            except OSError as error:
                log.warning("could not save the state to %s: %s", self._path, error)
