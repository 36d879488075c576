"""Tests of the staleness functions s(τ) in fedstale.aggregation.staleness."""

from __future__ import annotations

import math

import pytest

from fedstale.aggregation.staleness import (
    STALENESS_FUNCTIONS,
    Constant,
    Exponential,
    Hinge,
    Polynomial,
    make_staleness_function,
)


@pytest.mark.parametrize("tau", [0, 1, 7, 1000])
def test_constant_is_one(tau: int) -> None:
    """Constant: s(τ) = 1 for every τ."""
    assert Constant()(tau) == 1.0


@pytest.mark.parametrize(
    ("a", "tau", "expected"),
    [
        (0.5, 3, 0.5),  # (3 + 1)^-0.5 = 1/2
        (2.0, 1, 0.25),  # (1 + 1)^-2 = 1/4
        (1.0, 9, 0.1),  # (9 + 1)^-1
        (0.0, 5, 1.0),  # a = 0: no decay
        (0.5, 0, 1.0),
    ],
)
def test_polynomial_values(a: float, tau: int, expected: float) -> None:
    """Polynomial: s(τ) = (τ + 1)^(−a), hand values."""
    assert Polynomial(a=a)(tau) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("tau", "expected"),
    [(0, 1.0), (3, 1.0), (4, 1.0), (5, 1 / 11), (6, 1 / 21), (14, 1 / 101)],
)
def test_hinge_values(tau: int, expected: float) -> None:
    """Hinge a=10, b=4: 1 up to τ=b, then 1/(10(τ−4)+1)."""
    assert Hinge(a=10.0, b=4.0)(tau) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("w", "tau", "expected"),
    [(0.5, 3, 0.125), (0.5, 0, 1.0), (0.9, 2, 0.81), (1.0, 50, 1.0)],
)
def test_exponential_values(w: float, tau: int, expected: float) -> None:
    """Exponential: s(τ) = w^τ."""
    assert Exponential(w=w)(tau) == pytest.approx(expected, rel=1e-12)


ALL_FUNCTIONS = [
    Constant(),
    Polynomial(a=0.5),
    Polynomial(a=2.0),
    Polynomial(a=0.0),
    Hinge(a=10.0, b=4.0),
    Hinge(a=0.5, b=0.0),
    Exponential(w=0.98),
    Exponential(w=0.5),
]


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=lambda f: repr(f))
def test_s0_is_one_and_non_increasing(fn) -> None:  # type: ignore[no-untyped-def]
    """s(0) = 1, values lie in (0, 1] and never increase over τ = 0..50."""
    values = [fn(tau) for tau in range(51)]
    assert values[0] == 1.0
    assert all(0.0 < v <= 1.0 for v in values)
    increases = [t for t in range(50) if values[t + 1] > values[t]]
    assert increases == []


def test_make_ignores_unused_params() -> None:
    """Parameters a function does not use are dropped, not passed on."""
    fn = make_staleness_function("exponential", a=3.0, b=1.0, w=0.5)
    assert isinstance(fn, Exponential)
    assert fn(3) == pytest.approx(0.125)
    const = make_staleness_function("constant", a=0.5, b=4.0, w=0.98)
    assert isinstance(const, Constant)
    assert const(10) == 1.0
    poly = make_staleness_function("polynomial", a=2.0, b=4.0, w=0.98)
    assert poly(1) == pytest.approx(0.25)
    hinge = make_staleness_function("hinge", a=10, b=4, w=0.1)
    assert hinge(5) == pytest.approx(1 / 11)


def test_make_uses_defaults_for_missing_params() -> None:
    """A missing parameter keeps the dataclass default (polynomial a = 0.5)."""
    fn = make_staleness_function("polynomial")
    assert fn(3) == pytest.approx(0.5)


def test_make_unknown_name_lists_accepted() -> None:
    """An unknown name raises ValueError naming it and every accepted name."""
    with pytest.raises(ValueError) as info:
        make_staleness_function("linear", a=1.0)
    message = str(info.value)
    assert "'linear'" in message
    for name in ("constant", "polynomial", "hinge", "exponential"):
        assert name in message
    assert len(STALENESS_FUNCTIONS) == 4


def test_registry_names_match_classes() -> None:
    """The registry maps each YAML name to the class computing that formula."""
    assert STALENESS_FUNCTIONS["polynomial"](a=1.0)(3) == pytest.approx(0.25)
    assert STALENESS_FUNCTIONS["exponential"](w=0.5)(2) == pytest.approx(0.25)
    assert STALENESS_FUNCTIONS["hinge"](a=1.0, b=1.0)(3) == pytest.approx(1 / 3)
    assert math.isclose(STALENESS_FUNCTIONS["constant"]()(99), 1.0)
