"""The perplexity store as a list of token chunks: the unit of work of the screen.

:func:`chunk_sources` cuts ``nll`` into one :class:`ChunkSource` per store chunk; a task loads its
chunk itself (inside the worker), through the store's one read path
(:func:`~bsig_array.io.perplexity_store.reader.read_block`), so damaged chunk files are named the
same way on every scheduler.
"""

from __future__ import annotations

import os
from typing import Any

import dask
import numpy as np
import xarray as xr

from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.reader import read_block
from bsig_array.io.perplexity_store.schema import NLL
from bsig_array.io.zarr_format import open_group, zarr_array
from bsig_array.runtime.defaults import DEFAULTS


class ChunkSource:
    """One token chunk of the store, loaded inside the task that scores it.

    Dask arrays sit inside this plain object (dask traverses lists, dicts and dataclasses, not
    arbitrary objects), so dask does not turn the read into a separate task whose decoded block
    would be held, or travel between processes, before the task runs; the task reads (and
    decompresses) its chunk itself with the synchronous scheduler.
    """

    __slots__ = ("nll", "token", "start", "stop")

    def __init__(self, nll: Any, token: Any, start: int, stop: int) -> None:
        self.nll, self.token, self.start, self.stop = nll, token, start, stop

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nll (m, w), token ids (w,) int64)``."""
        return _materialize(self.nll), self.load_ids()

    def load_ids(self) -> np.ndarray:
        """Token ids (int64) of the chunk; positions when the store has no ``token`` coordinate."""
        if self.token is None:
            return np.arange(self.start, self.stop, dtype=np.int64)
        return _materialize(self.token).astype(np.int64, copy=False)


class StoreSlice:
    """Token columns ``start:stop`` of one array of a store, read raw with :func:`read_block`.

    Reading through xarray decodes the NaN ``_FillValue`` (one more pass and copy per chunk); the
    screen validates every block itself, so the raw read is equivalent and ~3x faster.  A slice
    that is exactly one chunk of a Blosc store (local or object storage) is decoded straight into
    its array (:func:`~bsig_array.io.perplexity_store.reader.decode_whole_chunk`).  Picklable: the
    :class:`~bsig_array.io.location.Location` carries the storage options to the worker.
    """

    __slots__ = ("path", "name", "start", "stop")

    def __init__(self, path: Location, name: str, start: int, stop: int) -> None:
        self.path, self.name, self.start, self.stop = path, name, start, stop

    def compute(self, scheduler: str | None = None) -> np.ndarray:
        """The columns as numpy (``scheduler`` is accepted for symmetry with dask arrays)."""
        arr = zarr_array(open_group(self.path), self.name)
        return read_block(arr, (slice(None), slice(self.start, self.stop)), path=str(self.path), check_values=False)


def _direct_store(nll: xr.DataArray, store: str | os.PathLike | Location | None) -> Location | None:
    """``store`` if ``nll`` is that store's unmodified ``nll`` array (same shape, models and dtype)."""
    if store is None:
        return None
    try:
        group = open_group(store)
        arr = zarr_array(group, str(nll.name or NLL))
        models = [str(v) for v in np.asarray(zarr_array(group, "model")[:])]
    except Exception:  # not a readable zarr group: fall back to reading through xarray
        return None
    same = (
        arr.shape == nll.shape and arr.dtype == nll.dtype and models == [str(v) for v in nll["model"].values]
    )
    return as_location(store) if same else None


def _materialize(x: Any) -> np.ndarray:
    if hasattr(x, "compute"):
        x = x.compute(scheduler="synchronous")
    return np.asarray(x)


def chunk_sources(
    nll: xr.DataArray, chunk_tokens: int | None = None, *, store: str | os.PathLike | Location | None = None,
) -> list[ChunkSource]:
    """One :class:`ChunkSource` per token chunk of ``nll`` (its dask chunks, else ``chunk_tokens``).

    With ``store`` (the path ``nll`` was opened from, unmodified), chunks are read raw from the
    store (:class:`StoreSlice`); otherwise through ``nll``'s own dask graph.
    """
    direct = _direct_store(nll, store)
    d = nll.sizes["token"]
    data = nll.data
    token = nll["token"].data if "token" in nll.coords else None
    if hasattr(data, "chunks") and hasattr(data, "dask"):
        widths = data.chunks[1]
    else:
        size = int(chunk_tokens or DEFAULTS.chunk_tokens)
        widths = tuple(min(size, d - s) for s in range(0, d, size))
    sources = []
    start = 0
    for w in widths:
        stop = start + w
        tok = None if token is None else token[start:stop]
        if direct is not None:
            blk = StoreSlice(direct, str(nll.name or NLL), start, stop)
        else:
            blk = data[:, start:stop]
            if hasattr(blk, "dask"):
                (blk,) = dask.optimize(blk)  # cull: ship only this chunk's graph
        if tok is not None and hasattr(tok, "dask"):
            (tok,) = dask.optimize(tok)
        sources.append(ChunkSource(blk, tok, start, stop))
        start = stop
    return sources
