"""How bsig writes and opens Zarr v3 stores: one place for the format choices all artifacts share.

- Zarr format 3 with consolidated metadata (one read to open a store).  zarr warns that
  consolidated metadata is not yet part of the v3 specification; bsig relies on it knowingly, so
  :func:`quiet_zarr` silences exactly that warning around bsig's own reads and writes.
- Text as variable-length strings (object dtype): Zarr v3 has a spec for those, not for numpy's
  fixed-width unicode.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from bsig_array.errors import InputError

if TYPE_CHECKING:
    import zarr

_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part"


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (relied on knowingly)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
        yield


def zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group`` (a group there is a malformed store: :class:`InputError`)."""
    import zarr

    member = group[name]
    if not isinstance(member, zarr.Array):
        raise InputError(f"{group.store_path}: {name!r} is a group, not an array; the store is malformed: re-create it")
    return member


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


def write_zarr(
    ds: xr.Dataset, path: str | os.PathLike, *, encoding: Mapping[str, Any] | None = None, compute: bool = True
) -> Any:
    """``ds.to_zarr`` as every bsig store is written: Zarr v3, consolidated, text as object strings.

    Returns what ``to_zarr`` returns (a dask delayed write when ``compute=False``).
    """
    with quiet_zarr():
        return with_object_strings(ds).to_zarr(  # type: ignore[call-overload]  # xarray overloads only literal compute
            path, mode="w", zarr_format=3, consolidated=True, encoding=dict(encoding or {}), compute=compute
        )


def open_artifact(
    path: str | os.PathLike, *, what: str, command: str, load: bool = False, index_except: tuple[str, ...] = (),
) -> xr.Dataset:
    """Open a Zarr artifact that bsig wrote (lazily, or loaded); a missing or unreadable one is one
    :class:`~bsig_array.errors.InputError` naming ``what`` and the ``command`` that writes it.

    Dimension coordinates become indexes as usual, except those named in ``index_except``: an index
    is loaded whole at open, and some axes (the screen's candidate axis) can be as long as the pool.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; create it with {command}")
    try:
        with quiet_zarr():
            ds = xr.open_zarr(path, create_default_indexes=not index_except)
            if index_except:
                for name in ds.dims:
                    if name in ds.coords and name not in index_except and ds[name].dims == (name,):
                        ds = ds.set_xindex(str(name))
            return ds.load() if load else ds
    except Exception as exc:  # zarr raises many types for a damaged or non-store directory
        raise InputError(
            f"cannot read {what} {path} ({type(exc).__name__}: {exc}); pass the output of {command}"
        ) from None
