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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from bsig_array.errors import BsigError, InputError
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.schema import (
    NLL,
    PROGRESS,
    TOKEN_COORDS,
    check_block,
    check_store_structure,
    check_token_ids,
)
from bsig_array.io.zarr_format import (
    array_stamp,
    check_all_chunks,
    chunk_exists,
    chunk_files,
    chunk_key,
    missing_chunks,
    normalize_region,
    open_group,
    quiet_zarr,
    read_checked,
    read_plain,
    require_zarr_v3,
    zarr_array,
)
from bsig_array.runtime.boundary import storage_failure

__all__ = ["GuardedArray", "chunk_files", "decode_whole_chunk", "open_store", "read_block", "unreadable_message"]


def open_store(
    path: str | os.PathLike | Location, *, require_complete: bool = True, check_values: bool | None = None
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
        Store directory or URL (``s3://bucket/pool.zarr``; bsig-written or plain ``xarray.Dataset.to_zarr``).
    require_complete
        Refuse a bsig store with unwritten (model, chunk) blocks.
    check_values
        Raise on NaN/inf in any block read (default: same as ``require_complete``; unwritten blocks
        of an incomplete store read as NaN).
    """
    path = as_location(path)
    if not path.exists():
        raise InputError(f"perplexity store {path} does not exist; check the path or create it with bsig synth/ingest")
    require_zarr_v3(path, "perplexity store")
    try:
        with quiet_zarr():
            # Plain xarray stores may lack consolidated metadata; reading them directly is fine.
            warnings.simplefilter("ignore", RuntimeWarning)
            ds = xr.open_zarr(path.zarr_store(read_only=True), consolidated=None, create_default_indexes=False, chunks={})
            group = open_group(path)
        if "model" in group:  # names are never the fill value '': a missing chunk is damage
            read_checked(zarr_array(group, "model"), (slice(None),), what=f"store {path}",
                         fix="the model names are damaged: re-create the store", require_chunks=True)
        check_store_structure(ds, str(path))
        # Small axis: load it and index it, so stages can .sel(model=...); the token axis stays lazy.
        ds = ds.assign_coords(model=("model", np.array([str(m) for m in ds["model"].values], dtype=object)))
    except BsigError:
        raise
    except Exception as exc:
        # A damaged chunk of a small array read at open (model names): name it.
        check_all_chunks(path, what=f"store {path}", fix="the store is damaged: re-create it", max_bytes=1 << 26)
        raise InputError(f"cannot open {path} as a Zarr store ({type(exc).__name__}: {exc})") from None
    if PROGRESS in ds:
        from bsig_array.io.perplexity_store.writer import progress_record, read_progress

        # Unwritten progress chunks are legitimately absent (all zero); damaged ones are named, with
        # the recovery (rebuild the record from the chunks that verify, or start over).
        done = read_progress(progress_record(group, path), path).astype(bool)
        if require_complete and not done.all():
            missing = int((~done).sum())
            raise InputError(
                f"store {path} is incomplete: {missing} of {done.size} (model, chunk) blocks unwritten; "
                f"{_completion_hint(ds.attrs)}"
            )
        ds = ds.drop_vars(PROGRESS)
    check = require_complete if check_values is None else check_values
    return _guard(ds, path, check)


def _completion_hint(attrs: Mapping[str, Any]) -> str:
    """How to finish an incomplete store, by the writer recorded in its ``source`` attribute."""
    source = str(attrs.get("source", ""))
    if source in ("paper-parquet", "wide-table"):  # bsig ingest cannot resume: it starts over
        return "bsig ingest does not resume; run it again with --overwrite to rebuild the store"
    if source == "bsig synth":
        return "run the same bsig synth command again: it writes only the unfinished chunks"
    return "run bsig perplexity again for each unfinished model: it writes only the missing chunks"


def _guard(ds: xr.Dataset, path: Location, check_values: bool) -> xr.Dataset:
    """Replace the dask graphs behind ``nll`` and the per-token coordinates by reads through
    :func:`read_block` (value checks on ``nll`` only)."""
    group = open_group(path)
    models = [str(m) for m in ds["model"].values]
    guarded = {}
    for name in (NLL, *TOKEN_COORDS):
        if name not in ds or name not in group or not isinstance(ds[name].data, da.Array):
            continue
        array = zarr_array(group, name)
        view = GuardedArray(array, str(path), models, check_values and name == NLL, require_chunks=check_values)
        chunks = ds[name].data.chunks
        stamp = array_stamp(path, name)
        token = tokenize(path.key(), name, array.shape, str(array.dtype), chunks, view.check_values, stamp)
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

    def __init__(
        self, array: zarr.Array, path: str, models: Sequence[str], check_values: bool, *, require_chunks: bool = True
    ) -> None:
        self.array = array
        self.path = path
        self.models = list(models)
        self.check_values = check_values
        self.require_chunks = require_chunks
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return read_block(
            self.array, key, path=self.path, models=self.models, check_values=self.check_values,
            require_chunks=self.require_chunks,
        )


def read_block(
    array: zarr.Array,
    key: Any,
    *,
    path: str | os.PathLike = "store",
    models: Sequence[str] | None = None,
    check_values: bool = True,
    require_chunks: bool = True,
    check_ids: bool = True,
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
        Also raise on NaN/inf and negative NLLs (see
        :func:`~bsig_array.io.perplexity_store.schema.check_block`); ``nll`` only.
    require_chunks
        Raise when a chunk file of ``nll`` (or of ``token``, wider than one token) is missing:
        zarr would read it as its fill value (NaN, or zeros).  Off for the unwritten blocks of an
        incomplete store.

    check_ids
        Check token ids (``token``): integral and non-negative
        (:func:`~bsig_array.io.perplexity_store.schema.check_token_ids`).

    Raises
    ------
    InputError
        When a chunk file is missing, truncated or corrupt (naming the file and its token range, and
        how to rewrite it), when ``check_values`` and the block holds NaN/inf or negative NLLs, or
        when token ids are fractional or negative.
    """
    region = normalize_region(key, tuple(array.shape))
    name = array.path.rsplit("/", 1)[-1]
    try:
        if require_chunks and name in (NLL, "token"):
            # A missing token chunk of one token may be the fill value 0 itself (zarr skips such chunks).
            missing = [(k, part) for k, part in missing_chunks(array, region)
                       if name == NLL or part[-1].stop - part[-1].start > 1]
            if missing:
                raise InputError(missing_message(array, missing, path))
        block = _read(array, region)
    except BsigError:
        raise
    except Exception as exc:  # codecs raise RuntimeError/ValueError/OSError/... for damaged chunk files
        # A store that stopped answering is not a damaged file: say so, without re-reading every file.
        failed = storage_failure(exc, f"store {path}")
        if failed is not None:
            raise failed from None
        raise InputError(unreadable_message(array, region, path, exc)) from None
    if check_values and name != "token":
        rows, cols = region
        names = list(models) if models is not None else [f"row {i}" for i in range(array.shape[0])]
        check_block(block, names[rows], cols.start, path=path)
    if check_ids and name == "token":
        check_token_ids(block, region[0].start, path=path)
    return block


_REWRITE = "(re-run the writer after 'bsig validate --deep --mark-pending', or re-create the store)"


def missing_message(array: zarr.Array, missing: Sequence[tuple[str, tuple[slice, ...]]], path: str | os.PathLike) -> str:
    """One line naming the first missing chunk file of a store array (zarr would read it as fill)."""
    key, part = missing[0]
    tokens = part[-1]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (
        f"store {path}: chunk file {key} (tokens {tokens.start}..{tokens.stop - 1}) is missing{more}; "
        f"the store is damaged: rewrite that chunk {_REWRITE}"
    )


def _read(array: zarr.Array, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]``: straight from the chunk file when it is one whole Blosc chunk, else via zarr
    (after checking the Blosc frames it will decode)."""
    block = decode_whole_chunk(array, region)
    if block is None:
        layout = _blosc_chunks(array)
        for key, nbytes in _blosc_files(array, region):
            header, size = _chunk_head(array, key)
            check_blosc_frame(header, nbytes, size=size - _CRC_BYTES * bool(layout and layout[1]))
        block = read_plain(array, region)  # a chunk replaced by a directory is an error, not fill
    return block


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
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"store {path}: chunk file {key} (tokens {tokens.start}..{tokens.stop - 1}) is unreadable{more} "
        f"({type(exc).__name__}: {detail}); the file is truncated or corrupt: rewrite that chunk {_REWRITE}"
    )


#: Bytes of a Blosc (1.x) frame header: version, flags, typesize, then uint32 nbytes, blocksize, cbytes.
_BLOSC_HEADER = 16
#: Bytes of the crc32c codec's trailer: the checksum of the bytes before it, uint32 little-endian.
_CRC_BYTES = 4


def check_crc32c(raw: np.ndarray) -> np.ndarray:
    """The chunk bytes before the crc32c trailer, after checking the trailer (zarr's ``crc32c``
    codec: crc32c of everything before it, 4 bytes little-endian).

    Raises
    ------
    ValueError
        When the file is shorter than the trailer or the checksum does not match (bytes changed).
    """
    import google_crc32c

    if raw.size < _CRC_BYTES:
        raise ValueError(f"{raw.size} bytes, shorter than its crc32c checksum")
    body = raw[:-_CRC_BYTES]
    stored = int.from_bytes(raw[-_CRC_BYTES:].tobytes(), "little")
    if google_crc32c.value(body) != stored:  # hardware crc32c: ~15 GB/s, a few % of the decode
        raise ValueError("crc32c checksum mismatch: the chunk's bytes changed after it was written")
    return body


def check_blosc_frame(header: bytes | np.ndarray, nbytes: int, *, size: int | None = None) -> None:
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
    decoded, _, compressed = struct.unpack("<III", bytes(header[4:_BLOSC_HEADER]))
    if compressed != size:
        raise ValueError(f"the Blosc header says {compressed} compressed bytes but the file has {size}")
    if decoded != nbytes:
        raise ValueError(f"the Blosc header says {decoded} decoded bytes but the chunk holds {nbytes}")


#: Bytes per ranged GET when a chunk is fetched from an object store: one chunk's ranges are read
#: concurrently, so a single large chunk is not bound by one connection's throughput.
RANGE_BYTES = 8 << 20


def _is_object_store(store: Any) -> bool:
    from zarr.storage import FsspecStore

    return isinstance(store, FsspecStore)


def _blosc_chunks(array: zarr.Array) -> tuple[tuple[int, ...], bool] | None:
    """Chunk shape of ``array`` and whether its chunks end in a crc32c checksum, if it is stored as
    bytes + Blosc (+ crc32c) in a local directory or an object store, readable as native
    little-endian numpy (the perplexity store's layout; stores written before the checksum lack it);
    ``None`` for any other codec chain (zstd, gzip, no compression, sharding, ...), which zarr
    decodes and checks itself."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
    from zarr.storage import LocalStore

    codecs: Sequence[Any] = getattr(array.metadata, "codecs", ())
    crc = len(codecs) == 3 and isinstance(codecs[-1], Crc32cCodec)
    if not (
        isinstance(array.store, LocalStore) or _is_object_store(array.store)
    ) or not (
        len(codecs) == 2 + crc and isinstance(codecs[0], BytesCodec)
        and isinstance(codecs[1], BloscCodec) and sys.byteorder == "little"
        and getattr(codecs[0].endian, "value", None) in (None, "little")
        and isinstance(array.dtype, np.dtype)
    ):
        return None
    shape = getattr(array.metadata.chunk_grid, "chunk_shape", None)
    return (tuple(shape), crc) if shape is not None and len(shape) == len(array.shape) else None


def _chunk_bytes(array: zarr.Array, key: str) -> bytes | None:
    """The whole chunk file ``key`` (``None`` when it was never written).

    From an object store the chunk is fetched as byte ranges of :data:`RANGE_BYTES`, concurrently.
    """
    from zarr.storage import LocalStore

    store = array.store
    if isinstance(store, LocalStore):
        try:
            return Path(store.root, key).read_bytes()
        except FileNotFoundError:
            return None
    from zarr.core.sync import sync

    return sync(_fetch(store, key))


async def _fetch(store: Any, key: str) -> bytes | None:
    import asyncio

    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    try:
        size = int(await store.getsize(key))
    except FileNotFoundError:
        return None
    if size <= RANGE_BYTES:
        whole = await store.get(key, proto)
        return None if whole is None else whole.to_bytes()
    starts = range(0, size, RANGE_BYTES)
    parts = await asyncio.gather(
        *(store.get(key, proto, byte_range=RangeByteRequest(a, min(a + RANGE_BYTES, size))) for a in starts)
    )
    if any(p is None for p in parts):
        return None
    return b"".join(p.to_bytes() for p in parts)


def _chunk_head(array: zarr.Array, key: str) -> tuple[bytes, int]:
    """The first :data:`_BLOSC_HEADER` bytes of chunk file ``key`` and its size."""
    from zarr.storage import LocalStore

    store = array.store
    if isinstance(store, LocalStore):
        with open(Path(store.root, key), "rb") as f:
            return f.read(_BLOSC_HEADER), os.fstat(f.fileno()).st_size
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    size = int(sync(store.getsize(key)))
    head = sync(store.get(key, default_buffer_prototype(), byte_range=RangeByteRequest(0, min(_BLOSC_HEADER, size))))
    return (b"" if head is None else head.to_bytes()), size


def _blosc_files(array: zarr.Array, region: tuple[slice, ...]) -> Iterator[tuple[str, int]]:
    """Existing chunk files of a Blosc ``array`` overlapping ``region`` (keys), with their decoded size.

    On an object store only chunks without a crc32c trailer are listed: zarr checks the trailer
    before Blosc sees the bytes, so a truncated chunk fails there, without a request per chunk here.
    """
    layout = _blosc_chunks(array)
    if layout is None:
        return
    shape, crc = layout
    if crc and _is_object_store(array.store):
        return
    nbytes = int(np.prod(shape)) * array.dtype.itemsize
    ranges = [range(k.start // g, -(-k.stop // g)) for k, g in zip(region, shape)]
    for index in itertools.product(*ranges):
        key = chunk_key(array, index)
        if chunk_exists(array, key):  # never written: zarr fills it
            yield key, nbytes


def decode_whole_chunk(array: zarr.Array, region: tuple[slice, ...]) -> np.ndarray | None:
    """``array[region]`` decoded straight from its chunk file when ``region`` is exactly one whole
    chunk (all rows) of a 2-D array encoded as bytes + Blosc (the perplexity store's layout, any
    Blosc compressor and shuffle), in a local directory or an object store; ``None`` otherwise
    (read it with zarr).

    zarr's own read holds the compressed bytes, the decoded chunk and a copy into the output
    (~2.8x the raw chunk); decompressing straight into the output needs ~1.9x, and skips a copy.
    From an object store the chunk's bytes arrive as concurrent byte ranges (:func:`_chunk_bytes`)
    and are decoded here, in the task (the worker) that reads them.
    A chunk with a crc32c trailer is checked against it first (:func:`check_crc32c`).
    A damaged file raises :class:`ValueError` (:func:`check_crc32c`, :func:`check_blosc_frame`) or
    whatever Blosc raises; :func:`read_block` names the file.  An object store that stops answering
    raises the client's timeout or connection error (after ``BSIG_STORAGE_RETRIES`` retries, see
    :mod:`bsig_array.io.location`), which :func:`read_block` turns into one line naming the store.
    """
    import numcodecs.blosc

    layout = _blosc_chunks(array)
    if layout is None or len(layout[0]) != 2:
        return None
    shape, crc = layout
    rows, cols = region
    n_rows, width = shape
    start, stop = cols.start, cols.stop
    if (
        n_rows != array.shape[0] or (rows.start, rows.stop) != (0, n_rows)
        or start % width or stop != min(start + width, array.shape[1])
    ):
        return None
    data = _chunk_bytes(array, chunk_key(array, (0, start // width)))
    if data is None:  # never written: zarr fills it (read_block names it when it must exist)
        return None
    raw = np.frombuffer(data, dtype=np.uint8)
    assert isinstance(array.dtype, np.dtype)  # _blosc_chunks checked it
    out = np.empty((n_rows, width), dtype=array.dtype)  # edge chunks are stored full size
    frame = check_crc32c(raw) if crc else raw
    check_blosc_frame(frame, out.nbytes)
    numcodecs.blosc.decompress(frame, out)
    return out[:, : stop - start]
