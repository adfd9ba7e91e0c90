"""Atomic outputs: write to a temporary sibling, then rename over the target.

A reader never sees a half-written file or store, a failed or killed run never leaves output that
looks complete, and ``--overwrite`` keeps the old output until the new one is whole.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
