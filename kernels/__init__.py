"""Pure array kernels: screening (ranks, Thrush, Pre-select, histograms, exact tails) and AIC forward selection.

No I/O, no Dask, no xarray.  Every kernel takes arrays from any array-API namespace and a
``backend`` (``"auto"``, ``"numpy"`` = portable array-API code, ``"numba"`` = CPU fast path,
``"cupy"`` = GPU); see :mod:`bsig_array.kernels.backends`.  Bad input raises
:class:`KernelInputError` (a ``ValueError``).

Typical streaming use (the screen stage)::

    C = thrush_codes(P_chunk, Y)                       # (B, n) int32, 2γ
    # (screen_codes(P_chunk, Y) gives both methods from one pass over the comparisons)
    hist = histogram_codes(C, "thrush", m, out=hist)   # pass 1, exact counts
    bounds = tail_bounds(hist, tail_size(alpha, d), "thrush", m)
    parts.append(tail_members(C, token_ids, bounds))   # pass 2, per chunk
    sel = merge_tails(parts, bounds)                   # (B, 2, k) token ids sorted by id

The names below are loaded on first use (PEP 562): importing one kernel module, e.g.
``bsig_array.kernels.lattice``, does not import numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> submodule that defines it.
_EXPORTS = {
    "BACKENDS": "backends", "get_backend": "backends", "register_backend": "backends",
    "screen_codes": "codes",
    "KernelInputError": "errors",
    "ForwardPath": "forward", "OLSFit": "forward", "forward_select": "forward", "ols_aic": "forward", "ols_fit": "forward",
    "histogram_codes": "histogram",
    "METHODS": "lattice", "code_scale": "lattice", "code_to_score": "lattice", "lattice": "lattice",
    "pair_count": "lattice", "tail_size": "lattice", "thrush_bound": "lattice",
    "MAX_MODELS": "_checks",
    "preselect_codes": "preselect", "preselect_positions": "preselect",
    "ranks": "ranks",
    "merge_tails": "tails", "tail_bounds": "tails", "tail_counts": "tails", "tail_members": "tails",
    "to_host": "tails",
    "thrush_codes": "thrush", "thrush_weights": "thrush",
    "TAILS": "types", "RowSets": "types", "TailBounds": "types", "TailMembers": "types", "TailSelection": "types",
    "sorted_unique": "unique",
}

__all__ = sorted(_EXPORTS)

if __name__ != "bsig_array.kernels":  # found as a top-level `kernels` from a checkout's root: not ours
    from bsig_array import _step_aside

    _step_aside(__name__, __file__)
else:
    # ``lattice`` and ``ranks`` are both a submodule and a function: importing the submodule binds the
    # module to the package attribute, so bind the functions eagerly (both modules are light).
    from bsig_array.kernels.lattice import lattice
    from bsig_array.kernels.ranks import ranks


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from bsig_array.kernels._checks import MAX_MODELS
    from bsig_array.kernels.backends import BACKENDS, get_backend, register_backend
    from bsig_array.kernels.codes import screen_codes
    from bsig_array.kernels.errors import KernelInputError
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
    from bsig_array.kernels.tails import merge_tails, tail_bounds, tail_counts, tail_members, to_host
    from bsig_array.kernels.thrush import thrush_codes, thrush_weights
    from bsig_array.kernels.types import TAILS, RowSets, TailBounds, TailMembers, TailSelection
    from bsig_array.kernels.unique import sorted_unique
