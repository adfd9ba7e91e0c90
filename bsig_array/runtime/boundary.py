"""The stage boundary: a kernel's refusal becomes a one-line user error.

Kernels are pure and raise :class:`~bsig_array.kernels.KernelInputError` (a ``ValueError``) on input
they cannot compute on.  Stages check what they can before any work; around the work they run,
:func:`kernel_errors` turns whatever a kernel still refuses, inside a task on any scheduler, into an
:class:`~bsig_array.errors.InputError` that the CLI prints as ``bsig: error: …``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bsig_array.errors import InputError
from bsig_array.kernels.errors import KernelInputError


@contextmanager
def kernel_errors(stage: str) -> Iterator[None]:
    """Re-raise a :class:`KernelInputError` from the block as ``InputError("the <stage> kernels refused …")``."""
    try:
        yield
    except KernelInputError as exc:
        raise InputError(f"the {stage} kernels refused the input: {exc}") from None
