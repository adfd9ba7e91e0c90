"""The one read path of the perplexity store: open it, and read any block of it checked.

:func:`open_store` checks the structure and hands back a dask-backed dataset whose blocks are read
through :func:`read_block`; stages that read chunks themselves (:mod:`.chunks`) call
:func:`read_block` too.  So every read of NLL values, whatever the stage or scheduler, gets the same
guarantees: a truncated, corrupt or missing chunk file is one :class:`~bsig_array.errors.InputError`
naming the file and its token range, and (with ``check_values``) a NaN/inf is one naming the model
and token position.  Whole chunks of a local Blosc store are decoded straight into their output
(:func:`decode_whole_chunk`), the fast path of the screen.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from bsig_array.errors import BsigError, InputError
from bsig_array.io.perplexity_store.schema import NLL, PROGRESS, TOKEN_COORDS, check_block, check_store_structure
from bsig_array.io.zarr_format import quiet_zarr, zarr_array


def open_store(
    path: str | os.PathLike, *, require_complete: bool = True, check_values: bool | None = None
) -> xr.Dataset:
    """Open a perplexity store as a dask-backed :class:`xarray.Dataset` and check its structure.

    Structure is checked here (cheap).  Values are checked lazily, block by block, whenever a stage
    computes ``nll``: every dask block is read through :func:`read_block`, so a truncated or corrupt
    chunk file becomes a one-line :class:`~bsig_array.errors.InputError` naming the file, and (with ``check_values``) a
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
    path = Path(path)
    if not path.exists():
        raise InputError(f"perplexity store {path} does not exist; check the path or create it with bsig synth/ingest")
    try:
        with quiet_zarr():
            # Plain xarray stores may lack consolidated metadata; reading them directly is fine.
            warnings.simplefilter("ignore", RuntimeWarning)
            ds = xr.open_zarr(path, consolidated=None, create_default_indexes=False, chunks={})
    except Exception as exc:
        raise InputError(f"cannot open {path} as a Zarr store ({type(exc).__name__}: {exc})") from None
    check_store_structure(ds, path)
    # Small axis: load it and index it, so stages can .sel(model=...); the token axis stays lazy.
    ds = ds.assign_coords(model=("model", np.array([str(m) for m in ds["model"].values], dtype=object)))
    if PROGRESS in ds:
        try:
            done = np.asarray(ds[PROGRESS].values, dtype=bool)
        except Exception as exc:
            raise InputError(
                f"store {path}: the progress record {PROGRESS} is unreadable ({type(exc).__name__}: {exc}); "
                "the store is damaged: re-create it"
            ) from None
        if require_complete and not done.all():
            missing = int((~done).sum())
            raise InputError(
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
    for name in (NLL, *TOKEN_COORDS):
        if name not in ds or name not in group or not isinstance(ds[name].data, da.Array):
            continue
        array = zarr_array(group, name)
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
    """Read ``array[key]`` of a store array, turning storage and value problems into :class:`~bsig_array.errors.InputError`.

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
        Also raise on NaN/inf (see :func:`~bsig_array.io.perplexity_store.schema.check_block`); ``nll`` only.

    Raises
    ------
    InputError
        When a chunk file is truncated or corrupt (naming the file and its token range, and how to
        rewrite it), or when ``check_values`` and the block holds NaN/inf.
    """
    region = _normalize_key(key, array.shape)
    try:
        block = _read(array, region)
    except BsigError:
        raise
    except Exception as exc:  # codecs raise RuntimeError/ValueError/OSError/... for damaged chunk files
        raise InputError(unreadable_message(array, region, path, exc)) from None
    if check_values:
        rows, cols = region
        names = list(models) if models is not None else [f"row {i}" for i in range(array.shape[0])]
        check_block(block, names[rows], cols.start, path=path)
    return block


def _read(array: zarr.Array, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]``: straight from the chunk file when it is one whole Blosc chunk, else via zarr
    (after checking the Blosc frames it will decode)."""
    block = decode_whole_chunk(array, region)
    if block is None:
        for file, nbytes in _blosc_files(array, region):
            with open(file, "rb") as f:
                check_blosc_frame(f.read(_BLOSC_HEADER), nbytes, size=os.fstat(f.fileno()).st_size)
        block = np.asarray(array[region])
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
            _read(array, part)
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


#: Bytes of a Blosc (1.x) frame header: version, flags, typesize, then uint32 nbytes, blocksize, cbytes.
_BLOSC_HEADER = 16


def check_blosc_frame(header: bytes, nbytes: int, *, size: int | None = None) -> None:
    """Raise unless a chunk file is one whole Blosc frame that decodes to ``nbytes`` bytes.

    Blosc trusts the sizes in its header: decoding a truncated frame reads past the end of the
    buffer (garbage, or a crash) instead of failing, so every Blosc chunk is checked before it is
    decoded.  Within a frame whose size is right, Blosc bounds-checks its blocks itself.

    Parameters
    ----------
    header
        The file's first bytes (at least the 16-byte header), or the whole file.
    nbytes
        Size of the decoded chunk (all of it: zarr stores edge chunks full size).
    size
        Size of the file (default: ``len(header)``, i.e. ``header`` is the whole file).

    Raises
    ------
    ValueError
        When the file is shorter than a header, or its size or decoded size disagree with the header.
    """
    size = len(header) if size is None else size
    if size < _BLOSC_HEADER:
        raise ValueError(f"{size} bytes, shorter than a Blosc header ({_BLOSC_HEADER} bytes)")
    decoded, _, compressed = struct.unpack_from("<III", header, 4)
    if compressed != size:
        raise ValueError(f"the Blosc header says {compressed} compressed bytes but the file has {size}")
    if decoded != nbytes:
        raise ValueError(f"the Blosc header says {decoded} decoded bytes but the chunk holds {nbytes}")


def _blosc_chunks(array: zarr.Array) -> tuple[int, ...] | None:
    """Chunk shape of ``array`` if it is stored as bytes + Blosc in a local store, readable as
    native little-endian numpy (the perplexity store's layout); ``None`` for any other codec chain
    (zstd, gzip, no compression, sharding, ...), which zarr decodes and checks itself."""
    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.storage import LocalStore

    codecs: Sequence[Any] = getattr(array.metadata, "codecs", ())
    if not (
        isinstance(array.store, LocalStore) and len(codecs) == 2 and isinstance(codecs[0], BytesCodec)
        and isinstance(codecs[1], BloscCodec) and sys.byteorder == "little"
        and getattr(codecs[0].endian, "value", None) in (None, "little")
        and isinstance(array.dtype, np.dtype)
    ):
        return None
    shape = getattr(array.metadata.chunk_grid, "chunk_shape", None)
    return tuple(shape) if shape is not None and len(shape) == len(array.shape) else None


def _chunk_path(array: zarr.Array, index: tuple[int, ...]) -> Path:
    """File of chunk ``index`` of an array in a local store (one :func:`_blosc_chunks` accepted)."""
    from zarr.storage import LocalStore

    store = array.store
    assert isinstance(store, LocalStore)
    return Path(store.root, array.store_path.path, array.metadata.encode_chunk_key(index))


def _blosc_files(array: zarr.Array, region: tuple[slice, ...]) -> Iterator[tuple[Path, int]]:
    """Existing chunk files of a local Blosc ``array`` overlapping ``region``, with their decoded size."""
    shape = _blosc_chunks(array)
    if shape is None:
        return
    nbytes = int(np.prod(shape)) * array.dtype.itemsize
    ranges = [range(k.start // g, -(-k.stop // g)) for k, g in zip(region, shape)]
    for index in itertools.product(*ranges):
        file = _chunk_path(array, index)
        if file.exists():  # never written: zarr fills it
            yield file, nbytes


def decode_whole_chunk(array: zarr.Array, region: tuple[slice, ...]) -> np.ndarray | None:
    """``array[region]`` decoded straight from its chunk file when ``region`` is exactly one whole
    chunk (all rows) of a 2-D array in a local store encoded as bytes + Blosc (the perplexity
    store's layout, any Blosc compressor and shuffle); ``None`` otherwise (read it with zarr).

    zarr's own read holds the compressed bytes, the decoded chunk and a copy into the output
    (~2.8x the raw chunk); decompressing straight into the output needs ~1.9x, and skips a copy.
    A damaged file raises :class:`ValueError` (:func:`check_blosc_frame`) or whatever Blosc raises;
    :func:`read_block` names the file.
    """
    import numcodecs.blosc

    shape = _blosc_chunks(array)
    if shape is None or len(shape) != 2:
        return None
    rows, cols = region
    n_rows, width = shape
    start, stop = cols.start, cols.stop
    if (
        n_rows != array.shape[0] or (rows.start, rows.stop) != (0, n_rows)
        or start % width or stop != min(start + width, array.shape[1])
    ):
        return None
    try:
        raw = _chunk_path(array, (0, start // width)).read_bytes()
    except FileNotFoundError:  # never written: zarr fills it
        return None
    assert isinstance(array.dtype, np.dtype)  # _blosc_chunks checked it
    out = np.empty((n_rows, width), dtype=array.dtype)  # edge chunks are stored full size
    check_blosc_frame(raw, out.nbytes)
    numcodecs.blosc.decompress(raw, out)
    return out[:, : stop - start]
