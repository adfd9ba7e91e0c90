"""Shape and value checks shared by the public kernels (raise :class:`~bsig_array.kernels.errors.KernelInputError`)."""

from __future__ import annotations

from typing import Any

from bsig_array.kernels.errors import KernelInputError
from bsig_array.schema import TIES

MAX_MODELS = 200  # float32 products of codes stay exact below 2**24 (see thrush.py)


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise KernelInputError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    return ties


def check_P(P: Any) -> tuple[int, int]:
    """``P`` must be a real floating (m, n) array with 2 ≤ m ≤ MAX_MODELS."""
    if len(P.shape) != 2:
        raise KernelInputError(f"P must be 2-D (model, token), got shape {tuple(P.shape)}")
    m, n = P.shape
    if not 2 <= m <= MAX_MODELS:
        raise KernelInputError(f"need 2..{MAX_MODELS} models on axis 0 of P, got {m}")
    return int(m), int(n)


def check_Y(Y: Any, m: int) -> int:
    """``Y`` must be (B, m): one row of model scores per benchmark."""
    if len(Y.shape) != 2 or Y.shape[1] != m:
        raise KernelInputError(f"Y must have shape (B, {m}) (benchmark, model), got {tuple(Y.shape)}")
    return int(Y.shape[0])
