"""Stripe's currencies: how many decimals an API amount has, the smallest amount Stripe charges,
and the amounts it refuses. Pure data and arithmetic, no I/O.

From Stripe's "Supported currencies" page (docs.stripe.com/currencies):
- API amounts are integers in the currency's minor unit: 2550 is 25.50 USD. Zero-decimal
  currencies have no minor unit (500 is 500 JPY).
- Three-decimal currencies (BHD, JOD, KWD, OMR, TND) are sent with three decimals, but Stripe's
  payment partners need the last digit to be 0: 5.124 KWD must be rounded to 5120 or 5130.
- ISK became zero-decimal, but for backwards compatibility its amounts keep two decimals and
  must be whole krónur (divisible by 100: 500 is 5 ISK).
- The minimum charge is set by the account's settlement currency. The table below is Stripe's
  for a charge in the settlement currency itself; a charge in another currency must convert to at
  least that minimum, which needs an exchange rate, so currencies outside the table have no
  minimum here (None) beyond one minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

ZERO_DECIMAL = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# Zero-decimal currencies Stripe still takes with two decimals, in whole units.
WHOLE_UNITS_WITH_TWO_DECIMALS = frozenset({"isk"})

# Minimum charge amount, in minor units, per settlement currency.
MINIMUM_CHARGE = MappingProxyType(
    {
        "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50,
        "chf": 50, "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400,
        "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300,
        "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AmountRefusal:
    """Why Stripe refuses to charge an amount: `too_small` (below `minimum`) or `off_step` (not
    a multiple of `step` minor units)."""

    reason: str
    minimum: int | None = None
    step: int = 1


def decimals(currency: str) -> int:
    """How many decimals an API amount in `currency` has."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def amount_step(currency: str) -> int:
    """Every amount Stripe charges in `currency` is a multiple of this many minor units."""
    code = currency.lower()
    if code in THREE_DECIMAL:
        return 10
    if code in WHOLE_UNITS_WITH_TWO_DECIMALS:
        return 100
    return 1


def minimum_charge(currency: str) -> int | None:
    """Stripe's minimum charge in minor units; None when it depends on an exchange rate."""
    return MINIMUM_CHARGE.get(currency.lower())


def charge_refusal(amount: int, currency: str) -> AmountRefusal | None:
    """Why Stripe would refuse to charge `amount` minor units of `currency`; None if it would
    not (an amount over Stripe's maximum is not checked here)."""
    minimum = max(minimum_charge(currency) or 1, 1)
    if amount < minimum:
        return AmountRefusal("too_small", minimum=minimum)
    step = amount_step(currency)
    if amount % step:
        return AmountRefusal("off_step", step=step)
    return None


def to_major(amount: int, currency: str) -> Decimal:
    """`2550, "usd"` -> `Decimal("25.50")`."""
    digits = decimals(currency)
    return Decimal(amount).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def format_amount(amount: int, currency: str) -> str:
    """`2550, "usd"` -> `25.50 USD`, with the currency's own number of decimals."""
    return f"{to_major(amount, currency):,} {currency.upper()}"
