"""The hosted Checkout page: plain HTML, one form per customer action.

Once the session is complete, the page also offers what happens later at the bank, which
Stripe's own page never shows: a bank debit arriving or failing, and a dispute of the payment
(a chargeback or an inquiry) with its evidence and outcome. Each is a button, and each sends
the webhooks Stripe would.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

from shared.currencies import format_amount

from . import charges, disputes
from .checkout import Action, ActionRefusedError, debit_in_progress
from .errors import StripeApiError
from .simulator import SIMULATOR, Simulator
from .state import JSONObject, SessionRecord

_BUTTONS = (
    (Action.PAY, "Pay"),
    (Action.DEBIT, "Pay by bank debit"),
    (Action.DECLINE, "Card declined"),
    (Action.CANCEL, "Cancel"),
    (Action.EXPIRE, "Let it expire"),
    (Action.ABANDON, "Abandon after a try (canceled)"),
)
_DEBIT_OUTCOMES = ((Action.DEBIT_SUCCEEDS, "Debit succeeds"), (Action.DEBIT_FAILS, "Debit fails"))
_DISPUTE_STEPS = {
    "evidence": "Submit evidence",
    "won": "Win the dispute",
    "lost": "Lose the dispute",
    "warning_closed": "Close the inquiry",
}

# Where Stripe sends the rider on its own after each action: back to the merchant when the
# rider paid (a bank debit too: it is on its way) or left; a declined card stays on the page,
# and an expired session shows a page.
_REDIRECTED = frozenset({Action.PAY, Action.DEBIT, Action.CANCEL, Action.ABANDON})

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 28rem; margin: 3rem auto; color: #222; }
.amount { font-size: 2rem; font-weight: 600; margin: 1rem 0; }
form { display: inline-block; margin: 0 .5rem .5rem 0; }
button { font-size: 1rem; padding: .5rem 1rem; cursor: pointer; }
.muted { color: #666; font-size: .9rem; }
.later { border-top: 1px solid #ccc; margin-top: 2rem; padding-top: 1rem; }
"""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/checkout/{id}", show_checkout)
    app.router.add_post("/checkout/{id}/{action}", act_on_checkout)
    app.router.add_post("/checkout/{id}/dispute/{kind}", open_dispute)
    app.router.add_post("/checkout/{id}/disputes/{dispute}/{step}", move_dispute)


async def show_checkout(request: web.Request) -> web.Response:
    session = _find(request)
    if session is None:
        return _not_found("No such Checkout Session.")
    simulator = request.config_dict[SIMULATOR]
    if not session.is_open:
        return _page("Checkout", _summary(session) + _closed_note(simulator, session))
    buttons = [(action, label) for action, label in _BUTTONS if _offered(session, action)]
    return _page("Checkout", _summary(session) + _forms(session, buttons))


async def act_on_checkout(request: web.Request) -> web.Response:
    session = _find(request)
    if session is None:
        return _not_found("No such Checkout Session.")
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        return _not_found("Unknown action.")
    simulator = request.config_dict[SIMULATOR]
    try:
        session, _ = simulator.perform(session.id, action)
    except ActionRefusedError:
        body = _summary(session) + _closed_note(simulator, session)
        return _page("Checkout closed", body, status=409)
    text, href, link = _outcome(session, action)
    body = _summary(session) + _result(text, href, link)
    if action in _REDIRECTED:
        # 303, as Stripe redirects after Checkout; the page is for a client that does not follow.
        return _page("Checkout", body, status=303, headers={"Location": href})
    return _page("Checkout", body + _later_controls(simulator, session))


async def open_dispute(request: web.Request) -> web.Response:
    """The bank disputes the payment: `kind` is `chargeback` or `inquiry`."""
    session = _find(request)
    kind = request.match_info["kind"]
    if session is None or kind not in disputes.OUTCOMES:
        return _not_found("No such Checkout Session or kind of dispute.")
    simulator = request.config_dict[SIMULATOR]
    try:
        simulator.open_dispute(session.id, inquiry=kind == "inquiry")
    except StripeApiError as error:
        return _refused(simulator, session, error)
    return _after_later_step(simulator, session, f"A {kind} was opened.")


async def move_dispute(request: web.Request) -> web.Response:
    """Evidence for an open dispute, or its outcome."""
    session = _find(request)
    step = request.match_info["step"]
    if session is None or step not in _DISPUTE_STEPS:
        return _not_found("No such Checkout Session or step.")
    simulator = request.config_dict[SIMULATOR]
    dispute_id = request.match_info["dispute"]
    try:
        if step == "evidence":
            simulator.submit_evidence(dispute_id)
        else:
            simulator.close_dispute(dispute_id, step)
    except StripeApiError as error:
        return _refused(simulator, session, error)
    status = simulator.dispute(dispute_id)["status"]
    return _after_later_step(simulator, session, f"The dispute is now {status}.")


def _find(request: web.Request) -> SessionRecord | None:
    try:
        return request.config_dict[SIMULATOR].session(request.match_info["id"])
    except StripeApiError:
        return None


def _offered(session: SessionRecord, action: Action) -> bool:
    return action is not Action.DEBIT or charges.bank_debit_of(session.obj) is not None


def _forms(session: SessionRecord, buttons: list[tuple[Action, str]]) -> str:
    here = f"/checkout/{session.id}"
    return _form_row([(f"{here}/{action}", str(action), label) for action, label in buttons])


