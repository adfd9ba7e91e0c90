"""Exact histograms of screening codes over their integer lattice."""

from __future__ import annotations

from typing import Any

from bsig_array.kernels.backends import get_backend
from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.lattice import lattice


def histogram_codes(codes: Any, method: str, m: int, *, out: Any = None, backend: str = "auto") -> Any:
    """Per-row exact counts of ``codes`` (B, n) over the method's lattice.

    Parameters
    ----------
    codes : array (B, n) of int
        Thrush or Pre-select codes.
    method : {"thrush", "preselect"}
    m : int
        Number of models (fixes the lattice).
    out : array (B, n_bins) of int64, optional
        Accumulator to add into (streaming over chunks); returned.
    backend : {"auto", "numpy", "numba", "cupy"}

    Returns
    -------
    array (B, n_bins) int64; bin ``code + offset`` (see :func:`~bsig_array.kernels.lattice.lattice`).

    Raises
    ------
    ValueError
        For a code off the lattice (``out`` may then hold a partial update; discard it).
    """
    offset, n_bins = lattice(method, m)
    if len(codes.shape) != 2:
        raise KernelInputError(f"codes must be 2-D (row, token), got shape {tuple(codes.shape)}")
    if out is not None and tuple(out.shape) != (codes.shape[0], n_bins):
        raise KernelInputError(f"out must have shape {(codes.shape[0], n_bins)}, got {tuple(out.shape)}")
    return get_backend(backend, codes).histogram_codes(codes, offset, n_bins, out)
