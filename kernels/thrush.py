"""Thrush (Eq. 1) for all benchmarks at once: ``Γ = C · R``.

γ = Σ_{k<l} sign(y_k − y_l)(r_k − r_l) = Σ_a c_a r_a with c_a = Σ_b sign(y_a − y_b)
= 2·midrank(y_a) − (m+1), so one (B × m)·(m × n) product on the per-token rank matrix scores every
benchmark.  Codes are ``2γ = C · (2R)``: ``C`` and ``2R`` are integers, so the code is an integer.

Exactness of float arithmetic: |c_a| ≤ m−1 and 2r_a ≤ 2m, so every partial sum of the product is an
integer of magnitude ≤ 2m²(m−1) < 2**24 for m ≤ 200 (``_checks.MAX_MODELS``): float32 (and float64)
products and sums of such integers are exact in any order, with or without FMA (the numba backend's
AVX-512 VNNI path multiplies u8 ranks by s8 weights into int32, exact for m ≤ 127).  The result fits
``|2γ| ≤ L = m(m²−1)/3`` (int32).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from bsig_array.kernels._checks import check_P, check_ties, check_Y
from bsig_array.kernels.backends import get_backend
from bsig_array.kernels.errors import KernelInputError


def thrush_weights(Y):
    """Thrush weights ``c = 2·midrank(y) − (m+1)`` per benchmark row of ``Y`` (B, m), as int32.

    ``c_a = Σ_b sign(y_a − y_b)`` exactly (ties in y give 0), an integer in ``[-(m−1), m−1]``.
    """
    xp = array_namespace(Y)
    if len(Y.shape) != 2:
        raise KernelInputError(f"Y must be 2-D (benchmark, model), got shape {tuple(Y.shape)}")
    ya, yb = Y[:, :, None], Y[:, None, :]
    c = xp.sum(xp.astype(ya > yb, xp.int32), axis=2) - xp.sum(xp.astype(ya < yb, xp.int32), axis=2)
    return xp.astype(c, xp.int32)


def thrush_codes(P: Any, Y: Any, ties: str = "average", *, backend: str = "auto") -> Any:
    """Thrush codes ``2γ`` (int32, (B, n)) of every token for every benchmark.

    Parameters
    ----------
    P : array (m, n), float16/32/64
        NLLs of m models on n tokens (no NaN).
    Y : array (B, m)
        Benchmark scores, one row per benchmark (label-permuted copies are just more rows).
    ties : {"average", "first"}
        Rank ties in ``P``: midranks, or store order (the paper repo).
    backend : {"auto", "numpy", "numba", "cupy"}

    Returns
    -------
    array (B, n) int32 in ``[-L, L]``, ``L = m(m²−1)/3``; ``γ = code / 2``.
    """
    m, _ = check_P(P)
    check_Y(Y, m)
    check_ties(ties)
    impl = get_backend(backend, P)
    return impl.thrush_codes(P, _like(thrush_weights(Y), P), ties)


def _like(x, P):
    """``x`` moved to the namespace of ``P`` when it came from numpy (the usual case for Y)."""
    xp = array_namespace(P)
    return x if array_namespace(x) is xp else xp.asarray(x)
