"""How bsig writes and opens Zarr v3 stores: one place for the format choices all artifacts share.

- Zarr format 3 with consolidated metadata (one read to open a store), refreshed after any change
  of shapes or attributes, so plain ``xr.open_zarr(path)`` opens every bsig store without a warning
  (``tests/test_open_warnings.py``).  zarr warns that consolidated metadata is not yet part of the v3
  specification; bsig relies on it knowingly, so :func:`quiet_zarr` silences exactly that notice.
- Text as variable-length strings (object dtype): Zarr v3 has a spec for those, not for numpy's
  fixed-width unicode.
- Every chunk ends in a crc32c checksum (zarr's ``crc32c`` codec after the compressor), so a flipped
  byte is a read error, not a wrong value.  Stores written before carry no checksum and still read.
- One checked read path for every stored array (:func:`read_checked`, :class:`CheckedArray`): a
  damaged, truncated or missing chunk file is one :class:`~bsig_array.errors.InputError` naming it.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.location import Location, as_location

if TYPE_CHECKING:
    import zarr

_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part"


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (relied on knowingly).

    The filter is installed once and stays: :func:`warnings.catch_warnings` is not thread-safe, and
    bsig consolidates from several threads (dask workers, the screen's write pool, zarr's I/O loop),
    where one context's exit restores the filters under another's feet and lets the notice through
    on stderr.  Only this exact message is ignored; every other warning is untouched.
    """
    # Re-added on every use (idempotent: the same filter is moved to the front, not duplicated), so a
    # caller's own catch_warnings (pytest wraps every test in one) cannot drop it for good.
    warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
    yield


def zarr_store(where: str | os.PathLike | Location, *, read_only: bool = True) -> Any:
    """What zarr and xarray open for ``where``: a local path, or an fsspec-backed store for a URL."""
    return as_location(where).zarr_store(read_only=read_only)


def open_group(where: str | os.PathLike | Location, mode: str = "r") -> zarr.Group:
    """The Zarr v3 group at ``where`` (a local path or a URL), opened with ``mode``."""
    import zarr

    with quiet_zarr():
        return zarr.open_group(zarr_store(where, read_only=mode == "r"), mode=mode, zarr_format=3)  # type: ignore[arg-type]


def array_stamp(where: str | os.PathLike | Location, name: str) -> str:
    """A token that changes when array ``name`` of the store at ``where`` is rewritten (for dask names)."""
    return as_location(where).child(name, "zarr.json").stamp()


def zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group`` (a group there is a malformed store: :class:`InputError`)."""
    import zarr

    member = group[name]
    if not isinstance(member, zarr.Array):
        raise InputError(f"{group.store_path}: {name!r} is a group, not an array; the store is malformed: re-create it")
    return member


def zarr_v2_message(path: str | os.PathLike | Location, what: str) -> str | None:
    """The one-line refusal of a Zarr v2 store at ``path`` (``None`` if it is not one)."""
    path = as_location(path)
    if path.child("zarr.json").exists() or not any(path.child(f).exists() for f in (".zgroup", ".zarray", ".zmetadata")):
        return None
    return (
        f"{what} {path} is a Zarr v2 store; bsig reads Zarr v3 stores; convert it with "
        f"python -c \"import xarray as xr; xr.open_zarr('{path}').to_zarr('NEW.zarr', zarr_format=3)\" "
        "and pass NEW.zarr"
    )


def require_zarr_v3(path: str | os.PathLike | Location, what: str) -> None:
    """Raise :class:`InputError` when ``path`` is a Zarr v2 store (zarr would open it, then fail later),
    or an object-store prefix without its root ``zarr.json`` (the commit of a bsig upload)."""
    message = zarr_v2_message(path, what)
    if message:
        raise InputError(message)
    loc = as_location(path)
    if loc.is_remote and not loc.child("zarr.json").exists() and loc.is_dir():
        raise InputError(
            f"{what} {loc} has no root zarr.json: it is incomplete (an interrupted bsig write publishes that "
            "file last) or not a Zarr v3 store; write it again (bsig replaces an incomplete output)"
        )


def checksum_codec() -> Any:
    """The crc32c codec bsig appends to every codec chain (4 bytes, little-endian, after the data)."""
    from zarr.codecs import Crc32cCodec

    return Crc32cCodec()


def with_checksum(compressors: Sequence[Any] | None = None) -> list[Any]:
    """``compressors`` (default: zarr's zstd level 0) followed by the crc32c checksum codec."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    chain = [ZstdCodec(level=0, checksum=False)] if compressors is None else list(compressors)
    return chain if any(isinstance(c, Crc32cCodec) for c in chain) else [*chain, checksum_codec()]


def chunk_files(array: zarr.Array, region: tuple[slice, ...]) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """Storage key and region of every chunk (or shard) file of ``array`` overlapping ``region``."""
    grid = array.shards or array.chunks
    ranges = [range(k.start // g, -(-k.stop // g)) for k, g in zip(region, grid)]
    for index in itertools.product(*ranges):
        part = tuple(slice(i * g, min((i + 1) * g, n)) for i, g, n in zip(index, grid, array.shape))
        yield chunk_key(array, index), part


def chunk_key(array: zarr.Array, index: tuple[int, ...]) -> str:
    """Storage key (relative to the store root) of chunk (or shard) ``index`` of ``array``."""
    key = array.metadata.encode_chunk_key(index)
    return f"{array.path}/{key}" if array.path else key


def chunk_exists(array: zarr.Array, key: str) -> bool:
    """Whether chunk file ``key`` of ``array`` exists (on an object store: one HEAD request)."""
    root = local_root(array)
    if root is not None:
        return (root / key).exists()
    from zarr.core.sync import sync

    return bool(sync(array.store.exists(key)))


def local_root(array: zarr.Array) -> Path | None:
    """Directory of the store holding ``array`` when it is a local store, else ``None``."""
    from zarr.storage import LocalStore

    return Path(array.store.root) if isinstance(array.store, LocalStore) else None


def missing_chunks(array: zarr.Array, region: tuple[slice, ...]) -> list[tuple[str, tuple[slice, ...]]]:
    """Chunk files of ``array`` in ``region`` that do not exist (zarr reads them as fill).

    On an object store that is one HEAD request per chunk, negligible next to a chunk's bytes.
    """
    return [(key, part) for key, part in chunk_files(array, region) if not chunk_exists(array, key)]


def normalize_region(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``key`` as one contiguous slice per dimension (a single slice of a 2-D array: all rows)."""
    if not isinstance(key, tuple):
        key = (slice(None), key) if len(shape) == 2 else (key,)
    if len(key) != len(shape) or not all(isinstance(k, slice) for k in key):
        raise TypeError(f"a checked read takes one slice per dimension, got {key!r}")
    region = tuple(slice(*k.indices(n)) for k, n in zip(key, shape))
    if any(k.step != 1 for k in region):
        raise TypeError("a checked read takes contiguous slices only")
    return region


def _where(key: str, part: tuple[slice, ...]) -> str:
    span = ", ".join(f"{p.start}..{p.stop - 1}" for p in part)
    return f"chunk file {key} ({'positions' if len(part) == 1 else 'region'} {span})"


def read_plain(array: zarr.Array, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]``, refusing a chunk file replaced by a directory (zarr would read it as fill)."""
    root = local_root(array)
    if root is not None and any((root / key).is_dir() for key, _ in chunk_files(array, region)):
        raise IsADirectoryError("the chunk file is a directory")
    return np.asarray(array[region])


def damage_message(
    array: zarr.Array,
    region: tuple[slice, ...],
    exc: Exception,
    *,
    what: str,
    fix: str,
    read: Callable[[zarr.Array, tuple[slice, ...]], Any] | None = None,
) -> str:
    """One line naming the damaged chunk file(s) of ``region`` (re-read one by one to find them).

    ``what`` names the artifact (``"store P"``, ``"screen store P"``), ``fix`` says what to do.
    """
    read = read or read_plain
    bad = []
    for key, part in chunk_files(array, region):
        try:
            read(array, part)
        except Exception:
            bad.append((key, part))
    if not bad:
        # The block read failed but every file re-reads (decompressing a truncated file can fail
        # only sometimes): the culprit is still among the block's files, so name them.
        bad = list(chunk_files(array, region)) or [(array.path or "array", region)]
    key, part = bad[0]
    more = f" (and {len(bad) - 1} more in this block)" if len(bad) > 1 else ""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return f"{what}: {_where(key, part)} is unreadable{more} ({type(exc).__name__}: {detail}); {fix}"


def missing_message(array: zarr.Array, missing: Sequence[tuple[str, tuple[slice, ...]]], *, what: str, fix: str) -> str:
    """One line naming the first missing chunk file (and how many more)."""
    key, part = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return f"{what}: {_where(key, part)} is missing{more}; {fix}"


def read_checked(
    array: zarr.Array, key: Any, *, what: str, fix: str, require_chunks: bool = False
) -> np.ndarray:
    """``array[key]`` (contiguous slices); a damaged or (``require_chunks``) missing chunk file is one
    :class:`InputError` naming it.  The read path of every bsig artifact but the perplexity store's
    ``nll``, which adds its value checks and fast decoder (:mod:`bsig_array.io.perplexity_store.reader`).
    """
    region = normalize_region(key, tuple(array.shape))
    if require_chunks:
        missing = missing_chunks(array, region)
        if missing:
            raise InputError(missing_message(array, missing, what=what, fix=fix))
    try:
        return read_plain(array, region)
    except Exception as exc:  # codecs raise ValueError/RuntimeError/OSError/... for damaged files
        raise InputError(damage_message(array, region, exc, what=what, fix=fix)) from None


class CheckedArray:
    """Array-like view of a zarr array whose reads go through :func:`read_checked` (picklable)."""

    def __init__(self, array: zarr.Array, what: str, fix: str, require_chunks: bool = False) -> None:
        self.array, self.what, self.fix, self.require_chunks = array, what, fix, require_chunks
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return read_checked(self.array, key, what=self.what, fix=self.fix, require_chunks=self.require_chunks)


def _raw(var: xr.Variable, array: zarr.Array) -> bool:
    """Whether xarray reads ``var`` as the array's raw values (same shape and dtype, no decoding
    beyond masking a NaN fill value); only those are safe to read straight from zarr."""
    fill = var.encoding.get("_FillValue")
    masked = fill is None or (isinstance(fill, float) and np.isnan(fill))
    return (
        masked and tuple(array.shape) == var.shape and isinstance(array.dtype, np.dtype)
        and var.dtype == array.dtype and not {"scale_factor", "add_offset", "units"} & set(var.encoding)
    )


def guard_reads(
    ds: xr.Dataset, path: str | os.PathLike | Location, *, what: str, fix: str, complete: Sequence[str] = ()
) -> xr.Dataset:
    """``ds`` (opened lazily from the store at ``path``) with every dask-backed variable read through
    :func:`read_checked`, so a damaged chunk surfaces as one :class:`InputError` whenever it is computed;
    a missing chunk file of the arrays named in ``complete`` (always written whole) too."""
    import dask.array as da
    from dask.base import tokenize

    group = open_group(path)
    guarded = {}
    for name, var in ds.variables.items():
        if not isinstance(var.data, da.Array) or str(name) not in group:
            continue
        array = zarr_array(group, str(name))
        if not _raw(var, array):
            continue
        token = tokenize(as_location(path).key(), str(name), var.data.chunks, array_stamp(path, str(name)))
        data = da.from_array(
            CheckedArray(array, what, fix, str(name) in complete), chunks=var.data.chunks, name=f"bsig-checked-{name}-{token}",
            lock=False, fancy=False, asarray=False, meta=np.empty((0,) * array.ndim, dtype=array.dtype),
        )
        guarded[name] = var.copy(data=data)
    if not guarded:
        return ds
    coords = {k: v for k, v in guarded.items() if k in ds.coords}
    if coords:
        ds = ds.assign_coords(xr.Coordinates(coords, indexes={}))
    return ds.assign({k: v for k, v in guarded.items() if k not in ds.coords})


def strings(values: Any) -> np.ndarray:
    """``values`` as an object array of ``str`` (Zarr v3 variable-length strings)."""
    return np.array([str(v) for v in values], dtype=object)


def with_object_strings(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose fixed-width unicode variables are object strings."""
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind in "UT":
            ds[name] = var.astype(object)
    return ds


ALL_CHUNKS_ATTR = "bsig_all_chunks"


def write_zarr(
    ds: xr.Dataset, path: str | os.PathLike | Location, *, encoding: Mapping[str, Any] | None = None, compute: bool = True,
    all_chunks: bool = False,
) -> Any:
    """``ds.to_zarr`` as every bsig store is written: Zarr v3, consolidated, text as object strings.

    Every variable's chunks end in a crc32c checksum (:func:`with_checksum`).  ``all_chunks`` writes
    every chunk, even one holding only the fill value, and marks the store (:data:`ALL_CHUNKS_ATTR`),
    so :func:`open_artifact` can name a deleted chunk file instead of reading it as fill values.
    Returns what ``to_zarr`` returns (a dask delayed write when ``compute=False``).
    """
    given = dict(encoding or {})
    checked = {
        str(name): {
            **given.get(str(name), {}),
            "compressors": with_checksum(given.get(str(name), {}).get("compressors")),
            **({"write_empty_chunks": True} if all_chunks else {}),
        }
        for name in ds.variables
    }
    if all_chunks:
        ds = ds.assign_attrs({ALL_CHUNKS_ATTR: 1})
    with quiet_zarr():
        return with_object_strings(ds).to_zarr(  # type: ignore[call-overload]  # xarray overloads only literal compute
            zarr_store(path, read_only=False), mode="w", zarr_format=3, consolidated=True, encoding=checked,
            compute=compute,
        )


def open_artifact(
    path: str | os.PathLike | Location, *, what: str, command: str, load: bool = False, index_except: tuple[str, ...] = (),
    complete: tuple[str, ...] = (),
) -> xr.Dataset:
    """Open a Zarr artifact that bsig wrote (lazily, or loaded); a missing or unreadable one is one
    :class:`~bsig_array.errors.InputError` naming ``what`` and the ``command`` that writes it.

    Dimension coordinates become indexes as usual, except those named in ``index_except``: an index
    is loaded whole at open, and some axes (the screen's candidate axis) can be as long as the pool.
    """
    path = as_location(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; create it with {command}")
    require_zarr_v3(path, what)
    where, fix = f"{what} {path}", f"the file is truncated or corrupt: re-create it with {command}"
    try:
        with quiet_zarr():
            ds = xr.open_zarr(path.zarr_store(read_only=True), create_default_indexes=not index_except)
            if index_except:
                for name in ds.dims:
                    if name in ds.coords and name not in index_except and ds[name].dims == (name,):
                        ds = ds.set_xindex(str(name))
            if ds.attrs.get(ALL_CHUNKS_ATTR):  # every chunk was written: a missing file is damage
                complete = tuple(str(name) for name in ds.variables)
            ds = guard_reads(ds, path, what=where, fix=fix, complete=complete)
            return ds.load() if load else ds
    except InputError:
        raise
    except Exception as exc:  # zarr raises many types for a damaged or non-store directory
        check_all_chunks(path, what=where, fix=fix)  # names a damaged chunk file if there is one
        raise InputError(
            f"cannot read {what} {path} ({type(exc).__name__}: {exc}); pass the output of {command}"
        ) from None


def check_all_chunks(path: str | os.PathLike | Location, *, what: str, fix: str, max_bytes: int | None = None) -> None:
    """Read every array of the store at ``path`` (those of at most ``max_bytes``) through
    :func:`read_checked`, smallest first (error paths only): raises the :class:`InputError` naming
    the first damaged chunk file, if any."""

    try:
        with quiet_zarr():
            group = open_group(path)
            arrays = sorted(group.arrays(), key=lambda item: (item[1].nbytes, item[0]))
    except Exception:  # not even the metadata opens: nothing chunk-level to name
        return
    for _, array in arrays:
        if max_bytes is not None and array.nbytes > max_bytes:
            break
        read_checked(array, tuple(slice(None) for _ in array.shape), what=what, fix=fix)
