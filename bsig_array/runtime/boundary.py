"""The stage boundary: a kernel's refusal becomes a one-line user error.

Kernels are pure and raise :class:`~bsig_array.kernels.KernelInputError` (a ``ValueError``) on input
they cannot compute on.  Stages check what they can before any work; around the work they run,
:func:`kernel_errors` turns whatever a kernel still refuses, inside a task on any scheduler, into an
:class:`~bsig_array.errors.InputError` that the CLI prints as ``bsig: error: …``.  An object store
that stopped answering (a timeout or a lost connection that outlived its retries, raised by the
storage client inside any task) becomes one too (:func:`storage_failure`).
"""

from __future__ import annotations

import re
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
    except Exception as exc:
        failed = storage_failure(exc)
        if failed is None:
            raise
        raise failed from None


#: Packages of the storage clients behind fsspec: their exceptions are failures of the store.
STORAGE_CLIENTS = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "fsspec")


def storage_failure(exc: BaseException, where: str | None = None, detail: str | None = None) -> InputError | None:
    """The one-line error for ``exc`` when it says an object store stopped answering, else ``None``.

    That is a timeout or a lost or refused connection raised by a storage client (botocore, aiohttp,
    fsspec), which s3fs has already retried ``BSIG_STORAGE_RETRIES`` times.  ``where`` names the store
    (default: the endpoint in the client's message); ``detail`` is the exception as one masked line.
    """
    if not _unreachable(exc):
        return None
    from bsig_array.runtime.defaults import DEFAULTS

    text = detail if detail is not None else " ".join(str(exc).split())[:300]
    if where is None:
        found = re.search(r"https?://[^\s\"']+", str(exc))
        where = f"object store {found.group(0)}" if found else "the object store"
    tries = DEFAULTS.storage_retries + 1
    attempts = f"{tries} attempt{'s' * (tries > 1)}"
    if _timed_out(exc):
        return InputError(
            f"{where}: no answer from the object store within BSIG_STORAGE_TIMEOUT={DEFAULTS.storage_timeout:g}s, "
            f"{attempts} ({type(exc).__name__}: {text}); check that the endpoint is up and reachable, "
            "or raise BSIG_STORAGE_TIMEOUT (seconds) or BSIG_STORAGE_RETRIES"
        )
    return InputError(
        f"{where}: the object store refused or cannot be reached, {attempts} ({type(exc).__name__}: {text}); "
        "check the URL, the endpoint and the credentials, or raise BSIG_STORAGE_RETRIES when the connection drops"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def _timed_out(exc: BaseException) -> bool:
    return any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in _chain(exc))


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a storage client's timeout or connection failure."""
    for depth, e in enumerate(_chain(exc)):
        kind = type(e)
        client = kind.__module__.split(".")[0] in STORAGE_CLIENTS
        names = " ".join(k.__name__ for k in kind.__mro__)
        if client and re.search(r"Timeout|Connect|ServerDisconnected|PayloadError", names):
            return True
        if isinstance(e, TimeoutError) and (client or depth):
            return True
    return False