def _form_row(buttons: list[tuple[str, str, str]]) -> str:
    """One form per (target, id, label), in a row."""
    forms = "".join(
        f'<form method="post" action="{escape(target, quote=True)}">'
        f'<button type="submit" id="{escape(button_id, quote=True)}">{escape(label)}</button>'
        "</form>"
        for target, button_id, label in buttons
    )
    return f"<div>{forms}</div>"


def _summary(session: SessionRecord) -> str:
    obj = session.obj
    ride = obj["metadata"].get("rideId") or obj["client_reference_id"] or "-"
    return (
        f'<h1>Ride <span id="ride">{escape(ride)}</span></h1>'
        f'<div class="amount" id="amount">'
        f"{escape(format_amount(obj['amount_total'], obj['currency']))}</div>"
        f'<p class="muted">Session {escape(session.id)}: '
        f'<span id="status">{escape(obj["status"])}</span>, '
        f'<span id="payment_status">{escape(obj["payment_status"])}</span></p>'
    )


def _closed_note(simulator: Simulator, session: SessionRecord) -> str:
    note = f'<p id="result">This Checkout Session is {escape(session.obj["status"])}.</p>'
    return note + _later_controls(simulator, session)


def _later_controls(simulator: Simulator, session: SessionRecord) -> str:
    """What the bank may do after the session completed, as buttons."""
    if debit_in_progress(simulator.state, session):
        outcomes = [(f"/checkout/{session.id}/{a}", str(a), label) for a, label in _DEBIT_OUTCOMES]
        text = "A bank debit is on its way: Stripe says how it went days later."
        return _later(text, _form_row(outcomes))
    intent = simulator.state.payment_intents.get(session.obj["payment_intent"] or "")
    if intent is None or intent["status"] != "succeeded":
        return ""
    disputed = [d for d in simulator.state.disputes.values() if d["payment_intent"] == intent["id"]]
    if not disputed:
        kinds = [("chargeback", "Open a chargeback"), ("inquiry", "Open an inquiry")]
        target = f"/checkout/{session.id}/dispute"
        forms = [(f"{target}/{kind}", f"dispute-{kind}", label) for kind, label in kinds]
        text = "The payment went through. Later, the bank may dispute it."
        return _later(text, _form_row(forms))
    return _dispute_controls(session, disputed[0])


def _dispute_controls(session: SessionRecord, dispute: JSONObject) -> str:
    status = str(dispute["status"])
    text = f'Dispute {escape(dispute["id"])}: <span id="dispute-status">{escape(status)}</span>.'
    if status in disputes.CLOSED:
        return _later(text, "")
    kind = "inquiry" if disputes.is_inquiry(dispute) else "chargeback"
    steps = [*(["evidence"] if status.endswith("needs_response") else []), *disputes.OUTCOMES[kind]]
    target = f"/checkout/{session.id}/disputes/{dispute['id']}"
    forms = [(f"{target}/{step}", f"dispute-{step}", _DISPUTE_STEPS[step]) for step in steps]
    return _later(text, _form_row(forms))


def _later(text: str, forms: str) -> str:
    return f'<div class="later"><p class="muted">Simulator: {text}</p>{forms}</div>'


def _after_later_step(simulator: Simulator, session: SessionRecord, text: str) -> web.Response:
    body = _summary(session) + f'<p id="result">{escape(text)}</p>'
    return _page("Checkout", body + _later_controls(simulator, session))


def _refused(simulator: Simulator, session: SessionRecord, error: StripeApiError) -> web.Response:
    body = _summary(session) + f'<p id="result">{escape(error.message)}</p>'
    return _page("Checkout", body + _later_controls(simulator, session), status=409)


def _outcome(session: SessionRecord, action: Action) -> tuple[str, str, str]:
    """What the rider is told, where they go next and the link's text."""
    obj = session.obj
    here = f"/checkout/{session.id}"
    if action is Action.PAY:
        text, href, link = "Payment succeeded.", _success_url(session), "Continue"
    elif action is Action.DEBIT:
        text = "Your bank debit is on its way; the merchant hears when it arrives."
        href, link = _success_url(session), "Continue"
    elif action is Action.DECLINE:
        text, href, link = "Your card was declined.", here, "Try again"
    elif action is Action.CANCEL:
        text = "You left Checkout. No payment was made and Stripe sends no event for this."
        href, link = obj["cancel_url"], "Back to the merchant"
    elif action is Action.ABANDON:
        text = "The payment was abandoned: its PaymentIntent is canceled, the session expired."
        href, link = obj["cancel_url"], "Back to the merchant"
    elif action is Action.DEBIT_SUCCEEDS:
        text, href, link = "The bank debit succeeded: the payment is paid.", here, "Back"
    elif action is Action.DEBIT_FAILS:
        text, href, link = "The bank debit failed: the session stays unpaid.", here, "Back"
    else:
        text, href, link = "This Checkout Session has expired.", obj["cancel_url"], "Back"
    return text, str(href), link


def _result(text: str, href: str, link: str) -> str:
    return (
        f'<p id="result">{escape(text)}</p>'
        f'<p><a id="next" href="{escape(href, quote=True)}">{escape(link)}</a></p>'
    )


def _success_url(session: SessionRecord) -> str:
    # Stripe fills in this template variable when it redirects.
    return str(session.obj["success_url"]).replace("{CHECKOUT_SESSION_ID}", session.id)


def _not_found(text: str) -> web.Response:
    return _page("Not found", f"<p>{escape(text)}</p>", status=404)


def _page(
    title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No icon: without this line the browser asks for /favicon.ico, a 404.
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)} - Stripe simulator</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(text=html, status=status, headers=headers, content_type="text/html")
