"""Pure array kernels: screening (ranks, Thrush, Pre-select, histograms, exact tails) and AIC forward selection.

No I/O, no Dask, no xarray.  Every kernel takes arrays from any array-API namespace and a
``backend`` (``"auto"``, ``"numpy"`` = portable array-API code, ``"numba"`` = CPU fast path,
``"cupy"`` = GPU); see :mod:`bsig_array.kernels.backends`.

Typical streaming use (the screen stage)::

    C = thrush_codes(P_chunk, Y)                       # (B, n) int32, 2γ
    # (screen_codes(P_chunk, Y) gives both methods from one pass over the comparisons)
    hist = histogram_codes(C, "thrush", m, out=hist)   # pass 1, exact counts
    bounds = tail_bounds(hist, tail_size(alpha, d), "thrush", m)
    parts.append(tail_members(C, token_ids, bounds))   # pass 2, per chunk
    sel = merge_tails(parts, bounds)                   # (B, 2, k) token ids sorted by id
"""

from bsig_array.kernels.backends import BACKENDS, get_backend, register_backend
from bsig_array.kernels.codes import screen_codes
from bsig_array.kernels.forward import ForwardPath, OLSFit, forward_select, ols_aic, ols_fit
from bsig_array.kernels.histogram import histogram_codes
from bsig_array.kernels.lattice import (
    METHODS,
    code_scale,
    code_to_score,
    lattice,
    pair_count,
    tail_size,
    thrush_bound,
)
from bsig_array.kernels.preselect import preselect_codes, preselect_positions
from bsig_array.kernels.ranks import ranks
from bsig_array.kernels.tails import (
    TAILS,
    RowSets,
    TailBounds,
    TailMembers,
    TailSelection,
    merge_tails,
    tail_bounds,
    tail_counts,
    tail_members,
)
from bsig_array.kernels.thrush import thrush_codes, thrush_weights

__all__ = [
    "ForwardPath",
    "OLSFit",
    "forward_select",
    "ols_aic",
    "ols_fit",
    "BACKENDS",
    "METHODS",
    "TAILS",
    "RowSets",
    "TailBounds",
    "TailMembers",
    "TailSelection",
    "code_scale",
    "code_to_score",
    "get_backend",
    "histogram_codes",
    "lattice",
    "merge_tails",
    "pair_count",
    "preselect_codes",
    "preselect_positions",
    "ranks",
    "register_backend",
    "screen_codes",
    "tail_bounds",
    "tail_counts",
    "tail_members",
    "tail_size",
    "thrush_bound",
    "thrush_codes",
    "thrush_weights",
]
