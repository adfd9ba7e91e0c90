"""CuPy backend: the portable array-API kernels on the GPU.

CuPy implements the array API, so this backend reuses :mod:`~bsig_array.kernels.backend_portable`
unchanged, except for the histogram, where ``cupy.bincount`` replaces the sort-based portable count.
The module imports without CuPy (CuPy is imported on first use); it has **not** been run on a GPU
in this repository's CI (no GPU there) — only its portable core is tested, under numpy and
array_api_strict.  Matrix products run in float64, so cuBLAS TF32 modes cannot round the exact
integer codes.
"""

from __future__ import annotations

from typing import Any

from bsig_array.kernels import backend_portable as _portable
from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.types import TailBounds, TailMembers

name = "cupy"


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("the cupy kernel backend needs CuPy (pip install 'bsig-array[gpu]')") from exc
    return cupy


def doubled_ranks(P: Any, ties: str = "average") -> Any:
    """See :func:`bsig_array.kernels.backend_portable.doubled_ranks`."""
    return _portable.doubled_ranks(_cupy().asarray(P), ties)


def thrush_codes(P: Any, C: Any, ties: str = "average") -> Any:
    """See :func:`bsig_array.kernels.backend_portable.thrush_codes`."""
    cp = _cupy()
    return _portable.thrush_codes(cp.asarray(P), cp.asarray(C), ties)


def preselect_codes(P: Any, pos: Any) -> Any:
    """See :func:`bsig_array.kernels.backend_portable.preselect_codes`."""
    cp = _cupy()
    return _portable.preselect_codes(cp.asarray(P), cp.asarray(pos))


def screen_codes(P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[Any, Any]:
    """See :func:`bsig_array.kernels.backend_portable.screen_codes`."""
    cp = _cupy()
    return _portable.screen_codes(cp.asarray(P), cp.asarray(C), cp.asarray(pos), ties)


def histogram_codes(codes: Any, offset: int, n_bins: int, out: Any = None) -> Any:
    """Per-row ``bincount`` of ``codes + offset`` (one flat bincount over row-shifted keys)."""
    cp = _cupy()
    codes = cp.asarray(codes)
    B = codes.shape[0]
    if codes.size and (int(codes.min()) < -offset or int(codes.max()) >= n_bins - offset):
        raise KernelInputError(f"codes outside the lattice [{-offset}, {n_bins - offset - 1}]")
    keys = codes.astype(cp.int64) + offset + cp.arange(B, dtype=cp.int64)[:, None] * n_bins
    hist = cp.bincount(keys.ravel(), minlength=B * n_bins).reshape(B, n_bins).astype(cp.int64)
    if out is None:
        return hist
    out += hist
    return out


def tail_members(codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers:
    """See :func:`bsig_array.kernels.backend_portable.tail_members`."""
    cp = _cupy()
    return _portable.tail_members(cp.asarray(codes), cp.asarray(token_ids), bounds)


def tail_counts(codes: Any, low_code: Any, high_code: Any) -> Any:
    """See :func:`bsig_array.kernels.backend_portable.tail_counts`."""
    cp = _cupy()
    return _portable.tail_counts(cp.asarray(codes), cp.asarray(low_code), cp.asarray(high_code))
