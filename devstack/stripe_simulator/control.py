"""The JSON test-control API under /_sim/ (the simulator's own, not Stripe's)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from .checkout import Action, ActionRefusedError
from .errors import StripeApiError, json_response
from .rate_limits import RateLimiter, RateLimitSettings
from .simulator import SIMULATOR
from .state import Faults, WebhookSettings


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/health", health)
    app.router.add_get("/_sim/sessions", list_sessions)
    app.router.add_post("/_sim/sessions/{id}/{action}", act_on_session)
    app.router.add_get("/_sim/events", list_events)
    app.router.add_get("/_sim/faults", show_faults)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/config", show_config)
    app.router.add_post("/_sim/config", set_config)
    app.router.add_get("/_sim/rate_limits", show_rate_limits)
    app.router.add_post("/_sim/rate_limits", set_rate_limits)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/refunds", list_refunds)
    app.router.add_post("/_sim/refunds/settings", set_refund_settings)
    app.router.add_post("/_sim/refunds/{id}/{outcome}", settle_refund)
    app.router.add_get("/_sim/disputes", list_disputes)
    app.router.add_post("/_sim/disputes", open_dispute)
    app.router.add_post("/_sim/disputes/{id}/evidence", submit_evidence)
    app.router.add_post("/_sim/disputes/{id}/close", close_dispute)


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def list_sessions(request: web.Request) -> web.Response:
    sessions = [s.obj for s in request.app[SIMULATOR].state.sessions.values()]
    return json_response({"object": "list", "data": sessions, "count": len(sessions)})


async def act_on_session(request: web.Request) -> web.Response:
    """Body `{"deliver": false}` changes state without sending webhooks (lost webhooks)."""
    body = await _json_body(request)
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        return _error(400, f"action must be one of {', '.join(Action)}")
    deliver = body.get("deliver", True)
    if not isinstance(deliver, bool):
        return _error(400, "deliver must be a boolean")
    simulator = request.app[SIMULATOR]
    try:
        session, events = simulator.perform(request.match_info["id"], action, deliver=deliver)
    except StripeApiError as exc:
        return exc.response()
    except ActionRefusedError as exc:
        return _error(409, str(exc), code=exc.code)
    return json_response({"session": session.obj, "events": events})


async def list_events(request: web.Request) -> web.Response:
    """Every event generated, oldest first, each with its `delivery` record.

    Filters: `?type=checkout.session.completed`, `?session=cs_test_...`.
    """
    records = request.app[SIMULATOR].state.events
    if "type" in request.query:
        records = [r for r in records if r.event["type"] == request.query["type"]]
    if "session" in request.query:
        records = [r for r in records if r.session_id == request.query["session"]]
    return json_response({"data": [r.to_json() for r in records], "count": len(records)})


async def show_faults(request: web.Request) -> web.Response:
    return json_response(request.app[SIMULATOR].state.faults.to_json())


async def set_faults(request: web.Request) -> web.Response:
    """`{"status": 4xx|5xx, "count": N, "should_retry": bool?}`, `{"latency_ms": N}` and/or
    `{"slow_rides": {"<rideId>": N}}` (N milliseconds more for that ride's calls; 0 removes it).

    429 and 5xx are Stripe's transient answers; another 4xx is a permanent refusal.
    """
    body = await _json_body(request)
    state = request.app[SIMULATOR].state
    faults = dataclasses.replace(state.faults)
    if "status" in body:
        status, count = body["status"], body.get("count", 1)
        if not isinstance(status, int) or not 400 <= status <= 599:
            return _error(400, "status must be a 4xx or 5xx code")
        if not isinstance(count, int) or count < 0:
            return _error(400, "count must be a non-negative integer")
        faults.status, faults.remaining = status, count
        faults.should_retry = body.get("should_retry")
    if "latency_ms" in body:
        latency = body["latency_ms"]
        if not isinstance(latency, int) or latency < 0:
            return _error(400, "latency_ms must be a non-negative integer")
        faults.latency_ms = latency
    if "slow_rides" in body:
        slow = body["slow_rides"]
        if not isinstance(slow, dict) or not all(
            isinstance(ms, int) and ms >= 0 for ms in slow.values()
        ):
            return _error(400, "slow_rides must map ride ids to non-negative integers")
        faults.slow_rides = {
            ride: ms for ride, ms in {**faults.slow_rides, **slow}.items() if ms > 0
        }
    state.faults = faults
    return json_response(faults.to_json())


async def clear_faults(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR].state
    state.faults = Faults()
    return json_response(state.faults.to_json())


async def show_config(request: web.Request) -> web.Response:
    return json_response(request.app[SIMULATOR].state.webhook.to_json())


async def set_config(request: web.Request) -> web.Response:
    """`{"webhook_url": "http://..." or null, "webhook_secret": "whsec_...[,whsec_...]"}`."""
    body = await _json_body(request)
    state = request.app[SIMULATOR].state
    url = body.get("webhook_url", state.webhook.url)
    secret = body.get("webhook_secret", ",".join(state.webhook.secrets))
    if not (url is None or isinstance(url, str)) or not isinstance(secret, str):
        return _error(400, "webhook_url must be a string or null, webhook_secret a string")
    state.webhook = WebhookSettings.parse(url, secret)
    return json_response(state.webhook.to_json())


async def show_rate_limits(request: web.Request) -> web.Response:
    """The limits, and what they let through and refused since they were set."""
    return json_response(request.app[SIMULATOR].state.rate_limiter.to_json())


async def set_rate_limits(request: web.Request) -> web.Response:
    """`{"global_per_s": N or null, "endpoint_per_s": N or null, "burst_s": S}`; the counts
    start again from zero."""
    body = await _json_body(request)
    state = request.app[SIMULATOR].state
    current = state.rate_limiter.settings
    try:
        settings = RateLimitSettings(
            global_per_s=_rate(body.get("global_per_s", current.global_per_s)),
            endpoint_per_s=_rate(body.get("endpoint_per_s", current.endpoint_per_s)),
            burst_s=float(body.get("burst_s", current.burst_s)),
        )
    except (TypeError, ValueError) as exc:
        return _error(400, f"invalid rate limits: {exc}")
    state.rate_limiter = RateLimiter(settings)
    return json_response(state.rate_limiter.to_json())


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a rate is a number of requests per second, or null")
    return float(value)


async def list_refunds(request: web.Request) -> web.Response:
    """Every refund, oldest first; `?payment_intent=pi_...` filters."""
    refunds = list(request.app[SIMULATOR].state.refunds.values())
    if "payment_intent" in request.query:
        refunds = [r for r in refunds if r["payment_intent"] == request.query["payment_intent"]]
    return json_response({"object": "list", "data": refunds, "count": len(refunds)})


async def set_refund_settings(request: web.Request) -> web.Response:
    """`{"settle_after_ms": N or null, "fail_next": N}`: 0 (the default) answers a card refund
    `succeeded` at once, as Stripe does; N > 0 makes new refunds `pending` for N ms; null leaves
    them pending until /_sim/refunds/{id}/succeed|fail. `fail_next` makes the next N refunds
    fail (one that succeeded at once fails right after). /_sim/refunds/{id}/fail also fails a
    succeeded refund."""
    body = await _json_body(request)
    settings = request.app[SIMULATOR].state.refund_settings
    delay = body.get("settle_after_ms", settings.settle_after_ms)
    fail_next = body.get("fail_next", settings.fail_next)
    if not (delay is None or (isinstance(delay, int) and delay >= 0)):
        return _error(400, "settle_after_ms must be a non-negative integer or null")
    if not isinstance(fail_next, int) or fail_next < 0:
        return _error(400, "fail_next must be a non-negative integer")
    settings.settle_after_ms, settings.fail_next = delay, fail_next
    return json_response(settings.to_json())


async def settle_refund(request: web.Request) -> web.Response:
    outcome = request.match_info["outcome"]
    if outcome not in ("succeed", "fail"):
        return _error(400, "outcome must be succeed or fail")
    simulator = request.app[SIMULATOR]
    try:
        events = simulator.settle_refund(request.match_info["id"], succeed=outcome == "succeed")
    except StripeApiError as exc:
        return exc.response()
    return json_response({"refund": simulator.refund(request.match_info["id"]), "events": events})


async def list_disputes(request: web.Request) -> web.Response:
    """Every dispute, oldest first; `?payment_intent=pi_...` filters."""
    disputes = list(request.app[SIMULATOR].state.disputes.values())
    if "payment_intent" in request.query:
        disputes = [d for d in disputes if d["payment_intent"] == request.query["payment_intent"]]
    return json_response({"object": "list", "data": disputes, "count": len(disputes)})


async def open_dispute(request: web.Request) -> web.Response:
    """`{"session": "cs_test_...", "inquiry": false}`: the paid session's charge is disputed, by
    a chargeback (`needs_response`) or, with `"inquiry": true`, an inquiry
    (`warning_needs_response`)."""
    body = await _json_body(request)
    session_id, inquiry = body.get("session"), body.get("inquiry", False)
    if not isinstance(session_id, str):
        return _error(400, "session must be a Checkout Session id")
    if not isinstance(inquiry, bool):
        return _error(400, "inquiry must be a boolean")
    try:
        dispute, events = request.app[SIMULATOR].open_dispute(session_id, inquiry=inquiry)
    except StripeApiError as exc:
        return exc.response()
    return json_response({"dispute": dispute, "events": events})


async def submit_evidence(request: web.Request) -> web.Response:
    """The merchant submits evidence: `under_review` (`warning_under_review` for an inquiry)."""
    simulator = request.app[SIMULATOR]
    try:
        events = simulator.submit_evidence(request.match_info["id"])
    except StripeApiError as exc:
        return exc.response()
    return json_response({"dispute": simulator.dispute(request.match_info["id"]), "events": events})


async def close_dispute(request: web.Request) -> web.Response:
    """`{"outcome": "won" | "lost"}` for a chargeback, `{"outcome": "warning_closed"}` for an
    inquiry."""
    outcome = (await _json_body(request)).get("outcome")
    simulator = request.app[SIMULATOR]
    try:
        events = simulator.close_dispute(request.match_info["id"], str(outcome))
    except StripeApiError as exc:
        return exc.response()
    return json_response({"dispute": simulator.dispute(request.match_info["id"]), "events": events})


async def reset(request: web.Request) -> web.Response:
    """Drop all objects, events, keys and faults; cancel deliveries; restore startup config."""
    await request.app[SIMULATOR].reset()
    return json_response({"status": "reset"})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad_request(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise _bad_request("the JSON body must be an object")
    return body


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    return StripeApiError(status, message, code=code).response()


def _bad_request(message: str) -> web.HTTPException:
    error = StripeApiError(400, message).body()
    return web.HTTPBadRequest(text=json.dumps(error), content_type="application/json")
