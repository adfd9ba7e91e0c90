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

import io
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.zarr_format import open_artifact, write_zarr
from bsig_array.schema import LEVELS

#: The artifact kind: ``overlap.nc`` (a file) or ``overlap.zarr`` (a store marked by ``benchmark_a``).
OVERLAP_FILE = register_kind(ArtifactKind("overlap file", owner=__name__, precedence=50, markers=(("benchmark_a",),)))


def write_overlap(ds: xr.Dataset, path: str | os.PathLike | Location) -> Path | Location:
    """Write the overlap dataset to ``.nc`` (NetCDF3 via scipy) or ``.zarr``, atomically (temp + rename).

    ``path`` may be a URL (``s3://bucket/overlap.nc``): the file or store is staged locally and
    published when complete (:func:`~bsig_array.io.atomic.atomic_output`).  Returns the local path,
    or the :class:`~bsig_array.io.location.Location` of a URL.
    """
    loc = as_location(path)
    if loc.suffix not in (".zarr", ".nc"):
        raise InputError(f"unknown overlap output suffix {loc.suffix!r}; name the output *.nc or *.zarr")
    with atomic_output(loc) as tmp:
        if loc.suffix == ".zarr":
            write_zarr(ds, tmp, all_chunks=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.to_netcdf(tmp, engine="scipy")
    return loc.path if loc.is_local else loc


def present_levels(ds: xr.Dataset) -> list[str]:
    """The levels an overlap dataset holds, in :data:`~bsig_array.schema.LEVELS` order.

    From the ``levels`` attribute; files written before it existed list every level variable that
    holds a finite value (their absent levels were all-NaN placeholders).
    """
    if "levels" in ds.attrs:
        named = {lv.strip() for lv in str(ds.attrs["levels"]).split(",")}
        return [lv for lv in LEVELS if lv in named and lv in ds]
    return [lv for lv in LEVELS if lv in ds and bool(np.isfinite(np.asarray(ds[lv].values, dtype=float)).any())]


def load_overlap(path: str | os.PathLike | Location) -> xr.Dataset:
    """Read an overlap dataset written by :func:`write_overlap` (into memory; a local path or a URL)."""
    loc = as_location(path)
    if loc.suffix == ".zarr" or loc.is_dir():
        ds = open_artifact(loc, what="overlap file", command="bsig overlap", load=True)
    elif not loc.exists():
        raise InputError(f"overlap file {loc} does not exist; create it with bsig overlap")
    else:
        try:
            # An overlap file is benchmarks² values: one read of the whole object beats ranged reads.
            source = loc.path if loc.is_local else io.BytesIO(loc.read_bytes())
            ds = xr.load_dataset(source, engine="scipy")
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read overlap file {loc} ({type(exc).__name__}: {exc})") from None
    if not any(level in ds for level in LEVELS):
        raise InputError(f"{loc} holds none of {LEVELS}; pass the output of bsig overlap")
    return ds
