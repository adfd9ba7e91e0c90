"""Writer of the perplexity store: creates it, writes whole token chunks, records progress.

Every write covers whole token chunks (one writer per chunk), so a writer killed at any point leaves
at most the chunks it was writing unmarked, and :meth:`StoreWriter.pending` hands exactly those back
on resume.  The schema is in :mod:`.schema`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.atomic import check_new_output
from bsig_array.io.faults import fault_point
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.schema import (
    NLL,
    PERPLEXITY_STORE,
    PROGRESS,
    SCHEMA_VERSION,
    WRITE_DTYPES,
    compressor,
    default_chunk_tokens,
)
from bsig_array.io.zarr_format import (
    missing_chunks,
    open_group,
    quiet_zarr,
    read_checked,
    require_zarr_v3,
    with_checksum,
    write_zarr,
    zarr_array,
)
from bsig_array.options import check_unique_models


def create_store(
    path: str | os.PathLike | Location,
    models: Sequence[str],
    n_tokens: int,
    *,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
    with_doc_piece: bool = True,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreWriter:
    """Create an empty perplexity store and return a writer for it.

    Only metadata is written here; data arrives chunk by chunk through :meth:`StoreWriter.write_chunk`.

    Parameters
    ----------
    path
        Directory (or object-store URL) of the Zarr v3 store to create.
    models
        Model names, in store order (unique, at least one).
    n_tokens
        Length of the token axis.
    chunk_tokens
        Tokens per chunk (default 2**20, capped at ``n_tokens``).
    dtype
        ``float32`` (default) or ``float16``.
    with_doc_piece
        Also create the per-token ``doc`` and ``piece`` coordinates.
    attrs
        Extra store attributes (``target``, ``context_pieces``, ``sample_rate``, ``seed``, ...).
    overwrite
        Replace an existing store at ``path``.
    """
    path = check_new_output(path, overwrite=overwrite, what="store", kind=PERPLEXITY_STORE)
    models = [str(m) for m in models]
    check_unique_models(models, f"store {path}")
    if dtype not in WRITE_DTYPES:
        raise OptionError(f"unsupported store dtype {dtype!r}; use float32 or float16")
    n_tokens = int(n_tokens)
    if n_tokens < 1:
        raise InputError(f"a store needs at least one token, got {n_tokens}")
    m = len(models)
    chunk = default_chunk_tokens(n_tokens, chunk_tokens)
    n_chunks = -(-n_tokens // chunk)

    # Lazy placeholders: to_zarr(compute=False) writes only metadata for dask-backed variables.
    data_vars = {NLL: (("model", "token"), da.full((m, n_tokens), np.nan, dtype=dtype, chunks=(m, chunk)))}
    coords: dict[str, Any] = {
        "model": ("model", np.array(models, dtype=object)),
        "token": ("token", da.zeros(n_tokens, dtype="int64", chunks=chunk)),
    }
    if with_doc_piece:
        coords["doc"] = ("token", da.zeros(n_tokens, dtype="int64", chunks=chunk))
        coords["piece"] = ("token", da.zeros(n_tokens, dtype="int32", chunks=chunk))
    data_vars[PROGRESS] = (("model", "chunk"), np.zeros((m, n_chunks), dtype="uint8"))
    ds = xr.Dataset(data_vars, coords=xr.Coordinates(coords, indexes={}))
    ds.attrs.update(
        {
            "bsig_schema_version": SCHEMA_VERSION,
            "chunk_tokens": chunk,
            "target": "last-token",
            "context_pieces": 30,
        }
    )
    ds.attrs.update(attrs or {})
    encoding = {
        NLL: {"chunks": (m, chunk), "compressors": [compressor()], "_FillValue": np.nan},
        "token": {"chunks": (chunk,), "compressors": [compressor()]},
        # One progress chunk per token chunk: its writer owns it, so marks never race.
        PROGRESS: {"chunks": (m, 1)},
    }
    if with_doc_piece:
        encoding["doc"] = {"chunks": (chunk,), "compressors": [compressor()]}
        encoding["piece"] = {"chunks": (chunk,), "compressors": [compressor()]}
    write_zarr(ds, path, encoding=encoding, compute=False)  # metadata only; every chunk gets a crc32c
    return StoreWriter(path)


class StoreWriter:
    """Writes whole token chunks of a store and records which (model, chunk) blocks are complete.

    Parameters
    ----------
    path
        An existing store created by :func:`create_store` (a local directory or an object-store URL).

    Notes
    -----
    Exactly one process may write a given token chunk at a time (a chunk spans all models, so a
    partial-model write is a read-modify-write of that chunk).  Different chunks may be written
    concurrently by different processes.  On an object store every chunk and every progress mark
    is one PUT of a whole object, so the same holds there: a killed writer leaves whole chunks, and
    a chunk counts only once its mark is written.
    """

    def __init__(self, path: str | os.PathLike | Location) -> None:
        self.path = as_location(path)
        require_zarr_v3(self.path, "store")
        try:
            self.group = open_group(self.path, mode="r+")
        except Exception as exc:  # zarr raises several types for a missing/broken group
            raise InputError(f"cannot open store {self.path} for writing ({exc}); create it first") from None
        if NLL not in self.group or PROGRESS not in self.group:
            raise InputError(f"{self.path} is not a writable bsig store (no nll or progress record)")
        self.nll = zarr_array(self.group, NLL)
        self.models = [str(m) for m in np.asarray(zarr_array(self.group, "model")[:])]
        self.n_tokens = int(self.nll.shape[1])
        self.chunk_tokens = int(self.nll.chunks[1])
        self.n_chunks = -(-self.n_tokens // self.chunk_tokens)
        # A damaged record still opens a writer (rebuild_progress needs one); every read of it says so.
        self.progress: zarr.Array | None = None
        self._damage: str | None = None
        try:
            self.progress = progress_record(self.group, self.path, (len(self.models), self.n_chunks))
        except InputError as exc:
            self._damage = str(exc)

    def _record(self) -> zarr.Array:
        """The progress record, or the one-line :class:`InputError` saying it is damaged."""
        if self.progress is None:
            raise InputError(self._damage or progress_damage(self.path, "is unreadable"))
        return self.progress

    def _marks(self, key: tuple[slice, ...]) -> np.ndarray:
        """Marks of ``key`` read through the checked read: damage is one line naming the record's file."""
        return read_progress(self._record(), self.path, key)

    @property
    def attrs(self) -> dict[str, Any]:
        """Store attributes (a copy)."""
        return dict(self.group.attrs)

    def update_attrs(self, **attrs: Any) -> None:
        """Merge ``attrs`` into the store attributes."""
        self.group.attrs.update(attrs)
        self._consolidate()

    def _consolidate(self) -> None:
        # Consolidated metadata is a copy of every array's metadata: refresh it after any change
        # to shapes or attributes, or readers would see the old shapes.
        with quiet_zarr():
            zarr.consolidate_metadata(self.group.store)

    def chunk_slice(self, j: int) -> slice:
        """Token positions covered by chunk ``j``."""
        if not 0 <= j < self.n_chunks:
            raise IndexError(f"chunk {j} out of range [0, {self.n_chunks})")
        start = j * self.chunk_tokens
        return slice(start, min(start + self.chunk_tokens, self.n_tokens))

    def model_index(self, names: Sequence[str]) -> list[int]:
        """Row of each model name; unknown names are a :class:`InputError`."""
        lookup = {m: i for i, m in enumerate(self.models)}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise InputError(f"models {missing} are not in store {self.path} (it has {self.models})")
        return [lookup[n] for n in names]

    def write_chunk(
        self,
        j: int,
        nll: np.ndarray,
        *,
        rows: Sequence[int] | None = None,
        token: np.ndarray | None = None,
        doc: np.ndarray | None = None,
        piece: np.ndarray | None = None,
    ) -> None:
        """Write token chunk ``j`` for all models (or the model ``rows``) and mark it complete.

        Data go first, the progress mark last: a writer killed in between leaves the block unmarked,
        so it is rewritten on resume and never counted twice.
        """
        sl = self.chunk_slice(j)
        width = sl.stop - sl.start
        rows = list(range(len(self.models))) if rows is None else list(rows)
        nll = np.asarray(nll)
        if nll.shape != (len(rows), width):
            raise ValueError(f"chunk {j} expects shape {(len(rows), width)}, got {nll.shape}")
        if len(rows) == len(self.models) and rows == sorted(rows):
            self.nll[:, sl] = nll.astype(self.nll.dtype, copy=False)
        else:
            block = np.asarray(self.nll[:, sl])
            block[rows] = nll
            self.nll[:, sl] = block
        marks = self._marks((slice(None), slice(j, j + 1)))[:, 0].copy()
        if token is None and "token" in self.group and not marks.any():
            # First write of this chunk without explicit ids: ids default to positions, so a store
            # never carries the placeholder zeros as feature ids.
            token = np.arange(sl.start, sl.stop, dtype=np.int64)
        for name, values in (("token", token), ("doc", doc), ("piece", piece)):
            if values is not None:
                if name not in self.group:
                    raise ValueError(f"store {self.path} has no {name} coordinate")
                zarr_array(self.group, name)[sl] = np.asarray(values)
        fault_point()  # tests kill here: data written, mark not yet
        marks[rows] = 1
        self._record()[:, j] = marks

    def complete(self) -> np.ndarray:
        """Boolean (model, chunk) matrix of finished blocks."""
        return self._marks((slice(None), slice(None))).astype(bool)

    def pending(self, rows: Sequence[int] | None = None) -> list[int]:
        """Chunks in which any of ``rows`` (default: all models) is not yet written."""
        done = self.complete()
        if rows is not None:
            done = done[list(rows)]
        return [int(j) for j in np.flatnonzero(~done.all(axis=0))]

    def invalidate(self, chunks: Sequence[int], rows: Sequence[int] | None = None) -> None:
        """Mark token ``chunks`` (for all models, or ``rows``) unwritten so the next resume rewrites them.

        Use it after :func:`bsig_array.io.perplexity_store.validate.validate_store` names a corrupt chunk.
        """
        rows = list(range(len(self.models))) if rows is None else list(rows)
        for j in chunks:
            self.chunk_slice(j)  # range check
            marks = self._marks((slice(None), slice(j, j + 1)))[:, 0].copy()
            marks[rows] = 0
            self._record()[:, j] = marks

    def add_models(self, names: Sequence[str]) -> list[int]:
        """Append new model rows (unwritten) and return their row indices."""
        new = [str(n) for n in names if str(n) not in self.models]
        if not new:
            return self.model_index(names)
        m_old = len(self.models)
        m_new = m_old + len(new)
        record = self._record()
        self.nll.resize((m_new, self.n_tokens))
        record.resize((m_new, self.n_chunks))
        model = zarr_array(self.group, "model")
        model.resize((m_new,))
        model[m_old:] = np.array(new, dtype=model.dtype)
        self.models = self.models + new
        self._consolidate()
        return self.model_index(names)


    def rebuild_progress(self) -> tuple[int, int]:
        """Write the progress record again from the chunks that verify; returns (marked, total) blocks.

        A (model, chunk) block is marked written when the chunk's ``nll`` file (and its ``token``
        file, if the store has that coordinate) exists and passes its checksum, and the model's row
        of it holds only finite values (unwritten rows are the NaN fill).  Everything else stays
        unmarked, so the next run of the writer rewrites it.  The record is created anew (a record
        whose metadata or shape is damaged too) and the consolidated metadata refreshed.
        """
        what, fix = f"store {self.path}", "rebuilding the progress record"
        done = np.zeros((len(self.models), self.n_chunks), dtype="uint8")
        token = zarr_array(self.group, "token") if "token" in self.group else None
        for j in range(self.n_chunks):
            sl = self.chunk_slice(j)
            region = (slice(0, len(self.models)), sl)
            if missing_chunks(self.nll, region) or (token is not None and missing_chunks(token, (sl,))):
                continue
            try:
                block = read_checked(self.nll, region, what=what, fix=fix)
                if token is not None:
                    read_checked(token, (sl,), what=what, fix=fix)
            except InputError:
                continue
            done[:, j] = np.isfinite(block).all(axis=1)
        with quiet_zarr():
            record = self.group.create_array(
                PROGRESS, shape=done.shape, chunks=(len(self.models), 1), dtype="uint8", fill_value=0,
                compressors=with_checksum(), dimension_names=("model", "chunk"), overwrite=True,
            )
            record[:, :] = done
        self.progress, self._damage = record, None
        self._consolidate()
        return int(done.sum()), int(done.size)


