"""Checks of user-given values: options, choices and name lists, each failing with one clear line.

Stages call these at their boundary (before any work), so the CLI and library users get the same
:class:`~bsig_array.errors.OptionError` for the same mistake; the CLI adds nothing of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bsig_array.errors import InputError, OptionError
from bsig_array.schema import COEFFICIENTS


def check_choice(value: str, choices: Sequence[str], what: str, fix: str = "") -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises
    ------
    OptionError
        ``unknown <what> '<value>'; use a, b or c`` (plus ``fix`` when given).
    """
    if value not in choices:
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise OptionError(f"unknown {what} {value!r}; use {listed}" + (f" {fix}" if fix else ""))
    return value


def resolve_coefficients(coefficients: str | Sequence[str]) -> tuple[str, ...]:
    """``"both"``/``"thrush"``/``"preselect"`` or a sequence of them → tuple in :data:`COEFFICIENTS` order."""
    if isinstance(coefficients, str):
        coefficients = COEFFICIENTS if coefficients == "both" else (coefficients,)
    out = tuple(dict.fromkeys(str(c) for c in coefficients))
    bad = [c for c in out if c not in COEFFICIENTS]
    if bad or not out:
        raise OptionError(f"unknown screening method(s) {bad or list(out)}; use thrush, preselect or both")
    return tuple(c for c in COEFFICIENTS if c in out)


def check_alpha(alpha: float) -> float:
    """The screen's tail fraction: a number in (0, 0.5)."""
    try:
        ok = 0.0 < float(alpha) < 0.5  # False for NaN
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(f"alpha must be in (0, 0.5) (the fraction kept per tail), got {alpha}; e.g. --alpha 0.01")
    return float(alpha)


def check_count(value: int, what: str, *, minimum: int = 0) -> int:
    """An integer option that must be at least ``minimum`` (e.g. ``--null-permutations``)."""
    if int(value) != value or int(value) < minimum:
        raise OptionError(f"{what} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_nonnegative(value: float, what: str) -> float:
    """A finite number >= 0 (e.g. ``--delta``)."""
    if not (value >= 0 and math.isfinite(value)):
        raise OptionError(f"{what} must be a finite number >= 0, got {value}")
    return float(value)


def duplicates(names: Iterable[str]) -> list[str]:
    """Names that occur more than once, sorted."""
    seen: set[str] = set()
    dup: set[str] = set()
    for name in names:
        (dup if name in seen else seen).add(name)
    return sorted(dup)


def check_unique_models(models: Sequence[str], where: str) -> None:
    """Refuse a model list with repeated names (``where`` names the artifact in the message).

    Raises
    ------
    InputError
        ``<where>: duplicate model names [...]; give every model a unique name``.
    """
    dup = duplicates(str(m) for m in models)
    if dup:
        raise InputError(f"{where}: duplicate model names {dup}; give every model a unique name")
