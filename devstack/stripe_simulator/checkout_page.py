"""The hosted Checkout page: plain HTML, one form per customer action."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from aiohttp import web

from .checkout import Action, SessionNotOpenError
from .errors import StripeApiError
from .simulator import SIMULATOR
from .state import SessionRecord

_ZERO_DECIMAL = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

_BUTTONS = (
    (Action.PAY, "Pay"),
    (Action.DECLINE, "Card declined"),
    (Action.CANCEL, "Cancel"),
    (Action.EXPIRE, "Let it expire"),
    (Action.ABANDON, "Abandon after a try (canceled)"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 28rem; margin: 3rem auto; color: #222; }
.amount { font-size: 2rem; font-weight: 600; margin: 1rem 0; }
form { display: inline-block; margin: 0 .5rem .5rem 0; }
button { font-size: 1rem; padding: .5rem 1rem; cursor: pointer; }
.muted { color: #666; font-size: .9rem; }
"""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/checkout/{id}", show_checkout)
    app.router.add_post("/checkout/{id}/{action}", act_on_checkout)


def format_amount(amount: int, currency: str) -> str:
    """`2550, "usd"` -> `25.50 USD`, minding currencies with 0 or 3 minor digits."""
    code = currency.lower()
    digits = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    return f"{Decimal(amount).scaleb(-digits):,.{digits}f} {code.upper()}"


async def show_checkout(request: web.Request) -> web.Response:
    session = _find(request)
    if session is None:
        return _page("Not found", "<p>No such Checkout Session.</p>", status=404)
    if not session.is_open:
        return _page("Checkout", _summary(session) + _closed_note(session))
    forms = "".join(
        f'<form method="post" action="/checkout/{escape(session.id)}/{action}">'
        f'<button type="submit" id="{action}">{label}</button></form>'
        for action, label in _BUTTONS
    )
    return _page("Checkout", _summary(session) + f"<div>{forms}</div>")


async def act_on_checkout(request: web.Request) -> web.Response:
    session = _find(request)
    if session is None:
        return _page("Not found", "<p>No such Checkout Session.</p>", status=404)
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        return _page("Not found", "<p>Unknown action.</p>", status=404)
    simulator = request.config_dict[SIMULATOR]
    try:
        session, _ = simulator.perform(session.id, action)
    except SessionNotOpenError:
        return _page("Checkout closed", _summary(session) + _closed_note(session), status=409)
    return _page("Checkout", _summary(session) + _outcome(session, action))


def _find(request: web.Request) -> SessionRecord | None:
    try:
        return request.config_dict[SIMULATOR].session(request.match_info["id"])
    except StripeApiError:
        return None


def _summary(session: SessionRecord) -> str:
    obj = session.obj
    ride = obj["metadata"].get("rideId") or obj["client_reference_id"] or "-"
    return (
        f'<h1>Ride <span id="ride">{escape(ride)}</span></h1>'
        f'<div class="amount" id="amount">'
        f"{escape(format_amount(obj['amount_total'], obj['currency']))}</div>"
        f'<p class="muted">Session {escape(session.id)}: '
        f'<span id="status">{escape(obj["status"])}</span></p>'
    )


def _closed_note(session: SessionRecord) -> str:
    return f'<p id="result">This Checkout Session is {escape(session.obj["status"])}.</p>'


def _outcome(session: SessionRecord, action: Action) -> str:
    obj = session.obj
    if action is Action.PAY:
        text, href, link = "Payment succeeded.", _success_url(session), "Continue"
    elif action is Action.DECLINE:
        text, href, link = "Your card was declined.", f"/checkout/{session.id}", "Try again"
    elif action is Action.CANCEL:
        text = "You left Checkout. No payment was made and Stripe sends no event for this."
        href, link = obj["cancel_url"], "Back to the merchant"
    elif action is Action.ABANDON:
        text = "The payment was abandoned: its PaymentIntent is canceled, the session expired."
        href, link = obj["cancel_url"], "Back to the merchant"
    else:
        text, href, link = "This Checkout Session has expired.", obj["cancel_url"], "Back"
    return (
        f'<p id="result">{escape(text)}</p>'
        f'<p><a id="next" href="{escape(href, quote=True)}">{escape(link)}</a></p>'
    )


def _success_url(session: SessionRecord) -> str:
    # Stripe fills in this template variable when it redirects.
    return str(session.obj["success_url"]).replace("{CHECKOUT_SESSION_ID}", session.id)


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - Stripe simulator</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(text=html, status=status, content_type="text/html")