def _recovery(path: Location | str) -> str:
    return (
        f"rebuild it from the chunks that verify with 'bsig validate --repair-progress {path}' and run the "
        "same command again, or start over with --overwrite"
    )


def progress_damage(path: Location | str, problem: str) -> str:
    """The one line for a damaged progress record: what is wrong and the two ways to recover."""
    return f"store {path}: the progress record {PROGRESS} {problem}; {_recovery(path)}"


def progress_fix(path: Location | str) -> str:
    """The ``fix`` of a damaged chunk file of the progress record (for :func:`read_checked`)."""
    return f"the progress record {PROGRESS} is damaged: {_recovery(path)}"


def progress_record(group: zarr.Group, path: Location | str, shape: tuple[int, int] | None = None) -> zarr.Array:
    """The progress record of the store ``group`` at ``path``, its metadata checked (an array of
    ``shape``, 2-D, uint8); a damaged one is one :class:`InputError` naming it and the recovery."""
    try:
        record = group[PROGRESS]
    except Exception as exc:  # zarr raises several types for damaged metadata
        raise InputError(progress_damage(path, f"is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")) from None
    if not isinstance(record, zarr.Array) or record.ndim != 2 or record.dtype != np.dtype("uint8"):
        raise InputError(progress_damage(path, "is not a 2-D uint8 (model, chunk) array"))
    if shape is not None and tuple(record.shape) != tuple(shape):
        raise InputError(progress_damage(path, f"has shape {tuple(record.shape)}, expected (models, chunks) = {tuple(shape)}"))
    return record


def read_progress(record: zarr.Array, path: Location | str, key: tuple[slice, ...] = (slice(None), slice(None))) -> np.ndarray:
    """``record[key]`` through the checked read (checksums); unwritten record chunks are legitimately
    absent (all zero).  A damaged file, or a mark other than 0/1, is one :class:`InputError`."""
    marks = read_checked(record, key, what=f"store {path}", fix=progress_fix(path))
    if marks.size and int(marks.max()) > 1:
        raise InputError(progress_damage(path, f"holds the value {int(marks.max())} (marks are 0 or 1)"))
    return marks


def is_complete(path: str | os.PathLike | Location) -> bool:
    """True when every (model, chunk) block of the store is written (or it has no progress record)."""
    group = open_group(path)
    if PROGRESS not in group:
        return True
    return bool(read_progress(progress_record(group, as_location(path)), as_location(path)).all())
