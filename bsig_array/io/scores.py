"""The performance matrix ``score (model, benchmark)``: read, write, check, align to a store.

:func:`load_performance` reads a wide table (CSV or Parquet: a ``model`` column plus one numeric
column per benchmark), a long table (columns ``model``, ``benchmark``, ``score``), or a NetCDF/Zarr
file holding a ``score (model, benchmark)`` variable, and returns a float64 DataArray named
``score`` with the benchmark metadata coordinates (:mod:`bsig_array.io.benchmark_metadata`).
:func:`write_performance` writes CSV, NetCDF or Zarr atomically.

:func:`align_performance` matches the models to a perplexity store *by name* and refuses a missing or
extra model, NaN/inf scores, a benchmark whose scores are all equal (nothing to rank) and fewer than
three models (:func:`check_scores`).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.benchmark_metadata import with_metadata
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.zarr_format import quiet_zarr, strings, write_zarr
from bsig_array.options import duplicates
from bsig_array.schema import METADATA_COLUMNS, MIN_MODELS

#: The artifact kind: a CSV/Parquet/NetCDF file, or a ``.zarr`` store marked by ``score``.
PERFORMANCE = register_kind(ArtifactKind("performance matrix", owner=__name__, precedence=60, markers=(("score",),)))


def _from_wide(table: pd.DataFrame, source: str) -> xr.DataArray:
    if "model" not in table.columns:
        raise InputError(f"{source} has no 'model' column (found {list(table.columns)[:6]}...); name the model column 'model' or import the table with bsig performance import --model-column")
    if {"benchmark", "score"} <= set(table.columns) and len(table.columns) == 3:
        dup = table.duplicated(["model", "benchmark"])
        if dup.any():
            first = table.loc[dup, ["model", "benchmark"]].iloc[0].tolist()
            raise InputError(f"{source} has {int(dup.sum())} repeated (model, benchmark) rows, e.g. {first}; keep one score each")
        order = list(dict.fromkeys(table["benchmark"].astype(str)))
        table = table.assign(benchmark=table["benchmark"].astype(str))
        table = table.pivot(index="model", columns="benchmark", values="score")[order].reset_index()
    models = table["model"].astype(str).str.strip()
    dup = duplicates(models)
    if dup:
        raise InputError(f"{source} has duplicate model rows {dup}; keep one row per model (bsig performance import --duplicates resolves them)")
    values = table.drop(columns="model")
    if values.shape[1] == 0:
        raise InputError(f"{source} has no benchmark columns; add one column of scores per benchmark")
    bad = [str(c) for c in values.columns if not pd.api.types.is_numeric_dtype(values[c]) and not _all_numeric(values[c])]
    if bad:
        raise InputError(f"{source}: benchmark columns {bad[:5]} are not numeric; scores must be numbers (blank for missing)")
    data = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return xr.DataArray(
        data,
        dims=("model", "benchmark"),
        coords={"model": np.array(models, dtype=object), "benchmark": np.array([str(c) for c in values.columns], dtype=object)},
        name="score",
    )


def _all_numeric(column: pd.Series) -> bool:
    text = column.astype(str).str.strip()
    present = text[(text != "") & (text.str.lower() != "nan") & column.notna()]
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def _duplicate_header(data: bytes) -> list[str]:
    # pandas silently renames repeated CSV columns to "x.1"; read the raw header to refuse them.
    header = next(csv.reader(io.StringIO(data.decode("utf-8"), newline="")), [])
    return sorted({h for h in header if header.count(h) > 1})


def _check_text_file(loc: Location) -> bytes:
    """The file's bytes; refuse what cannot be a CSV before pandas guesses: a folder, an empty file,
    binary or non-UTF-8 bytes."""
    if loc.is_dir():
        raise InputError(f"performance file {loc} is a directory; pass a CSV file (or a .zarr performance store)")
    data = loc.read_bytes()
    if not data.strip():
        raise InputError(f"performance file {loc} is empty; write a 'model' column and one column per benchmark")
    if b"\0" in data:
        raise InputError(f"performance file {loc} is binary, not a CSV; pass a text CSV (or .parquet/.nc/.zarr)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"performance file {loc} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8 CSV"
        ) from None
    return data


def _from_dataset(loc: Location, is_dir: bool) -> xr.DataArray:
    try:
        if loc.suffix == ".zarr" or is_dir:
            with quiet_zarr():
                ds = xr.open_zarr(loc.zarr_store(read_only=True), consolidated=False).load()
        elif loc.is_local:
            ds = xr.open_dataset(loc.path).load()
        else:  # a small file: read it whole (xarray picks the engine from the bytes)
            ds = xr.open_dataset(io.BytesIO(loc.read_bytes())).load()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read performance file {loc} ({type(exc).__name__}: {exc})") from None
    if "score" in ds.data_vars:
        score = ds["score"]
    elif len(ds.data_vars) == 1:
        score = ds[next(iter(ds.data_vars))]
    else:
        raise InputError(f"{loc} holds {sorted(ds.data_vars)}; name the performance variable 'score'")
    if set(score.dims) != {"model", "benchmark"}:
        raise InputError(f"{loc}: score has dims {score.dims}, expected (model, benchmark); rename the dims")
    score = score.transpose("model", "benchmark").astype(np.float64)
    score = score.assign_coords(
        model=("model", np.array([str(m) for m in score["model"].values], dtype=object)),
        benchmark=("benchmark", np.array([str(b) for b in score["benchmark"].values], dtype=object)),
    )
    return score.rename("score")


def load_performance(
    path: str | os.PathLike | Location, *, metadata: str | os.PathLike | pd.DataFrame | None = None
) -> xr.DataArray:
    """Read a performance matrix as ``score (model, benchmark)`` float64 with benchmark metadata.

    Parameters
    ----------
    path
        ``.csv`` / ``.parquet`` (wide: ``model`` column + one column per benchmark; or long: columns
        ``model``, ``benchmark``, ``score``), or ``.nc`` / ``.zarr`` holding ``score``; a local path
        or a URL (``s3://…``, :mod:`bsig_array.io.location`).
    metadata
        Metadata CSV (or DataFrame).  Without it, coordinates already in a NetCDF/Zarr file are kept
        and anything else comes from the shipped default table, else ``"unknown"``.

    Returns
    -------
    xarray.DataArray
        Named ``score``; NaN marks a missing score (refused later by :func:`align_performance`).
    """
    path = as_location(path)  # str(path): the URL without credentials
    if not path.exists():
        raise InputError(f"performance file {path} does not exist; check the path (bsig performance import-lm-eval writes one)")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        data = _check_text_file(path)
        dup = _duplicate_header(data)
        if dup:
            raise InputError(f"{path} repeats columns {dup}; keep one column per benchmark")
        try:
            table = pd.read_csv(io.BytesIO(data), sep="\t" if suffix == ".tsv" else ",")
        except Exception as exc:
            raise InputError(f"cannot read CSV {path} ({type(exc).__name__}: {exc})") from None
        score = _from_wide(table, str(path))
    elif suffix in (".parquet", ".pq"):
        if path.is_dir():
            raise InputError(f"performance file {path} is a directory; pass a Parquet file")
        try:
            table = pd.read_parquet(io.BytesIO(path.read_bytes()))
        except Exception as exc:
            raise InputError(f"cannot read Parquet {path} ({type(exc).__name__}: {exc})") from None
        score = _from_wide(table, str(path))
    elif suffix in (".nc", ".zarr", ".h5", ".netcdf") or path.is_dir():
        score = _from_dataset(path, suffix == ".zarr" or path.is_dir())
        has_meta = all(col in score.coords for col in METADATA_COLUMNS)
        if has_meta and metadata is None:
            return score
    else:
        raise InputError(f"unknown performance format {path.suffix!r} for {path}; use .csv, .parquet, .nc or .zarr")
    bench = [str(b) for b in score["benchmark"].values]
    dup = duplicates(bench)
    if dup:
        raise InputError(f"{path} repeats benchmarks {dup}; keep one column per benchmark")
    if score.sizes["model"] == 0:
        raise InputError(f"{path} holds no model rows; add one row of scores per model")
    return with_metadata(score, metadata)


def write_performance(
    score: xr.DataArray, path: str | os.PathLike | Location, *, attrs: Mapping[str, str] | None = None
) -> Path:
    """Write ``score`` as wide CSV (``.csv``), NetCDF (``.nc``) or Zarr (``.zarr``), atomically.

    CSV keeps only the numbers (pass the metadata CSV again when reading); NetCDF/Zarr keep the
    benchmark coordinates and ``attrs`` (file attributes, e.g. the provenance record; CSV drops them).
    ``path`` may be a URL: the file is staged locally and published whole
    (:func:`~bsig_array.io.atomic.atomic_output`).  Returns the local path, or for a URL its
    :class:`~bsig_array.io.location.Location` (printable, without credentials).
    """
    loc = as_location(path)
    suffix = loc.suffix.lower()
    if suffix not in (".csv", ".nc", ".zarr"):
        raise InputError(f"cannot write performance as {loc.suffix!r}; use a .csv, .nc or .zarr path")
    score = score.rename("score")
    with atomic_output(loc) as tmp:
        if suffix == ".csv":
            table = score.transpose("model", "benchmark").to_pandas()
            table.index.name = "model"
            table.columns.name = None
            table.to_csv(tmp)  # shortest repr: floats round-trip exactly
        else:
            # Object-dtype strings so both NetCDF3 (scipy) and Zarr store them as text.
            ds = score.to_dataset().assign_coords(
                {name: (coord.dims, strings(coord.values)) for name, coord in score.coords.items()}
            )
            ds.attrs.update(attrs or {})
            if suffix == ".nc":
                ds.to_netcdf(tmp)
            else:
                write_zarr(ds, tmp)  # consolidated + crc32c, like every bsig store
    return loc.path if loc.is_local else loc  # type: ignore[return-value]  # printed or reopened by callers


def _models_of(models: Sequence[str] | xr.Dataset | xr.DataArray) -> list[str]:
    if isinstance(models, (xr.Dataset, xr.DataArray)):
        return [str(m) for m in models["model"].values]
    return [str(m) for m in models]


#: Benchmark formats whose score is an accuracy (a fraction of questions right, in [0, 1]).
ACCURACY_FORMATS = ("multiple_choice", "true_false")


def accuracy_range_warning(score: xr.DataArray, skip: Sequence[str] = ()) -> str | None:
    """One line naming the benchmarks whose metadata says they are accuracies (``format``
    multiple_choice or true_false) but whose scores leave [0, 1]; ``None`` when there are none.
    Benchmarks in ``skip`` are left out (``bsig performance show`` already calls them percent)."""
    if "format" not in score.coords:
        return None
    score = score.transpose("model", "benchmark")
    values = np.asarray(score.values, dtype=np.float64)
    hits = []
    for j, (name, fmt) in enumerate(zip(score["benchmark"].values, score["format"].values)):
        col = values[:, j][np.isfinite(values[:, j])]
        out = col[(col < 0) | (col > 1)]
        if str(fmt) in ACCURACY_FORMATS and len(out) and str(name) not in skip:
            hits.append((str(name), len(out), float(col.min()), float(col.max())))
    if not hits:
        return None
    n = sum(h[1] for h in hits)
    listed = ", ".join(f"{b} ({k} score{'s' * (k != 1)}, range {lo:.4g} to {hi:.4g})" for b, k, lo, hi in hits[:6])
    more = f", and {len(hits) - 6} more" if len(hits) > 6 else ""
    return (f"{n} score{'s' * (n != 1)} outside [0, 1] in {len(hits)} accuracy benchmark{'s' * (len(hits) != 1)} "
            f"(metadata format {'/'.join(ACCURACY_FORMATS)}): {listed}{more}; percent? "
            "(bsig performance import --scale percent) or a wrong metric")


def check_scores(score: xr.DataArray) -> None:
    """Refuse NaN/inf scores, constant benchmarks, duplicate models and fewer than three models.

    Warns (:class:`~bsig_array.errors.BsigWarning`, :func:`accuracy_range_warning`) about scores
    outside [0, 1] on benchmarks whose metadata says they are accuracies.
    """
    if set(score.dims) != {"model", "benchmark"}:
        raise InputError(f"score has dims {score.dims}, expected (model, benchmark)")
    score = score.transpose("model", "benchmark")
    names = [str(m) for m in score["model"].values]
    dup = duplicates(names)
    if dup:
        raise InputError(f"performance lists models {dup} more than once; keep one row per model")
    if len(names) < MIN_MODELS:
        raise InputError(f"performance has only {len(names)} models, need at least {MIN_MODELS} to rank benchmarks")
    values = np.asarray(score.values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = ", ".join(f"{names[r]}/{score['benchmark'].values[c]}" for r, c in zip(rows[:5], cols[:5]))
        more = "" if bad.sum() <= 5 else ", ..."
        raise InputError(
            f"performance has {int(bad.sum())} missing (NaN/inf) scores ({where}{more}); "
            "fill them in or drop those models/benchmarks"
        )
    line = accuracy_range_warning(score)
    if line:
        warnings.warn(line, BsigWarning, stacklevel=2)
    constant = [str(b) for b, col in zip(score["benchmark"].values, values.T) if np.all(col == col[0])]
    if constant:
        raise InputError(
            f"benchmarks {constant[:5]}{' ...' if len(constant) > 5 else ''} have the same score for every model, "
            "so tokens cannot be ranked against them; drop those benchmarks"
        )


def align_performance(score: xr.DataArray, models: Sequence[str] | xr.Dataset | xr.DataArray) -> xr.DataArray:
    """Reorder ``score`` to the store's model order, matching models by name.

    Parameters
    ----------
    score
        ``score (model, benchmark)``.
    models
        The store's model names in store order (or the store Dataset / its ``nll``).

    Raises
    ------
    InputError
        On models missing from the performance or absent from the store, NaN/inf scores, a benchmark
        whose scores are all equal, duplicate models, or fewer than three models.
    """
    if set(score.dims) != {"model", "benchmark"}:
        raise InputError(f"score has dims {score.dims}, expected (model, benchmark)")
    store_models = _models_of(models)
    # Names match after stripping surrounding spaces on both sides, whatever the file type (CSV
    # readers strip cells; stores and NetCDF keep names as written).
    names = [str(m) for m in score["model"].values]
    dup = duplicates(m.strip() for m in names)
    if dup:
        raise InputError(f"performance lists models {dup} more than once (ignoring surrounding spaces); keep one row per model")
    dup = duplicates(m.strip() for m in store_models)
    if dup:
        raise InputError(f"the store lists models {dup} more than once (ignoring surrounding spaces); rename them")
    have = {m.strip(): m for m in names}
    wanted = {m.strip() for m in store_models}
    missing = [m for m in store_models if m.strip() not in have]
    extra = [m for m in names if m.strip() not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"models in the store but not in the performance: {missing}")
        if extra:
            parts.append(f"models in the performance but not in the store: {extra}")
        raise InputError(
            "; ".join(parts) + "; model names must match (surrounding spaces are ignored; fix the names or the model lists)"
        )
    aligned = score.transpose("model", "benchmark").sel(model=[have[m.strip()] for m in store_models])
    aligned = aligned.assign_coords(model=("model", np.array(store_models, dtype=object))).astype(np.float64)
    check_scores(aligned)
    return aligned.rename("score")


def check_model_row(path: str | os.PathLike | Location, model: str, *, overwrite: bool) -> None:
    """Refuse, before the work, to replace ``model``'s existing row of the CSV at ``path`` (a path or
    URL) without ``overwrite``."""
    path = as_location(path)
    if overwrite or not path.exists() or path.is_dir():
        return
    try:
        models = pd.read_csv(io.BytesIO(path.read_bytes()), usecols=["model"])["model"].astype(str)
    except Exception as exc:
        raise InputError(f"{path} is not a performance CSV with a 'model' column ({type(exc).__name__}); "
                         "pick another --out") from None
    if (models == model).any():
        raise InputError(f"{path} already has a row for model {model!r}; pass --overwrite to replace it")


def set_model_scores(path: str | os.PathLike | Location, model: str, scores: dict[str, float]) -> pd.DataFrame:
    """Add or replace ``model``'s row of the wide performance CSV at ``path`` (a path or URL; written
    atomically).

    Benchmarks new to the table get a column (NaN for the other models).  Returns the table.
    """
    path = as_location(path)
    if path.exists():
        table = pd.read_csv(io.BytesIO(path.read_bytes()))
        if "model" not in table.columns:
            raise InputError(f"{path} has no 'model' column; it is not a performance CSV")
        table = table.set_index("model")
    else:
        table = pd.DataFrame(index=pd.Index([], name="model"))
    for task in scores:
        if task not in table.columns:
            table[task] = float("nan")
    table.loc[model, list(scores)] = list(scores.values())
    with atomic_output(path) as tmp:
        table.reset_index().to_csv(tmp, index=False)
    return table
