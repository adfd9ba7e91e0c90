"""The perplexity store: a Zarr v3 group holding ``nll (model, token)`` (DESIGN §3).

Layout of a store written by :func:`create_store`::

    nll       (model, token)  float32|float16   chunks (all models, chunk_tokens), Blosc-zstd
    model     (model,)        str               coordinate
    token     (token,)        int64             feature id (coordinate, written chunk by chunk)
    doc       (token,)        int64             source document of each feature      (optional)
    piece     (token,)        int32             piece index of the target in its doc (optional)
    _complete (model, chunk)  uint8             progress record: 1 = block written

Every write covers whole token chunks (one writer per chunk), so a writer killed at any point leaves
at most the chunks it was writing unmarked, and :meth:`StoreWriter.pending` hands exactly those back
on resume.  The store carries no default pandas index on ``token``: :func:`open_store` opens it with
``create_default_indexes=False`` so a 1e8-token axis never materialises in memory.

A store written by plain ``xarray.Dataset.to_zarr`` with just ``nll``, ``model`` and ``token`` is
accepted too; it simply has no progress record (it is complete by construction).
"""

from __future__ import annotations

import itertools
import os
import warnings
from contextlib import contextmanager
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
from dask.base import tokenize
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from bsig_array.errors import BsigError

SCHEMA_VERSION = 1
NLL = "nll"
PROGRESS = "_complete"
DEFAULT_CHUNK_TOKENS = 1 << 20
FLOAT_DTYPES = ("float16", "float32", "float64")


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (we rely on it knowingly)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def default_chunk_tokens(n_tokens: int, chunk_tokens: int | None = None) -> int:
    """Tokens per chunk: ``chunk_tokens`` if given, else 2**20 (DESIGN: ~1–4 M), capped at the axis."""
    size = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else int(chunk_tokens)
    if size < 1:
        raise BsigError(f"chunk size must be positive, got {size}; pass a positive --chunk-tokens")
    return max(1, min(size, int(n_tokens)))


