"""Integer lattices of the screening scores and conversions between codes and scores.

Both screening scores are stored as exact integer *codes* (docs/DESIGN.md §4):

* Thrush: ``code = 2·γ`` (γ lives on the half-integer lattice), ``code ∈ [-L, L]`` with
  ``L = m(m²-1)/3``; the score is ``γ = code / 2``.
* Pre-select: ``code = η·Z`` (a pair count), ``code ∈ [0, Z]`` with ``Z = m(m-1)/2``; the score is
  ``η = code / Z``.

A histogram bin is ``code + offset``, so every code has one bin and quantiles are exact.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from bsig_array.kernels.errors import KernelInputError
from bsig_array.schema import COEFFICIENTS as METHODS


def check_method(method: str) -> str:
    """Return ``method`` if it is a known screening method, else raise ``ValueError``."""
    if method not in METHODS:
        raise KernelInputError(f"unknown screening method {method!r}; use one of {', '.join(METHODS)}")
    return method


def thrush_bound(m: int) -> int:
    """``L = m(m²-1)/3``: the largest ``|2γ|`` for ``m`` models (always an integer)."""
    return m * (m * m - 1) // 3


def pair_count(m: int) -> int:
    """``Z = m(m-1)/2``: the number of model pairs, the largest Pre-select code."""
    return m * (m - 1) // 2


def lattice(method: str, m: int) -> tuple[int, int]:
    """Histogram lattice of a method's codes.

    Parameters
    ----------
    method : {"thrush", "preselect"}
    m : int
        Number of models.

    Returns
    -------
    offset, n_bins : int
        ``bin = code + offset`` lies in ``[0, n_bins)``.
    """
    check_method(method)
    if m < 2:
        raise KernelInputError(f"need at least 2 models, got {m}")
    if method == "thrush":
        bound = thrush_bound(m)
        return bound, 2 * bound + 1
    return 0, pair_count(m) + 1


def code_scale(method: str, m: int) -> float:
    """Divisor turning a code into its score: 2 for Thrush (γ), ``Z`` for Pre-select (η)."""
    check_method(method)
    return 2.0 if method == "thrush" else float(pair_count(m))


def code_to_score(codes: Any, method: str, m: int) -> Any:
    """Scores (γ or η) of integer codes, as float64 in the codes' array namespace."""
    from array_api_compat import array_namespace

    xp = array_namespace(codes)
    return xp.astype(codes, xp.float64) / code_scale(method, m)


def tail_size(alpha: float, n_tokens: int) -> int:
    """Tokens kept per tail: ``k = max(floor(alpha·d), 1)``.

    Raises ``ValueError`` unless ``0 < alpha < 0.5`` and ``n_tokens ≥ 1`` (the stage turns this into
    a user-facing error).
    """
    if not 0.0 < float(alpha) < 0.5:
        raise KernelInputError(f"alpha must be in (0, 0.5), got {alpha}")
    if n_tokens < 1:
        raise KernelInputError(f"need at least one token, got {n_tokens}")
    # alpha as the decimal the user wrote (0.29·100 is 28.999… in binary floating point)
    return max(math.floor(Fraction(repr(float(alpha))) * int(n_tokens)), 1)
