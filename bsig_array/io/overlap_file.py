"""The overlap file ``overlap.nc`` / ``overlap.zarr``: writer and reader (docs/DESIGN.md §3).

One DataArray per level present (:data:`bsig_array.schema.LEVELS`: ``signature``,
``signature_controlled``, ``performance``, ``performance_controlled``, ``semantic``) with dims
``(benchmark_a, benchmark_b)``, and ``<level>_p`` p-values (``semantic_std`` for the semantic
level); ``n_signature_tokens (benchmark_a)`` with the signature level; the benchmark metadata as
coordinates ``<name>_a`` / ``<name>_b``.  Attributes: ``levels`` (the present levels,
comma-separated, in LEVELS order), ``control``, ``n_models`` and, with the signature level,
``signature_mode``, ``population``, ``covariate``.  Built by
:func:`bsig_array.stages.overlap.compute_overlaps`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.zarr_format import open_artifact, write_zarr
from bsig_array.schema import LEVELS


def write_overlap(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write the overlap dataset to ``.nc`` (NetCDF3 via scipy) or ``.zarr``, atomically (temp + rename)."""
    path = Path(path)
    if path.suffix not in (".zarr", ".nc"):
        raise InputError(f"unknown overlap output suffix {path.suffix!r}; name the output *.nc or *.zarr")
    with atomic_output(path) as tmp:
        if path.suffix == ".zarr":
            write_zarr(ds, tmp, all_chunks=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.to_netcdf(tmp, engine="scipy")
    return path


def present_levels(ds: xr.Dataset) -> list[str]:
    """The levels an overlap dataset holds, in :data:`~bsig_array.schema.LEVELS` order.

    From the ``levels`` attribute; files written before it existed list every level variable that
    holds a finite value (their absent levels were all-NaN placeholders).
    """
    if "levels" in ds.attrs:
        named = {lv.strip() for lv in str(ds.attrs["levels"]).split(",")}
        return [lv for lv in LEVELS if lv in named and lv in ds]
    return [lv for lv in LEVELS if lv in ds and bool(np.isfinite(np.asarray(ds[lv].values, dtype=float)).any())]


def load_overlap(path: str | os.PathLike) -> xr.Dataset:
    """Read an overlap dataset written by :func:`write_overlap` (into memory)."""
    path = Path(path)
    if path.suffix == ".zarr" or path.is_dir():
        ds = open_artifact(path, what="overlap file", command="bsig overlap", load=True)
    elif not path.exists():
        raise InputError(f"overlap file {path} does not exist; create it with bsig overlap")
    else:
        try:
            ds = xr.load_dataset(path, engine="scipy")
        except Exception as exc:
            raise InputError(f"cannot read overlap file {path} ({type(exc).__name__}: {exc})") from None
    if not any(level in ds for level in LEVELS):
        raise InputError(f"{path} holds none of {LEVELS}; pass the output of bsig overlap")
    return ds
