# mypy: disable-error-code="call-arg,var-annotated,operator"
"""The per-step candidate update of AIC forward selection as numba.cuda kernels.

:func:`block_best` is the GPU twin of the fused numba loop in :mod:`bsig_array.kernels.forward`
(``_block_best_numba``): given one block's products ``C = [qᵀX; eᵀX]`` (2P, nb) it updates every
candidate's residualized squared norm ``‖x̃‖² ← ‖x̃‖² − (qᵀx)²`` in place (one thread per problem and
candidate), forms the RSS reduction ``(eᵀx)² / ‖x̃‖²`` of the live candidates, and then picks each
problem's best with the same running tie rule (gains within ``TIE_RTOL`` go to the smaller priority),
scanning the block in column order (one thread per problem): that rule is not associative, so a
tree reduction could pick a different tied candidate.

The same source runs on a GPU (CuPy arrays through ``__cuda_array_interface__``, on CuPy's current
stream) and under numba's CUDA simulator (numpy arrays), where CI checks it against the CPU loop.
No GPU was available to this project: only the simulator has run it.  (A GPU compiler may contract
``n2 − c·c`` into a fused multiply-add, a last-bit difference that the tie tolerance absorbs.)
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace
from numba import cuda

from bsig_array.kernels.cuda_fused import _launch

_INT64_MAX = int(np.iinfo(np.int64).max)


@cuda.jit
def _update_kernel(C, norm2, floor, update, gain):
    """Thread ``i`` = (problem ``i // nb``, candidate ``i % nb``): update its norm, write its gain."""
    i = cuda.grid(1)
    P, nb = norm2.shape
    if i >= P * nb:
        return
    p = i // nb
    j = i - p * nb
    n2 = norm2[p, j]
    if update:
        c = C[p, j]
        n2 -= c * c
        norm2[p, j] = n2
    if n2 > floor[p, j]:
        ex = C[P + p, j]
        gain[p, j] = ex * ex / n2
    else:
        gain[p, j] = -1.0  # dead: skipped by _scan_kernel, as the CPU loop skips it


@cuda.jit
def _scan_kernel(gain, priority, rtol, best, pri, local):
    """Thread ``p``: problem ``p``'s best candidate, the running tie rule of the CPU loop."""
    p = cuda.grid(1)
    if p >= gain.shape[0]:
        return
    b = -1.0
    bp = _INT64_MAX
    bl = 0
    for j in range(gain.shape[1]):
        g = gain[p, j]
        pg = priority[j]
        if g >= 0.0 and (g > b + rtol * b or (g >= b - rtol * b and pg < bp)):  # live only
            b = g
            bp = pg
            bl = j
    best[p] = b
    pri[p] = bp
    local[p] = bl


def block_best(
    C: Any, norm2: Any, floor: Any, priority: Any, update: bool, tie_rtol: float
) -> tuple[Any, Any, Any]:
    """One block's fused selection step on the device: per problem (gain, priority, local index).

    Parameters
    ----------
    C
        (2P, nb) float64 ``[qᵀX; eᵀX]`` of P problems over the block's candidates.
    norm2
        (P, nb) float64 residualized squared norms, updated in place when ``update``.
    floor
        (P, nb) float64 collinearity floors (a candidate is live while ``norm2 > floor``).
    priority
        (nb,) int64 tie-break ranks (smaller wins a tie).
    update
        Subtract ``(qᵀx)²`` first (every step but the first).
    tie_rtol
        Gains within this relative distance of the running best are a tie (``forward.TIE_RTOL``;
        passed in, as ``forward`` imports this module).

    Returns
    -------
    tuple
        (P,) best gain (−1 when no candidate is live), its priority and its column in the block,
        arrays of ``C``'s library; equal to ``_block_best_numba`` of :mod:`bsig_array.kernels.forward`.
    """
    xp = array_namespace(C)
    P, nb = norm2.shape
    gain = xp.empty((P, nb), dtype=xp.float64)
    best = xp.empty(P, dtype=xp.float64)
    pri = xp.empty(P, dtype=xp.int64)
    local = xp.empty(P, dtype=xp.int64)
    if P == 0:
        return best, pri, local
    host = isinstance(norm2, np.ndarray)  # numpy (the simulator) transfers contiguous buffers only
    if host:
        C, floor, priority = (np.ascontiguousarray(v) for v in (C, floor, priority))
    n2 = np.ascontiguousarray(norm2) if host else norm2
    _launch(_update_kernel, P * nb, xp, C, n2, floor, bool(update), gain)
    _launch(_scan_kernel, P, xp, gain, priority, float(tie_rtol), best, pri, local)
    if n2 is not norm2:
        norm2[...] = n2
    return best, pri, local
