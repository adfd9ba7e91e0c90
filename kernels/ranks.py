"""Per-token ranks of the models' NLLs over the model axis (docs/DESIGN.md §4)."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from bsig_array.kernels._checks import check_P, check_ties
from bsig_array.kernels.backends import get_backend


def ranks(P: Any, ties: str = "average", *, backend: str = "auto") -> Any:
    """1-based ranks of ``P`` (m, n) over axis 0 (the models), per token.

    Parameters
    ----------
    P : array (m, n), float16/32/64
        NLLs (ranks of NLL equal ranks of perplexity).  NaN is not allowed (undefined result).
    ties : {"average", "first"}
        ``"average"``: midranks (= ``scipy.stats.rankdata(P, axis=0)``); ``"first"``: ties broken by
        store order (= pandas ``rank(method="first")``, the paper repo's behaviour).
    backend : {"auto", "numpy", "numba", "cupy"}

    Returns
    -------
    array (m, n) float64 in ``P``'s namespace (midranks are half-integers).
    """
    check_P(P)
    check_ties(ties)
    R2 = get_backend(backend, P).doubled_ranks(P, ties)
    xp = array_namespace(R2)
    return xp.astype(R2, xp.float64) / 2.0
