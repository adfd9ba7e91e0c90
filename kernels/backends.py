"""Backend registry for the screening kernels.

A backend is one module implementing the same small interface (:class:`KernelBackend`); the public
kernels pick one by name, so adding a backend (say, a new GPU library) is one new module plus one
:func:`register_backend` call and never touches a stage.

Names: ``"numpy"`` (portable array-API code; runs on any array-API namespace), ``"numba"`` (CPU
fast path), ``"cupy"`` (GPU; importable without CuPy, fails only when used), ``"auto"`` (``"cupy"``
for CuPy inputs, ``"numba"`` for numpy inputs, ``"numpy"`` for any other array-API namespace).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.types import TailBounds, TailMembers

BACKENDS: dict[str, str] = {
    "numpy": "bsig_array.kernels.backend_portable",
    "numba": "bsig_array.kernels.backend_numba",
    "cupy": "bsig_array.kernels.backend_cupy",
}


class KernelBackend(Protocol):
    """What a backend module provides (all arrays in the backend's namespace)."""

    name: str

    def doubled_ranks(self, P, ties: str = "average"): ...  # (m, n) float, 2·rank over axis 0

    def thrush_codes(self, P, C, ties: str = "average"): ...  # (B, n) int32 = C·(2R)

    def preselect_codes(self, P, pos): ...  # (B, n) int32, pos (B, m) = position in stable y-sort

    def screen_codes(self, P, C, pos, ties: str = "average"): ...  # (thrush, preselect) codes

    def histogram_codes(self, codes, offset: int, n_bins: int, out=None): ...  # (B, n_bins) int64

    def tail_members(self, codes, token_ids, bounds: TailBounds) -> TailMembers: ...

    def tail_counts(self, codes, low_code, high_code): ...  # (B, 4) int64


def register_backend(name: str, module: str) -> None:
    """Register (or replace) backend ``name`` implemented by the importable ``module``."""
    BACKENDS[name] = module


def get_backend(name: str = "auto", *arrays) -> ModuleType:
    """The backend module for ``name``; ``"auto"`` decides from the type of the first array."""
    if name == "auto":
        name = _auto_name(arrays[0]) if arrays else "numba"
    if name not in BACKENDS:
        raise KernelInputError(f"unknown kernel backend {name!r}; use auto or one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def _auto_name(x) -> str:
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return "cupy"
    if module == "numpy":
        return "numba"
    return "numpy"