def _compressor() -> BloscCodec:
    # zstd + byte shuffle: NLLs of neighbouring tokens share exponents, shuffle groups those bytes.
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def create_store(
    path: str | os.PathLike,
    models: Sequence[str],
    n_tokens: int,
    *,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
    with_doc_piece: bool = True,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> "StoreWriter":
    """Create an empty perplexity store and return a writer for it.

    Only metadata is written here; data arrives chunk by chunk through :meth:`StoreWriter.write_chunk`.

    Parameters
    ----------
    path
        Directory of the Zarr v3 store to create.
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
    path = Path(path)
    if path.exists() and not overwrite:
        raise BsigError(f"store {path} already exists; pass --overwrite to replace it or pick another path")
    models = [str(m) for m in models]
    if len(set(models)) != len(models):
        dup = sorted({m for m in models if models.count(m) > 1})
        raise BsigError(f"duplicate model names {dup}; give every model a unique name")
    if dtype not in ("float16", "float32"):
        raise BsigError(f"unsupported store dtype {dtype!r}; use float32 or float16")
    n_tokens = int(n_tokens)
    if n_tokens < 1:
        raise BsigError(f"a store needs at least one token, got {n_tokens}")
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
        NLL: {"chunks": (m, chunk), "compressors": [_compressor()], "_FillValue": np.nan},
        "token": {"chunks": (chunk,), "compressors": [_compressor()]},
        # One progress chunk per token chunk: its writer owns it, so marks never race.
        PROGRESS: {"chunks": (m, 1)},
    }
    if with_doc_piece:
        encoding["doc"] = {"chunks": (chunk,), "compressors": [_compressor()]}
        encoding["piece"] = {"chunks": (chunk,), "compressors": [_compressor()]}
    with quiet_zarr():
        ds.to_zarr(path, mode="w", compute=False, encoding=encoding, zarr_format=3, consolidated=True)
    return StoreWriter(path)


class StoreWriter:
    """Writes whole token chunks of a store and records which (model, chunk) blocks are complete.

    Parameters
    ----------
    path
        An existing store created by :func:`create_store`.

    Notes
    -----
    Exactly one process may write a given token chunk at a time (a chunk spans all models, so a
    partial-model write is a read-modify-write of that chunk).  Different chunks may be written
    concurrently by different processes.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            with quiet_zarr():
                self.group = zarr.open_group(self.path, mode="r+", zarr_format=3)
        except Exception as exc:  # zarr raises several types for a missing/broken group
            raise BsigError(f"cannot open store {self.path} for writing ({exc}); create it first") from None
        if NLL not in self.group or PROGRESS not in self.group:
            raise BsigError(f"{self.path} is not a writable bsig store (no nll or progress record)")
        self.nll = self.group[NLL]
        self.progress = self.group[PROGRESS]
        self.models = [str(m) for m in self.group["model"][:]]
        self.n_tokens = int(self.nll.shape[1])
        self.chunk_tokens = int(self.nll.chunks[1])
        self.n_chunks = -(-self.n_tokens // self.chunk_tokens)

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
        """Row of each model name; unknown names are a :class:`BsigError`."""
        lookup = {m: i for i, m in enumerate(self.models)}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise BsigError(f"models {missing} are not in store {self.path} (it has {self.models})")
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
            block = self.nll[:, sl]
            block[rows] = nll
            self.nll[:, sl] = block
        marks = self.progress[:, j]
        if token is None and "token" in self.group and not marks.any():
            # First write of this chunk without explicit ids: ids default to positions, so a store
            # never carries the placeholder zeros as feature ids.
            token = np.arange(sl.start, sl.stop, dtype=np.int64)
        for name, values in (("token", token), ("doc", doc), ("piece", piece)):
            if values is not None:
                if name not in self.group:
                    raise ValueError(f"store {self.path} has no {name} coordinate")
                self.group[name][sl] = np.asarray(values)
        marks[rows] = 1
        self.progress[:, j] = marks

    def complete(self) -> np.ndarray:
        """Boolean (model, chunk) matrix of finished blocks."""
        return np.asarray(self.progress[:, :], dtype=bool)

    def pending(self, rows: Sequence[int] | None = None) -> list[int]:
        """Chunks in which any of ``rows`` (default: all models) is not yet written."""
        done = self.complete()
        if rows is not None:
            done = done[list(rows)]
        return [int(j) for j in np.flatnonzero(~done.all(axis=0))]

    def invalidate(self, chunks: Sequence[int], rows: Sequence[int] | None = None) -> None:
        """Mark token ``chunks`` (for all models, or ``rows``) unwritten so the next resume rewrites them.

        Use it after :func:`bsig_array.validation.validate_store` names a corrupt chunk.
        """
        rows = list(range(len(self.models))) if rows is None else list(rows)
        for j in chunks:
            self.chunk_slice(j)  # range check
            marks = self.progress[:, j]
            marks[rows] = 0
            self.progress[:, j] = marks

    def add_models(self, names: Sequence[str]) -> list[int]:
        """Append new model rows (unwritten) and return their row indices."""
        new = [str(n) for n in names if str(n) not in self.models]
        if not new:
            return self.model_index(names)
        m_old = len(self.models)
        m_new = m_old + len(new)
        self.nll.resize((m_new, self.n_tokens))
        self.progress.resize((m_new, self.n_chunks))
        model = self.group["model"]
        model.resize((m_new,))
        model[m_old:] = np.array(new, dtype=model.dtype)
        self.models = self.models + new
        self._consolidate()
        return self.model_index(names)


def is_complete(path: str | os.PathLike) -> bool:
    """True when every (model, chunk) block of the store is written (or it has no progress record)."""
    with quiet_zarr():
        group = zarr.open_group(Path(path), mode="r", zarr_format=3)
    if PROGRESS not in group:
        return True
    return bool(np.asarray(group[PROGRESS][:, :]).all())


def open_store(
    path: str | os.PathLike, *, require_complete: bool = True, check_values: bool | None = None
) -> xr.Dataset:
    """Open a perplexity store as a dask-backed :class:`xarray.Dataset` and check its structure.

    Structure is checked here (cheap).  Values are checked lazily, block by block, whenever a stage
    computes ``nll``: every dask block is read through :func:`read_block`, so a truncated or corrupt
    chunk file becomes a one-line :class:`BsigError` naming the file, and (with ``check_values``) a
    NaN/inf becomes one naming the count, the first model and the token position.  Stages get this
    for free by computing ``ds.nll`` (``.data.blocks``, ``map_blocks``, ``.values``, ...), on the
    threaded scheduler or on dask.distributed.

    Parameters
    ----------
    path
        Store directory (bsig-written or plain ``xarray.Dataset.to_zarr``).
    require_complete
        Refuse a bsig store with unwritten (model, chunk) blocks.
    check_values
        Raise on NaN/inf in any block read (default: same as ``require_complete``; unwritten blocks
        of an incomplete store read as NaN).
    """
    from bsig_array.validation import check_store_structure

    path = Path(path)
    if not path.exists():
        raise BsigError(f"perplexity store {path} does not exist; check the path or create it with bsig synth/ingest")
    try:
        with quiet_zarr():
            # Plain xarray stores may lack consolidated metadata; reading them directly is fine.
            warnings.simplefilter("ignore", RuntimeWarning)
            ds = xr.open_zarr(path, consolidated=None, create_default_indexes=False, chunks={})
    except Exception as exc:
        raise BsigError(f"cannot open {path} as a Zarr store ({type(exc).__name__}: {exc})") from None
    check_store_structure(ds, path)
    # Small axis: load it and index it, so stages can .sel(model=...); the token axis stays lazy.
    ds = ds.assign_coords(model=("model", np.array([str(m) for m in ds["model"].values], dtype=object)))
    if PROGRESS in ds:
        try:
            done = np.asarray(ds[PROGRESS].values, dtype=bool)
        except Exception as exc:
            raise BsigError(
                f"store {path}: the progress record {PROGRESS} is unreadable ({type(exc).__name__}: {exc}); "
                "the store is damaged: re-create it"
            ) from None
        if require_complete and not done.all():
            missing = int((~done).sum())
            raise BsigError(
                f"store {path} is incomplete: {missing} of {done.size} (model, chunk) blocks unwritten; "
                "resume the writer (bsig perplexity / ingest) before using it"
            )
        ds = ds.drop_vars(PROGRESS)
    check = require_complete if check_values is None else check_values
    return _guard(ds, path, check)


def _guard(ds: xr.Dataset, path: Path, check_values: bool) -> xr.Dataset:
    """Replace the dask graphs behind ``nll`` and the per-token coordinates by reads through
    :func:`read_block` (value checks on ``nll`` only)."""
    with quiet_zarr():
        group = zarr.open_group(path, mode="r", zarr_format=3)
    models = [str(m) for m in ds["model"].values]
    guarded = {}
    for name in (NLL, "token", "doc", "piece"):
        if name not in ds or name not in group or not isinstance(ds[name].data, da.Array):
            continue
        array = group[name]
        view = GuardedArray(array, str(path), models, check_values and name == NLL)
        chunks = ds[name].data.chunks
        stamp = os.stat(path / name / "zarr.json").st_mtime_ns
        token = tokenize(str(path.resolve()), name, array.shape, str(array.dtype), chunks, view.check_values, stamp)
        data = da.from_array(
            view, chunks=chunks, name=f"bsig-{name}-{token}", lock=False, fancy=False, asarray=False,
            meta=np.empty((0,) * array.ndim, dtype=array.dtype),
        )
        guarded[name] = ds[name].variable.copy(data=data)
    coords = {k: v for k, v in guarded.items() if k != NLL}
    if coords:  # without indexes: a dimension coordinate would otherwise get a pandas index
        ds = ds.assign_coords(xr.Coordinates(coords, indexes={}))
    return ds.assign({NLL: guarded[NLL]}) if NLL in guarded else ds


class GuardedArray:
    """Array-like view of a store array whose reads go through :func:`read_block`.

    Picklable (it holds the zarr array), so dask.distributed workers can read through it.
    """

    def __init__(self, array: zarr.Array, path: str, models: Sequence[str], check_values: bool) -> None:
        self.array = array
        self.path = path
        self.models = list(models)
        self.check_values = check_values
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return read_block(self.array, key, path=self.path, models=self.models, check_values=self.check_values)


def read_block(
    array: zarr.Array,
    key: Any,
    *,
    path: str | os.PathLike = "store",
    models: Sequence[str] | None = None,
    check_values: bool = True,
) -> np.ndarray:
    """Read ``array[key]`` of a store array, turning storage and value problems into :class:`BsigError`.

    This is the one place stages read NLL values: :func:`open_store` already routes every dask block
    through it; call it directly when reading the zarr array by hand, e.g.
    ``read_block(zarr.open_group(p)["nll"], (slice(None), slice(a, b)), path=p, models=names)``.

    Parameters
    ----------
    array
        The zarr ``nll`` array (model, token), or a per-token coordinate array (token,).
    key
        Contiguous slices, one per dimension; for ``nll`` one token slice means all models.
    path
        Store path, for messages.
    models
        Model names in store order, for messages (default: row numbers).
    check_values
        Also raise on NaN/inf (see :func:`bsig_array.validation.check_block`); ``nll`` only.

    Raises
    ------
    BsigError
        When a chunk file is truncated or corrupt (naming the file and its token range, and how to
        rewrite it), or when ``check_values`` and the block holds NaN/inf.
    """
    from bsig_array.validation import check_block

    region = _normalize_key(key, array.shape)
    try:
        block = np.asarray(array[region])
    except BsigError:
        raise
    except Exception as exc:  # codecs raise RuntimeError/ValueError/... for damaged chunk bytes
        raise BsigError(unreadable_message(array, region, path, exc)) from None
    if check_values:
        rows, cols = region
        names = list(models) if models is not None else [f"row {i}" for i in range(array.shape[0])]
        check_block(block, names[rows], cols.start, path=path)
    return block


def _normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    if not isinstance(key, tuple):
        key = (slice(None), key) if len(shape) == 2 else (key,)
    if len(key) != len(shape) or not all(isinstance(k, slice) for k in key):
        raise TypeError(f"read_block takes one slice per dimension, got {key!r}")
    region = tuple(slice(*k.indices(n)) for k, n in zip(key, shape))
    if any(k.step != 1 for k in region):
        raise TypeError("read_block takes contiguous slices only")
    return region


def chunk_files(array: zarr.Array, region: tuple[slice, ...]) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """Storage key and region of every chunk (or shard) file of ``array`` overlapping ``region``."""
    grid = array.shards or array.chunks
    ranges = [range(k.start // g, -(-k.stop // g)) for k, g in zip(region, grid)]
    for index in itertools.product(*ranges):
        part = tuple(slice(i * g, min((i + 1) * g, n)) for i, g, n in zip(index, grid, array.shape))
        key = array.metadata.encode_chunk_key(index)
        yield (f"{array.path}/{key}" if array.path else key), part


def unreadable_message(array: zarr.Array, region: tuple[slice, ...], path: str | os.PathLike, exc: Exception) -> str:
    """One-line message naming the damaged chunk file(s) in the region (re-read one by one to find them)."""
    bad = []
    for key, part in chunk_files(array, region):
        try:
            array[part]
        except Exception:
            bad.append((key, part[-1]))
    if not bad:
        # The block read failed but every file re-reads (decompressing a truncated file can fail
        # only sometimes): the culprit is still among the block's files, so name them.
        bad = [(key, part[-1]) for key, part in chunk_files(array, region)]
        bad = bad or [(f"{array.path or 'array'} region", region[-1])]
    key, tokens = bad[0]
    more = f" (and {len(bad) - 1} more in this block)" if len(bad) > 1 else ""
    return (
        f"store {path}: chunk file {key} (tokens {tokens.start}..{tokens.stop - 1}) is unreadable{more} "
        f"({type(exc).__name__}: {exc}); the file is truncated or corrupt: rewrite that chunk "
        "(re-run the writer after 'bsig validate --deep --mark-pending', or re-create the store)"
    )
