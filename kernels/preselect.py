"""Pre-select (Eq. 2) for all benchmarks at once.

Sort the models by the benchmark score y ascending (stable: ties keep store order) and count the
pairs ``k < l`` of that order with ``p_(k) > p_(l)`` (ties in p count 0): ``code = η·Z``,
``Z = m(m−1)/2``.  **Sign convention:** Eq. (2) as printed counts *correctly ordered* pairs (a better
model — higher y — has lower NLL), so a perfect predictor gets η = 1, while the paper's prose says 0;
we implement the formula as printed, so the high tail holds the tokens whose NLL order agrees with
the benchmark order.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from bsig_array.kernels._checks import check_P, check_Y
from bsig_array.kernels.backends import get_backend


def preselect_positions(Y):
    """Position (int64, (B, m)) of each model in the stable ascending sort of each row of ``Y``."""
    xp = array_namespace(Y)
    order = xp.argsort(Y, axis=1, stable=True)
    return xp.astype(xp.argsort(order, axis=1, stable=True), xp.int64)


def preselect_codes(P: Any, Y: Any, *, backend: str = "auto") -> Any:
    """Pre-select codes ``η·Z`` (int32, (B, n)) of every token for every benchmark.

    Parameters
    ----------
    P : array (m, n), float16/32/64
        NLLs (no NaN).
    Y : array (B, m)
        Benchmark scores per row (label-permuted copies are just more rows).
    backend : {"auto", "numpy", "numba", "cupy"}

    Returns
    -------
    array (B, n) int32 in ``[0, Z]``; ``η = code / Z``.
    """
    m, _ = check_P(P)
    check_Y(Y, m)
    impl = get_backend(backend, P)
    pos = preselect_positions(Y)
    xp = array_namespace(P)
    if array_namespace(pos) is not xp:
        pos = xp.asarray(pos)
    return impl.preselect_codes(P, pos)
