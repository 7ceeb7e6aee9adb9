"""The simulator's one entry point for changes: state, events and their delivery together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine

from aiohttp import web

from . import disputes, payment_intents, refunds
from .checkout import Action, apply_action, create_session
from .config import SimulatorConfig
from .errors import StripeApiError, no_such
from .events import Change, RequestInfo, build_event
from .state import Delivery, EventRecord, JSONObject, SessionRecord, SimulatorState
from .webhooks import WebhookDeliverer

log = logging.getLogger(__name__)

# A bank debit's refund is not instant even when card refunds are.
BANK_REFUND_SETTLE_MS = 200


class Simulator:
    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = SimulatorState(config, clock)
        self.deliverer: WebhookDeliverer | None = None  # set while the app runs
        self._settlements: set[asyncio.Task[None]] = set()

    def create_session(self, params: JSONObject, public_base_url: str) -> SessionRecord:
        session = create_session(params, public_base_url=public_base_url, now=self.state.now())
        self.state.sessions[session.id] = session
        return session

    def session(self, session_id: str) -> SessionRecord:
        session = self.state.sessions.get(session_id)
        if session is None:
            raise no_such("checkout.session", session_id, "session")
        return session

    def perform(
        self,
        session_id: str,
        action: Action,
        *,
        deliver: bool = True,
        request: RequestInfo | None = None,
    ) -> tuple[SessionRecord, list[JSONObject]]:
        """Apply a customer action; return the session and the events it generated."""
        session = self.session(session_id)
        changes = apply_action(self.state, session, action)
        return session, self._emit(session.id, changes, deliver=deliver, request=request)

    def expire_due(self) -> int:
        """Expire open sessions whose `expires_at` has passed, as Stripe does on its own."""
        now = self.state.now()
        due = [s for s in self.state.sessions.values() if s.is_open and s.obj["expires_at"] <= now]
        for session in due:
            self.perform(session.id, Action.EXPIRE)
        return len(due)

    def create_payment_intent(self, params: JSONObject, request: RequestInfo) -> JSONObject:
        intent, changes = payment_intents.create(self.state, params)
        self._emit(intent["id"], changes, deliver=True, request=request)
        return intent

    def create_refund(self, params: JSONObject, request: RequestInfo) -> JSONObject:
        """A refund, settled as RefundSettings say: at once, later, or when told."""
        settings = self.state.refund_settings
        at_once = settings.settle_after_ms == 0
        refund, changes = refunds.create_refund(self.state, params, at_once=at_once)
        self._emit_for_intent(refund, changes, request=request)
        succeed = settings.fail_next <= 0
        settings.fail_next = max(0, settings.fail_next - 1)
        if refund["status"] == "succeeded" and succeed:
            return refund
        delay_ms = settings.settle_after_ms
        if delay_ms == 0 and refund["status"] == "pending":
            delay_ms = BANK_REFUND_SETTLE_MS
        if delay_ms is not None:
            self._later(self._settle_later(refund["id"], succeed, delay_ms))
        return refund

    def refund(self, refund_id: str) -> JSONObject:
        refund = self.state.refunds.get(refund_id)
        if refund is None:
            raise no_such("refund", refund_id, "refund")
        return refund

    def charge(self, charge_id: str) -> JSONObject:
        charged = self.state.charges.get(charge_id)
        if charged is None:
            raise no_such("charge", charge_id, "charge")
        return charged

    def settle_refund(self, refund_id: str, *, succeed: bool) -> list[JSONObject]:
        refund = self.refund(refund_id)
        return self._emit_for_intent(refund, refunds.settle_refund(self.state, refund, succeed))

    def open_dispute(
        self, session_id: str, *, inquiry: bool
    ) -> tuple[JSONObject, list[JSONObject]]:
        session = self.session(session_id)
        dispute, changes = disputes.open_dispute(self.state, session, inquiry=inquiry)
        return dispute, self._emit_for_intent(dispute, changes)

    def dispute(self, dispute_id: str) -> JSONObject:
        dispute = self.state.disputes.get(dispute_id)
        if dispute is None:
            raise no_such("dispute", dispute_id, "dispute")
        return dispute

    def submit_evidence(self, dispute_id: str) -> list[JSONObject]:
        dispute = self.dispute(dispute_id)
        return self._emit_for_intent(dispute, disputes.submit_evidence(dispute))

    def close_dispute(self, dispute_id: str, outcome: str) -> list[JSONObject]:
        dispute = self.dispute(dispute_id)
        return self._emit_for_intent(dispute, disputes.close_dispute(self.state, dispute, outcome))

    def _later(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._settlements.add(task)
        task.add_done_callback(self._settlements.discard)

    async def _settle_later(self, refund_id: str, succeed: bool, after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        try:
            self.settle_refund(refund_id, succeed=succeed)
        except StripeApiError:  # settled through the control API meanwhile
            log.info("refund %s was settled before its time", refund_id)

    def _emit_for_intent(
        self, obj: JSONObject, changes: list[Change], request: RequestInfo | None = None
    ) -> list[JSONObject]:
        session_id = refunds.session_of_intent(self.state, obj["payment_intent"])
        return self._emit(session_id, changes, deliver=True, request=request)

    async def reset(self) -> None:
        for task in list(self._settlements):
            task.cancel()
        if self.deliverer is not None:
            await self.deliverer.cancel_all()
        self.state.reset()

    def _emit(
        self, session_id: str, changes: list[Change], *, deliver: bool, request: RequestInfo | None
    ) -> list[JSONObject]:
        endpoint = deliver and self.state.webhook.url is not None
        events = []
        for change in changes:
            event = build_event(
                change,
                created=self.state.now(),
                pending_webhooks=1 if endpoint else 0,
                request=request,
            )
            status = "pending" if endpoint else ("no_endpoint" if deliver else "not_sent")
            record = EventRecord(event, session_id, Delivery(status))
            self.state.events.append(record)
            if endpoint and self.deliverer is not None:
                self.deliverer.submit(record)
            events.append(event)
        return events


SIMULATOR = web.AppKey("stripe_simulator", Simulator)


async def run_expiry_sweeper(simulator: Simulator) -> None:
    while True:
        await asyncio.sleep(simulator.config.expiry_sweep_s)
        try:
            simulator.expire_due()
        except Exception:  # a bug here must not stop expiry for good
            log.exception("expiry sweep failed")
