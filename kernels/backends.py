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
from typing import Any, Protocol

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

    def doubled_ranks(self, P: Any, ties: str = "average") -> Any: ...  # (m, n) float, 2·rank over axis 0

    def thrush_codes(self, P: Any, C: Any, ties: str = "average") -> Any: ...  # (B, n) int32 = C·(2R)

    def preselect_codes(self, P: Any, pos: Any) -> Any: ...  # (B, n) int32, pos (B, m) = position in stable y-sort

    # (thrush, preselect) codes
    def screen_codes(self, P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[Any, Any]: ...

    def histogram_codes(self, codes: Any, offset: int, n_bins: int, out: Any = None) -> Any: ...  # (B, n_bins) int64

    def tail_members(self, codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers: ...

    def tail_counts(self, codes: Any, low_code: Any, high_code: Any) -> Any: ...  # (B, 4) int64


def register_backend(name: str, module: str) -> None:
    """Register (or replace) backend ``name`` implemented by the importable ``module``."""
    BACKENDS[name] = module


def get_backend(name: str = "auto", *arrays: Any) -> ModuleType:
    """The backend module for ``name``; ``"auto"`` decides from the type of the first array."""
    if name == "auto":
        name = _auto_name(arrays[0]) if arrays else "numba"
    if name not in BACKENDS:
        raise KernelInputError(f"unknown kernel backend {name!r}; use auto or one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def _auto_name(x: Any) -> str:
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return "cupy"
    if module == "numpy":
        return "numba"
    return "numpy"
