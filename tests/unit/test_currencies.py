"""Stripe's currency rules: decimals, the minimum charge, the amounts it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared import currencies
from shared.currencies import AmountRefusal, charge_refusal


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("usd", 2), ("USD", 2), ("jpy", 0), ("krw", 0), ("kwd", 3), ("bhd", 3), ("isk", 2)],
)
def test_decimals_per_currency(currency: str, digits: int) -> None:
    assert currencies.decimals(currency) == digits


@pytest.mark.parametrize(
    ("currency", "minimum"),
    [("usd", 50), ("eur", 50), ("gbp", 30), ("jpy", 50), ("hkd", 400), ("huf", 17500)],
)
def test_the_minimum_charge_is_stripes(currency: str, minimum: int) -> None:
    assert currencies.minimum_charge(currency) == minimum
    assert charge_refusal(minimum - 1, currency) == AmountRefusal("too_small", minimum=minimum)
    assert charge_refusal(minimum, currency) is None


def test_a_currency_outside_stripes_table_has_no_minimum_but_one_minor_unit() -> None:
    assert currencies.minimum_charge("kes") is None
    assert charge_refusal(1, "kes") is None
    assert charge_refusal(0, "kes") == AmountRefusal("too_small", minimum=1)


@pytest.mark.parametrize(
    ("amount", "currency", "step"), [(5124, "kwd", 10), (1005, "tnd", 10), (550, "isk", 100)]
)
def test_amounts_off_the_currencys_step_are_refused(amount: int, currency: str, step: int) -> None:
    assert charge_refusal(amount, currency) == AmountRefusal("off_step", step=step)
    assert charge_refusal(amount - amount % step, currency) is None


@pytest.mark.parametrize(
    ("amount", "currency", "major", "shown"),
    [
        (2550, "usd", Decimal("25.50"), "25.50 USD"),
        (123456, "eur", Decimal("1234.56"), "1,234.56 EUR"),
        (500, "jpy", Decimal("500"), "500 JPY"),
        (5120, "kwd", Decimal("5.120"), "5.120 KWD"),
    ],
)
def test_amounts_in_major_units(amount: int, currency: str, major: Decimal, shown: str) -> None:
    assert currencies.to_major(amount, currency) == major
    assert currencies.format_amount(amount, currency) == shown


def test_the_table_agrees_with_the_decimals() -> None:
    """Every minimum is a chargeable amount of its own currency."""
    for currency, minimum in currencies.MINIMUM_CHARGE.items():
        assert charge_refusal(minimum, currency) is None, currency
