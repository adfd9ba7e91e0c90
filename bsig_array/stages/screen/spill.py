"""Screen spill: the candidates' NLL columns parked on disk between pass 2 and the output write."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Any

import dask
import dask.array as da
import numpy as np

from bsig_array.io.screen_output import CANDIDATE_CHUNK


class ColumnSpill:
    """Temporary directory of the NLL columns that pass 2 hands back, one ``.npy`` per store chunk.

    The driver writes each chunk's member columns and their token ids as they arrive and keeps
    only the chunk starts, so its memory does not grow with the members.  The directory (under
    ``TMPDIR``) is removed when this object is garbage collected: the lazy ``candidate_nll``
    gather references it, so the files live exactly as long as a screen result that can still be
    written.  Copies that cross a process boundary are plain paths and never delete anything.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="bsig-screen-spill-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._starts: list[int] = []

    def __fspath__(self) -> str:
        return self.path

    def __reduce__(self) -> tuple:
        return (str, (self.path,))

    def remove(self) -> None:
        """Delete the directory now."""
        self._remove()

    def add(self, start: int, ids: np.ndarray, columns: np.ndarray) -> None:
        """Store the columns (m, n) of the sorted token ids ``ids`` of the chunk starting at ``start``."""
        np.save(os.path.join(self.path, f"{start}.npy"), columns, allow_pickle=False)
        np.save(os.path.join(self.path, f"{start}.ids.npy"), ids, allow_pickle=False)
        self._starts.append(start)

    def gather(self, union: np.ndarray, m: int) -> Any:
        """Lazy (dask) float32 array (m, len(union)) of the columns of ``union`` (sorted, unique ids).

        One task per output chunk of :data:`CANDIDATE_CHUNK` candidates reads just their columns
        from the memory-mapped spill files, so no chunk-sized piece is held or rechunked.
        """
        n = union.size
        starts = tuple(sorted(self._starts))
        piece = np.empty(n, dtype=np.int32)  # spill file of each candidate
        row = np.empty(n, dtype=np.int32)  # its column in that file (< chunk width)
        for i, start in enumerate(starts):
            ids = np.load(os.path.join(self.path, f"{start}.ids.npy"))
            idx = np.minimum(np.searchsorted(union, ids), max(n - 1, 0))
            hit = np.flatnonzero(union[idx] == ids) if n else np.empty(0, np.int64)
            piece[idx[hit]] = i
            row[idx[hit]] = hit
        blocks = []
        for a in range(0, n, CANDIDATE_CHUNK):
            b = min(a + CANDIDATE_CHUNK, n)
            read = dask.delayed(_read_columns)(self, starts, piece[a:b].copy(), row[a:b].copy(), m)
            blocks.append(da.from_delayed(read, shape=(m, b - a), dtype=np.float32))
        if not blocks:
            return da.zeros((m, 0), dtype=np.float32, chunks=(m, CANDIDATE_CHUNK))
        return da.concatenate(blocks, axis=1)


def _read_columns(
    spill: ColumnSpill | str, starts: tuple[int, ...], piece: np.ndarray, row: np.ndarray, m: int,
) -> np.ndarray:
    out = np.empty((m, piece.size), dtype=np.float32)
    for p in np.unique(piece):
        at = np.flatnonzero(piece == p)
        # memory-mapped: only the pages of the wanted columns are read (and resident only meanwhile)
        cols = np.load(os.path.join(os.fspath(spill), f"{starts[p]}.npy"), mmap_mode="r")
        out[:, at] = cols[:, row[at]]
        del cols
    return out
