"""The performance matrix ``score (model, benchmark)`` and its benchmark metadata (DESIGN §3).

Readers
-------
:func:`load_performance` reads a wide table (CSV or Parquet: a ``model`` column plus one numeric
column per benchmark), a long table (columns ``model``, ``benchmark``, ``score``), or a NetCDF/Zarr
file holding a ``score (model, benchmark)`` variable.  :func:`import_lm_eval` reads lm-eval 0.4
``results_*.json`` files.  Every reader returns a float64 DataArray named ``score`` with the benchmark
coordinates ``family``, ``format``, ``category`` and ``function``.

:func:`align_performance` matches the models to a perplexity store *by name* and refuses a missing or
extra model, NaN/inf scores, a benchmark whose scores are all equal (nothing to rank) and fewer than
three models.

Benchmark metadata
------------------
The shipped table ``bsig_array/data/benchmarks.csv`` is the paper's benchmark list
(``shared/paper/benchmarks.csv``: Table 2's 60 MMLU and 28 BBH rows, then GSM8K, MBPP, MMLU,
TruthfulQA, IFEval, AbsenceBench) with its ``family`` and ``format`` (Table 3; a blank format — not
stated in the paper — reads as ``unknown``), plus two columns added here:

``category`` — the paper's eight broad categories (§4.1, Table 5), assigned from the official labels:

- MMLU subjects follow the official MMLU subcategory map (Hendrycks et al., ``categories.py``):
  *history, philosophy, law* → Humanities (so ``formal_logic`` and ``logical_fallacies`` are
  Humanities); *health* → Medicine; *physics, chemistry, biology, computer science, math,
  engineering* → Science and Engineering; *politics, culture, economics, geography, psychology* →
  Social Science; *business* and ``professional_accounting`` → Business; *other*
  (``miscellaneous``, ``global_facts``) → World Knowledge.  The aggregate rows ``humanities``,
  ``stem``, ``social_sciences``, ``other`` take their own category; ``mmlu`` is World Knowledge.
- BBH follows Suzgun et al.'s split: the algorithmic/multi-step tasks (``boolean_expressions``,
  ``dyck_languages``, ``geometric_shapes``, ``logical_deduction_*``, ``multistep_arithmetic_two``,
  ``navigate``, ``object_counting``, ``penguins_in_a_table``, ``reasoning_about_colored_objects``,
  ``temporal_sequences``, ``tracking_shuffled_objects_*``, ``web_of_lies``) plus ``causal_judgement``,
  ``date_understanding`` and ``formal_fallacies`` → Reasoning; the linguistic NLP tasks
  (``hyperbaton``, ``snarks``, ``disambiguation_qa``, ``salient_translation_error_detection``,
  ``word_sorting``, ``ruin_names``) → Language; the trivia tasks (``movie_recommendation``,
  ``sports_understanding``) → World Knowledge.
- GSM8K → Reasoning; MBPP → Science and Engineering; TruthfulQA → World Knowledge; IFEval and
  AbsenceBench → Language.

``function`` — a coarse cognitive function (for §4.3's math–logic analysis): ``math`` (the MMLU
mathematics and statistics subjects, ``multistep_arithmetic_two``, ``object_counting``, GSM8K),
``logic`` (``formal_logic``, ``logical_fallacies`` and the BBH Reasoning tasks above except the
arithmetic ones), ``coding`` (MBPP and the two MMLU computer-science subjects), ``language`` (the BBH
Language tasks, AbsenceBench), ``instruction-following`` (IFEval), ``knowledge`` (everything else).

Benchmark names are looked up exactly, then after lm-eval's task prefixes are stripped
(``mmlu_``, ``bbh_*_``, ``leaderboard_bbh_``, ...) and underscores ignored (lm-eval's
``high_school_macroeconomics`` is the paper's ``high_school_macro_economics``); see
:func:`canonical_benchmark`.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.atomic import atomic_output
from bsig_array.errors import BsigError
from bsig_array.validation import MIN_MODELS

METADATA_COLUMNS = ("family", "format", "category", "function")
UNKNOWN = "unknown"

# lm-eval task-name prefixes, longest first, stripped only when the rest is a known benchmark.
_TASK_PREFIXES = (
    "leaderboard_bbh_",
    "bbh_cot_fewshot_",
    "bbh_cot_zeroshot_",
    "bbh_fewshot_",
    "bbh_zeroshot_",
    "bbh_",
    "leaderboard_",
    "mmlu_",
)
_TASK_ALIASES = {"truthfulqa_mc2": "truthfulqa", "mmlu_continuation": "mmlu"}
# Metric preference for lm-eval results (first match wins); see default_metric.
_METRIC_PREFERENCE = ("acc_norm,none", "acc,none", "exact_match,strict-match")


# --------------------------------------------------------------------------- metadata


def load_metadata(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Benchmark metadata indexed by ``benchmark`` with columns family, format, category, function.

    Parameters
    ----------
    path
        A CSV with a ``benchmark`` column and any of the metadata columns (missing columns and blank
        cells read as ``"unknown"``); None for the shipped default table.
    """
    if path is None:
        with resources.files("bsig_array.data").joinpath("benchmarks.csv").open("r") as fh:
            table = pd.read_csv(fh, dtype=str, keep_default_na=False)
        source = "the shipped benchmarks.csv"
    else:
        path = Path(path)
        if not path.is_file():
            raise BsigError(f"metadata file {path} does not exist; pass a CSV with benchmark,family,format,category,function")
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise BsigError(f"cannot read metadata CSV {path} ({type(exc).__name__}: {exc})") from None
        source = str(path)
    if "benchmark" not in table.columns:
        raise BsigError(f"metadata {source} has no 'benchmark' column (found {list(table.columns)}); add one")
    dup = sorted(set(table["benchmark"][table["benchmark"].duplicated()]))
    if dup:
        raise BsigError(f"metadata {source} lists benchmarks {dup} more than once; keep one row per benchmark")
    for col in METADATA_COLUMNS:
        if col not in table.columns:
            table[col] = UNKNOWN
        table[col] = table[col].str.strip().replace("", UNKNOWN)
    return table.set_index("benchmark")[list(METADATA_COLUMNS)]


