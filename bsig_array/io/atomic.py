"""Output safety for every artifact: refuse to clobber by accident, write to a temporary sibling, rename.

A reader never sees a half-written file or store, a failed or killed run never leaves output that
looks complete, and ``--overwrite`` keeps the old output until the new one is whole.  Every writer
in :mod:`bsig_array.io` goes through :func:`check_new_output` (before any work) and
:func:`atomic_output` (around the write).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bsig_array.errors import InputError


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_new_output(path: str | os.PathLike, *, overwrite: bool, what: str = "output") -> Path:
    """Refuse ``path`` when it exists and ``overwrite`` is false; call it before doing the work.

    Raises
    ------
    InputError
        ``<what> <path> already exists; pass --overwrite to replace it or pick another path``.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InputError(f"{what} {path} already exists; pass --overwrite to replace it or pick another path")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``.

    Works for files and for directory stores (Zarr).  On an exception the temporary is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        remove_path(tmp)
