"""The simulator's one entry point for changes: state, events and their delivery together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from . import refunds
from .checkout import Action, Change, apply_action, create_session
from .config import SimulatorConfig
from .errors import no_such
from .events import RequestInfo, build_event
from .state import Delivery, EventRecord, JSONObject, SessionRecord, SimulatorState
from .webhooks import WebhookDeliverer

log = logging.getLogger(__name__)


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

    def create_refund(self, params: JSONObject, request: RequestInfo) -> JSONObject:
        """A pending refund, settled later: after the configured delay, or when told."""
        refund, changes = refunds.create_refund(self.state, params)
        self._emit_for_intent(refund, changes, request=request)
        settings = self.state.refund_settings
        succeed = settings.fail_next <= 0
        settings.fail_next = max(0, settings.fail_next - 1)
        delay_ms = settings.settle_after_ms
        if delay_ms is not None:
            task = asyncio.create_task(self._settle_later(refund, succeed, delay_ms))
            self._settlements.add(task)
            task.add_done_callback(self._settlements.discard)
        return refund

    def refund(self, refund_id: str) -> JSONObject:
        refund = self.state.refunds.get(refund_id)
        if refund is None:
            raise no_such("refund", refund_id, "refund")
        return refund

    def settle_refund(self, refund_id: str, *, succeed: bool) -> list[JSONObject]:
        refund = self.refund(refund_id)
        return self._emit_for_intent(refund, refunds.settle_refund(self.state, refund, succeed))

    def open_dispute(self, session_id: str) -> tuple[JSONObject, list[JSONObject]]:
        dispute, changes = refunds.open_dispute(self.state, self.session(session_id))
        return dispute, self._emit_for_intent(dispute, changes)

    def close_dispute(self, dispute_id: str, outcome: str) -> list[JSONObject]:
        dispute = self.state.disputes.get(dispute_id)
        if dispute is None:
            raise no_such("dispute", dispute_id, "dispute")
        return self._emit_for_intent(dispute, refunds.close_dispute(dispute, outcome))

    async def _settle_later(self, refund: JSONObject, succeed: bool, after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        if refund["status"] == "pending":  # not settled through the control API meanwhile
            self.settle_refund(refund["id"], succeed=succeed)

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
        for type_, obj in changes:
            event = build_event(
                type_,
                obj,
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