@lru_cache(maxsize=1)
def _default_lookup() -> dict[str, str]:
    """Default-table benchmark names keyed by their underscore-free spelling."""
    return {name.replace("_", ""): name for name in load_metadata().index}


def canonical_benchmark(name: str, known: Iterable[str] | None = None) -> str:
    """The benchmark name of an lm-eval task (``mmlu_anatomy`` → ``anatomy``), else ``name``.

    Parameters
    ----------
    name
        A task or benchmark name.
    known
        Benchmark names to map onto (default: the shipped table).
    """
    if known is not None:
        known = list(known)
        if name in known:
            return name
    lookup = _default_lookup() if known is None else {k.replace("_", ""): k for k in known}

    def find(candidate: str) -> str | None:
        return lookup.get(candidate.replace("_", ""))

    if (hit := find(name)) is not None:
        return hit
    if name in _TASK_ALIASES and (hit := find(_TASK_ALIASES[name])) is not None:
        return hit
    for prefix in _TASK_PREFIXES:
        if name.startswith(prefix) and (hit := find(name[len(prefix) :])) is not None:
            return hit
    return name


def benchmark_metadata(benchmarks: Sequence[str], metadata: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Metadata rows for ``benchmarks`` (in that order); unknown benchmarks get ``"unknown"``."""
    if isinstance(metadata, pd.DataFrame):
        table = metadata.reindex(columns=list(METADATA_COLUMNS)).astype(object).fillna(UNKNOWN).astype(str).replace("", UNKNOWN)
        table.index = table.index.astype(str)
    else:
        table = load_metadata(metadata)
    known = list(table.index)
    rows = []
    for name in benchmarks:
        key = canonical_benchmark(str(name), known)
        rows.append(table.loc[key] if key in table.index else pd.Series(UNKNOWN, index=list(METADATA_COLUMNS)))
    out = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    out.index = pd.Index([str(b) for b in benchmarks], name="benchmark")
    return out


def with_metadata(score: xr.DataArray, metadata: str | os.PathLike | pd.DataFrame | None = None) -> xr.DataArray:
    """Attach (or replace) the benchmark coordinates family, format, category, function."""
    table = benchmark_metadata([str(b) for b in score["benchmark"].values], metadata)
    return score.assign_coords({col: ("benchmark", table[col].to_numpy(dtype=object)) for col in METADATA_COLUMNS})


# --------------------------------------------------------------------------- reading


def _from_wide(table: pd.DataFrame, source: str) -> xr.DataArray:
    if "model" not in table.columns:
        raise BsigError(f"{source} has no 'model' column (found {list(table.columns)[:6]}...); name the model column 'model'")
    if {"benchmark", "score"} <= set(table.columns) and len(table.columns) == 3:
        dup = table.duplicated(["model", "benchmark"])
        if dup.any():
            first = table.loc[dup, ["model", "benchmark"]].iloc[0].tolist()
            raise BsigError(f"{source} has {int(dup.sum())} repeated (model, benchmark) rows, e.g. {first}; keep one score each")
        order = list(dict.fromkeys(table["benchmark"].astype(str)))
        table = table.assign(benchmark=table["benchmark"].astype(str))
        table = table.pivot(index="model", columns="benchmark", values="score")[order].reset_index()
    models = table["model"].astype(str).str.strip()
    dup = sorted(set(models[models.duplicated()]))
    if dup:
        raise BsigError(f"{source} has duplicate model rows {dup}; keep one row per model")
    values = table.drop(columns="model")
    if values.shape[1] == 0:
        raise BsigError(f"{source} has no benchmark columns; add one column of scores per benchmark")
    bad = [str(c) for c in values.columns if not pd.api.types.is_numeric_dtype(values[c]) and not _all_numeric(values[c])]
    if bad:
        raise BsigError(f"{source}: benchmark columns {bad[:5]} are not numeric; scores must be numbers (blank for missing)")
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


def _duplicate_header(path: Path) -> list[str]:
    # pandas silently renames repeated CSV columns to "x.1"; read the raw header to refuse them.
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    return sorted({h for h in header if header.count(h) > 1})


def _from_dataset(path: Path) -> xr.DataArray:
    try:
        if path.suffix == ".zarr" or path.is_dir():
            ds = xr.open_zarr(path, consolidated=False).load()
        else:
            ds = xr.open_dataset(path).load()
    except Exception as exc:
        raise BsigError(f"cannot read performance file {path} ({type(exc).__name__}: {exc})") from None
    if "score" in ds.data_vars:
        score = ds["score"]
    elif len(ds.data_vars) == 1:
        score = ds[next(iter(ds.data_vars))]
    else:
        raise BsigError(f"{path} holds {sorted(ds.data_vars)}; name the performance variable 'score'")
    if set(score.dims) != {"model", "benchmark"}:
        raise BsigError(f"{path}: score has dims {score.dims}, expected (model, benchmark); rename the dims")
    score = score.transpose("model", "benchmark").astype(np.float64)
    score = score.assign_coords(
        model=("model", np.array([str(m) for m in score["model"].values], dtype=object)),
        benchmark=("benchmark", np.array([str(b) for b in score["benchmark"].values], dtype=object)),
    )
    return score.rename("score")


def load_performance(path: str | os.PathLike, *, metadata: str | os.PathLike | pd.DataFrame | None = None) -> xr.DataArray:
    """Read a performance matrix as ``score (model, benchmark)`` float64 with benchmark metadata.

    Parameters
    ----------
    path
        ``.csv`` / ``.parquet`` (wide: ``model`` column + one column per benchmark; or long: columns
        ``model``, ``benchmark``, ``score``), or ``.nc`` / ``.zarr`` holding ``score``.
    metadata
        Metadata CSV (or DataFrame).  Without it, coordinates already in a NetCDF/Zarr file are kept
        and anything else comes from the shipped default table, else ``"unknown"``.

    Returns
    -------
    xarray.DataArray
        Named ``score``; NaN marks a missing score (refused later by :func:`align_performance`).
    """
    path = Path(path)
    if not path.exists():
        raise BsigError(f"performance file {path} does not exist; check the path (bsig performance import-lm-eval writes one)")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        dup = _duplicate_header(path)
        if dup:
            raise BsigError(f"{path} repeats columns {dup}; keep one column per benchmark")
        try:
            table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        except Exception as exc:
            raise BsigError(f"cannot read CSV {path} ({type(exc).__name__}: {exc})") from None
        score = _from_wide(table, str(path))
    elif suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(path)
        except Exception as exc:
            raise BsigError(f"cannot read Parquet {path} ({type(exc).__name__}: {exc})") from None
        score = _from_wide(table, str(path))
    elif suffix in (".nc", ".zarr", ".h5", ".netcdf") or path.is_dir():
        score = _from_dataset(path)
        has_meta = all(col in score.coords for col in METADATA_COLUMNS)
        if has_meta and metadata is None:
            return score
    else:
        raise BsigError(f"unknown performance format {path.suffix!r} for {path}; use .csv, .parquet, .nc or .zarr")
    bench = [str(b) for b in score["benchmark"].values]
    dup = sorted({b for b in bench if bench.count(b) > 1})
    if dup:
        raise BsigError(f"{path} repeats benchmarks {dup}; keep one column per benchmark")
    return with_metadata(score, metadata)


def write_performance(score: xr.DataArray, path: str | os.PathLike) -> Path:
    """Write ``score`` as wide CSV (``.csv``), NetCDF (``.nc``) or Zarr (``.zarr``), atomically.

    CSV keeps only the numbers (pass the metadata CSV again when reading); NetCDF/Zarr keep the
    benchmark coordinates.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".nc", ".zarr"):
        raise BsigError(f"cannot write performance as {path.suffix!r}; use a .csv, .nc or .zarr path")
    score = score.rename("score")
    with atomic_output(path) as tmp:
        if suffix == ".csv":
            table = score.transpose("model", "benchmark").to_pandas()
            table.index.name = "model"
            table.columns.name = None
            table.to_csv(tmp)  # shortest repr: floats round-trip exactly
        else:
            # Object-dtype strings so both NetCDF3 (scipy) and Zarr store them as text.
            ds = score.to_dataset().assign_coords(
                {name: (coord.dims, np.array([str(v) for v in coord.values], dtype=object)) for name, coord in score.coords.items()}
            )
            if suffix == ".nc":
                ds.to_netcdf(tmp)
            else:
                ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    return path


# --------------------------------------------------------------------------- checks


def _models_of(models: Sequence[str] | xr.Dataset | xr.DataArray) -> list[str]:
    if isinstance(models, (xr.Dataset, xr.DataArray)):
        return [str(m) for m in models["model"].values]
    return [str(m) for m in models]


def check_scores(score: xr.DataArray) -> None:
    """Refuse NaN/inf scores, constant benchmarks, duplicate models and fewer than three models."""
    if set(score.dims) != {"model", "benchmark"}:
        raise BsigError(f"score has dims {score.dims}, expected (model, benchmark)")
    score = score.transpose("model", "benchmark")
    names = [str(m) for m in score["model"].values]
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise BsigError(f"performance lists models {dup} more than once; keep one row per model")
    if len(names) < MIN_MODELS:
        raise BsigError(f"performance has only {len(names)} models, need at least {MIN_MODELS} to rank benchmarks")
    values = np.asarray(score.values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = ", ".join(f"{names[r]}/{score['benchmark'].values[c]}" for r, c in zip(rows[:5], cols[:5]))
        more = "" if bad.sum() <= 5 else ", ..."
        raise BsigError(
            f"performance has {int(bad.sum())} missing (NaN/inf) scores ({where}{more}); "
            "fill them in or drop those models/benchmarks"
        )
    constant = [str(b) for b, col in zip(score["benchmark"].values, values.T) if np.all(col == col[0])]
    if constant:
        raise BsigError(
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
    BsigError
        On models missing from the performance or absent from the store, NaN/inf scores, a benchmark
        whose scores are all equal, duplicate models, or fewer than three models.
    """
    if set(score.dims) != {"model", "benchmark"}:
        raise BsigError(f"score has dims {score.dims}, expected (model, benchmark)")
    store_models = _models_of(models)
    names = [str(m) for m in score["model"].values]
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise BsigError(f"performance lists models {dup} more than once; keep one row per model")
    have = set(names)
    missing = [m for m in store_models if m not in have]
    extra = [m for m in names if m not in set(store_models)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"models in the store but not in the performance: {missing}")
        if extra:
            parts.append(f"models in the performance but not in the store: {extra}")
        raise BsigError("; ".join(parts) + "; model names must match exactly (fix the names or the model lists)")
    aligned = score.transpose("model", "benchmark").sel(model=store_models)
    aligned = aligned.assign_coords(model=("model", np.array(store_models, dtype=object))).astype(np.float64)
    check_scores(aligned)
    return aligned.rename("score")


# --------------------------------------------------------------------------- lm-eval


def default_metric(task_results: Mapping[str, object]) -> str | None:
    """The metric key to use for one task's lm-eval results.

    Preference: ``acc_norm,none``, ``acc,none``, ``exact_match,strict-match``, any other
    ``exact_match,*`` (sorted), then the first numeric key that is not a standard error.
    """
    numeric = [k for k, v in task_results.items() if "," in k and "_stderr" not in k and _is_number(v)]
    for key in _METRIC_PREFERENCE:
        if key in numeric:
            return key
    exact = sorted(k for k in numeric if k.startswith("exact_match,"))
    if exact:
        return exact[0]
    return numeric[0] if numeric else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_name_from_args(model_args: object) -> str | None:
    # Same precedence as lm-eval's GeneralConfigTracker._get_model_name.
    prefixes = ("peft", "delta", "pretrained", "model", "path", "engine")
    if isinstance(model_args, dict):
        for key in prefixes:
            if model_args.get(key):
                return str(model_args[key])
    elif isinstance(model_args, str):
        for key in prefixes:
            match = re.search(rf"(?:^|,)\s*{key}=([^,]+)", model_args)
            if match:
                return match.group(1).strip()
    return None


def _results_model_name(data: Mapping[str, object], file: Path, model_name_from: str) -> str:
    if model_name_from == "dir":
        return file.parent.name
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    for candidate in (data.get("model_name"), config.get("model_name"), _model_name_from_args(config.get("model_args"))):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return file.parent.name


def _results_time(data: Mapping[str, object], file: Path) -> str:
    """Sortable timestamp: lm-eval's date_id in the file name, else its ``date`` field, else mtime."""
    stem = file.stem
    stamp = stem[stem.rfind("_") + 1 :] if "_" in stem else ""
    if re.match(r"\d{4}-\d{2}-\d{2}T", stamp):
        return stamp
    when = data.get("date")
    seconds = float(when) if _is_number(when) else file.stat().st_mtime
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")


def find_results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """lm-eval ``results_*.json`` files under ``paths`` (searched recursively; files taken as given)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("results_*.json")))
        else:
            raise BsigError(f"lm-eval results path {p} does not exist; pass directories or results_*.json files")
    if not files:
        raise BsigError(f"no results_*.json files under {[str(p) for p in paths]}; point at lm-eval's --output_path")
    return files


def import_lm_eval(
    paths: Iterable[str | os.PathLike],
    *,
    metrics: Mapping[str, str] | None = None,
    model_name_from: str = "model_name",
    include: Sequence[str] | None = None,
    task_names: str = "benchmark",
    metadata: str | os.PathLike | pd.DataFrame | None = None,
) -> xr.DataArray:
    """Build ``score (model, benchmark)`` from lm-eval 0.4 ``results_*.json`` files.

    Parameters
    ----------
    paths
        Directories (searched recursively) or results files.
    metrics
        Per-task metric overrides, ``{task: "acc,none"}`` (task as lm-eval names it or its benchmark
        name); other tasks use :func:`default_metric`.
    model_name_from
        ``"model_name"`` (the results' ``model_name`` / ``config.model_args``) or ``"dir"`` (the
        folder holding the results file, lm-eval's sanitized model name).
    include
        Glob patterns of task names to keep (default: all tasks, groups included).
    task_names
        ``"benchmark"`` maps lm-eval task names onto the paper's names (``mmlu_anatomy`` → ``anatomy``,
        see :func:`canonical_benchmark`); ``"raw"`` keeps them.
    metadata
        Metadata CSV for the benchmark coordinates (default: the shipped table).

    Returns
    -------
    xarray.DataArray
        ``score`` with models sorted by name; a task a model was not run on is NaN.  When several
        results files hold the same (model, task), the newest file wins.
    """
    if model_name_from not in ("model_name", "dir"):
        raise BsigError(f"--model-name-from must be 'model_name' or 'dir', got {model_name_from!r}")
    if task_names not in ("benchmark", "raw"):
        raise BsigError(f"task names must be 'benchmark' or 'raw', got {task_names!r}")
    metrics = dict(metrics or {})
    loaded = []
    for file in find_results_files(paths):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BsigError(f"cannot read lm-eval results {file} ({type(exc).__name__}: {exc}); is it a results_*.json?") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise BsigError(f"{file} has no 'results' mapping; it is not an lm-eval results file")
        loaded.append((_results_model_name(data, file, model_name_from), _results_time(data, file), str(file), data))
    loaded.sort(key=lambda item: (item[0], item[1], item[2]))  # oldest first: newer files overwrite

    cells: dict[tuple[str, str], float] = {}
    origin: dict[str, str] = {}  # benchmark -> task it came from (to refuse two tasks on one name)
    for model, _, file, data in loaded:
        for task, res in data["results"].items():
            if include and not any(fnmatch.fnmatchcase(task, pat) for pat in include):
                continue
            if not isinstance(res, dict):
                continue
            name = canonical_benchmark(task) if task_names == "benchmark" else task
            metric = metrics.get(task) or metrics.get(name) or default_metric(res)
            if metric is None:
                continue
            if metric not in res or not _is_number(res[metric]):
                have = sorted(k for k, v in res.items() if _is_number(v) and "_stderr" not in k)
                raise BsigError(f"task {task} in {file} has no numeric metric {metric!r} (it has {have}); pick one with --metric {task}=METRIC")
            if origin.setdefault(name, task) != task:
                raise BsigError(
                    f"tasks {origin[name]!r} and {task!r} both map to benchmark {name!r}; "
                    "keep lm-eval's names (--task-names raw) or filter with --include"
                )
            cells[(model, name)] = float(res[metric])
    if not cells:
        raise BsigError("the lm-eval results hold no numeric task scores (check --include and --metric)")
    models = sorted({m for m, _ in cells})
    benchmarks = list(dict.fromkeys(b for _, b in cells))
    values = np.full((len(models), len(benchmarks)), np.nan)
    row = {m: i for i, m in enumerate(models)}
    col = {b: j for j, b in enumerate(benchmarks)}
    for (m, b), v in cells.items():
        values[row[m], col[b]] = v
    score = xr.DataArray(
        values,
        dims=("model", "benchmark"),
        coords={"model": np.array(models, dtype=object), "benchmark": np.array(benchmarks, dtype=object)},
        name="score",
    )
    return with_metadata(score, metadata)


def parse_metric_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["TASK=METRIC", ...]`` → ``{task: metric}`` (the CLI's ``--metric`` options)."""
    out = {}
    for item in items:
        task, sep, metric = item.partition("=")
        if not sep or not task.strip() or not metric.strip():
            raise BsigError(f"--metric {item!r} is not TASK=METRIC (e.g. --metric arc_easy=acc,none)")
        out[task.strip()] = metric.strip()
    return out
