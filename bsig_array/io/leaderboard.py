"""Leaderboard tables and lm-eval results → a performance matrix, with every choice reported.

:func:`import_leaderboard` reads a table (CSV, TSV, Parquet, JSON records ``[{...}, ...]`` or
columns ``{"model": [...], ...}``, JSON lines) or lm-eval results (a directory or a results JSON,
0.3 or 0.4 layout, via :mod:`bsig_array.io.lm_eval_results`) and returns ``score (model,
benchmark)`` plus one line per decision it took, in this order:

1. **Model column**: ``model_column``, else the first column named (case, spaces and dashes
   ignored) ``model``, ``model_name``, ``fullname``, ``model_id``, ``name``, ``eval_name``; none
   is an error that lists the columns.
2. **Score columns**: ``columns`` (names or globs), else every numeric column except the model and
   date columns and known non-score columns (:data:`NON_SCORE_WORDS`: ``Rank``, ``Average``,
   ``#Params (B)``, ...).  Ignored columns are listed.
3. **Names**: each column maps onto the metadata's benchmark names
   (:func:`~bsig_array.io.benchmark_metadata.canonical_benchmark`: lm-eval, harness-style and
   title-case names); two columns on one benchmark is an error.
4. **Duplicate runs** of a model (same name after stripping spaces and HTML link markup):
   ``newest`` (by ``date_column`` or a column named ``date``, ``submission_date``, ``eval_date``,
   ...; without one, the last row), ``mean`` / ``max`` (per benchmark, over the runs that have a
   score), ``first``, or ``refuse``.
5. **Scale** (per column, ``auto``): values in [0, 1] are fractions; a maximum in (1, 100] with no
   negative value is percent and divided by 100; anything else is kept as it is.  ``percent``
   divides every column, ``fraction`` keeps every column.
6. **Missing scores**: ``refuse`` (an error saying how many and what each option would drop),
   ``drop-model`` or ``drop-benchmark``.

:func:`performance_warnings` is what ``bsig performance show`` (and import) warn about: benchmarks
without metadata, zero and below-chance scores, duplicated benchmarks or models, percent-like scales.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.atomic import check_new_output
from bsig_array.io.benchmark_metadata import canonical_benchmark, chance_levels, load_metadata, with_metadata
from bsig_array.io.lm_eval_results import import_lm_eval
from bsig_array.io.scores import PERFORMANCE, accuracy_range_warning
from bsig_array.options import check_choice
from bsig_array.schema import METADATA_COLUMNS, UNKNOWN

SCALES = ("auto", "percent", "fraction")
DUPLICATE_RULES = ("newest", "mean", "max", "first", "refuse")
MISSING_RULES = ("refuse", "drop-model", "drop-benchmark")
TASK_NAMES = ("benchmark", "raw")
#: Model-column names tried in order (normalized: lower case, spaces and dashes as ``_``).
MODEL_COLUMN_NAMES = ("model", "model_name", "fullname", "model_id", "name", "eval_name")
#: Date-column names tried in order for ``--duplicates newest``.
DATE_COLUMN_NAMES = ("date", "submission_date", "eval_date", "evaluation_date", "run_date", "timestamp")
#: A numeric column is not a score when a word of its name is one of these (``#Params (B)``,
#: ``Average ⬆️``, ``Hub ❤️``, ``acc_stderr``); pass ``columns`` to keep one anyway.
NON_SCORE_WORDS = frozenset(
    "rank ranking position average avg mean overall total params param parameters size likes hub "
    "downloads license co2 cost flagged merged moe generation year index unnamed id sha precision "
    "stderr std elo votes".split()
)
_LISTED = 12  # names listed in one line before "..."


@dataclass
class ImportResult:
    """What :func:`import_leaderboard` built and the decisions it took (one line each)."""

    score: xr.DataArray
    notes: list[str] = field(default_factory=list)


def _listing(names: Sequence[object], limit: int = _LISTED) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _norm(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _words(name: object) -> set[str]:
    return {w for w in re.split(r"[^0-9a-z]+", str(name).lower()) if w}


def _is_lm_eval(path: Path) -> bool:
    """A directory, or a JSON object with a ``results`` mapping (lm-eval's layout)."""
    if path.is_dir():
        return True
    if path.suffix.lower() != ".json":
        return False
    data = _read_json(path)
    return isinstance(data, dict) and isinstance(data.get("results"), dict)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read JSON {path} ({type(exc).__name__}: {exc})") from None


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A leaderboard table as a DataFrame: CSV, TSV, Parquet, JSON (records or columns) or JSON lines."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            # pandas silently renames a repeated column "x" to "x.1"; refuse it instead.
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh, delimiter=sep), [])
            repeated = sorted({h for h in header if header.count(h) > 1})
            if repeated:
                raise InputError(f"{path} repeats columns {repeated}; keep one column each")
            table = pd.read_csv(path, sep=sep)
        elif suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        elif suffix == ".jsonl":
            table = pd.read_json(path, lines=True)
        elif suffix == ".json":
            data = _read_json(path)
            if isinstance(data, list) and all(isinstance(r, dict) for r in data):
                table = pd.DataFrame.from_records(data)
            elif isinstance(data, dict) and data and all(isinstance(v, (list, dict)) for v in data.values()):
                table = pd.DataFrame(data)  # columns: {"model": [...]} or {"model": {"0": ...}}
            else:
                raise InputError(
                    f"{path} is neither a list of records [{{\"model\": ..., ...}}] nor columns "
                    "{\"model\": [...], ...} nor lm-eval results; write one of those layouts"
                )
        else:
            raise InputError(f"unknown table format {path.suffix!r} for {path}; use .csv, .tsv, .parquet, .json or .jsonl")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read table {path} ({type(exc).__name__}: {exc})") from None
    if table.empty:
        raise InputError(f"{path} has no rows; it needs one row per model run")
    return table


def _pick_model_column(table: pd.DataFrame, model_column: str | None, source: str) -> tuple[str, str | None]:
    columns = [str(c) for c in table.columns]
    if model_column is not None:
        if model_column not in columns:
            raise OptionError(f"--model-column {model_column!r} is not a column of {source}; columns: {_listing(columns, 40)}")
        return model_column, None
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    for candidate in MODEL_COLUMN_NAMES:
        if candidate in by_norm:
            found = by_norm[candidate]
            return found, f"model column: {found!r} (pick another with --model-column)"
    raise InputError(f"{source} has no model column (model, model_name, name, ...); name it with --model-column; columns: {_listing(columns, 40)}")


def _pick_date_column(table: pd.DataFrame, date_column: str | None, source: str) -> str | None:
    columns = [str(c) for c in table.columns]
    if date_column is not None:
        if date_column not in columns:
            raise OptionError(f"--date-column {date_column!r} is not a column of {source}; columns: {_listing(columns, 40)}")
        return date_column
    by_norm = {_norm(c): c for c in reversed(columns)}
    return next((by_norm[c] for c in DATE_COLUMN_NAMES if c in by_norm), None)


def _numeric(column: pd.Series) -> pd.Series | None:
    """The column as float64 (blank/NaN → NaN), or None when some present value is not a number."""
    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64)
    text = column.astype(str).str.strip()
    present = column.notna() & (text != "") & (text.str.lower() != "nan")
    values = pd.to_numeric(text.where(present), errors="coerce")
    if values[present].isna().any() or not present.any():
        return None
    return values.astype(np.float64)


def _pick_score_columns(
    table: pd.DataFrame, columns: Sequence[str] | None, skip: set[str], source: str
) -> tuple[dict[str, pd.Series], str]:
    """({score column: its values as float64}, one line saying which columns were ignored and why)."""
    names = [str(c) for c in table.columns]
    candidates = [c for c in names if c not in skip]
    numeric = {c: _numeric(table[c]) for c in candidates}
    if columns:
        chosen: list[str] = []
        for item in columns:
            patterns = [item] if item in names else [p.strip() for p in item.split(",") if p.strip()]
            for pattern in patterns:
                hits = [c for c in candidates if fnmatch.fnmatchcase(c, pattern)]
                if not hits:
                    raise OptionError(f"--columns {pattern!r} matches no column of {source}; columns: {_listing(candidates, 40)}")
                chosen.extend(h for h in hits if h not in chosen)
        bad = [c for c in chosen if numeric[c] is None]
        if bad:
            raise InputError(f"{source}: columns {bad[:5]} are not numeric; scores must be numbers (blank for missing)")
        ignored = [c for c in candidates if c not in chosen]
        return {c: numeric[c] for c in chosen}, f"ignored {_n(len(ignored), 'column')} not in --columns: {_listing(ignored, 40)}" if ignored else ""
    not_numeric = [c for c in candidates if numeric[c] is None]
    not_score = [c for c in candidates if c not in not_numeric and _words(c) & NON_SCORE_WORDS]
    chosen = [c for c in candidates if c not in not_numeric and c not in not_score]
    if not chosen:
        raise InputError(f"{source} has no numeric score columns; name them with --columns; columns: {_listing(candidates, 40)}")
    parts = []
    if not_score:
        parts.append(f"not scores: {_listing(not_score, 40)}")
    if not_numeric:
        parts.append(f"not numeric: {_listing(not_numeric, 40)}")
    line = f"ignored {_n(len(not_score) + len(not_numeric), 'column')} ({'; '.join(parts)}); keep one with --columns" if parts else ""
    return {c: numeric[c] for c in chosen}, line


def _benchmark_names(columns: Sequence[str], task_names: str, known: Sequence[str]) -> tuple[list[str], str]:
    if task_names == "raw":
        return list(columns), ""
    names = [canonical_benchmark(c, known) for c in columns]
    seen: dict[str, str] = {}
    for col, name in zip(columns, names):
        if name in seen:
            raise InputError(
                f"columns {seen[name]!r} and {col!r} both map to benchmark {name!r}; keep one with --columns "
                "or keep the column names with --task-names raw"
            )
        seen[name] = col
    renamed = [f"{c} -> {n}" for c, n in zip(columns, names) if c != n]
    return names, f"renamed {_n(len(renamed), 'column')} to benchmark names: {_listing(renamed)}" if renamed else ""


def _apply_scale(values: pd.DataFrame, scale: str) -> tuple[pd.DataFrame, list[str]]:
    if scale == "fraction":
        return values, []
    if scale == "percent":
        outside = [c for c in values.columns if ((values[c] < 0) | (values[c] > 100)).any()]
        if outside:
            raise InputError(f"--scale percent, but columns {outside[:5]} have values outside [0, 100]; drop them with --columns")
        return values / 100.0, [f"scale: divided all {values.shape[1]} columns by 100 (--scale percent)"]
    percent, fraction, other = [], [], []
    for c in values.columns:
        col = values[c].dropna()
        if col.empty or (col.min() >= 0 and col.max() <= 1):
            fraction.append(c)
        elif col.min() >= 0 and col.max() <= 100:
            percent.append(c)
        else:
            other.append(c)
    notes = []
    if percent:
        values = values.copy()
        values[percent] = values[percent] / 100.0
        notes.append(f"scale: {_n(len(percent), 'column')} with values in (1, 100] read as percent and divided by 100 (--scale fraction keeps them)")
        if fraction:
            notes.append(
                f"scale: {_n(len(fraction), 'column')} within [0, 1] kept as fractions: {_listing(fraction)} "
                "(--scale percent if they are percent too)"
            )
    if other:
        notes.append(f"scale: {_n(len(other), 'column')} neither fractions nor percent (negative or above 100) kept as they are: {_listing(other)}")
    return values, notes


def _resolve_duplicates(
    values: pd.DataFrame, models: pd.Series, rule: str, dates: pd.Series | None, date_name: str | None, source: str
) -> tuple[pd.DataFrame, str]:
    """One row per model (order of first appearance) and a line describing what was done."""
    counts = models.value_counts(sort=False)
    dup = [str(m) for m in counts.index if counts[m] > 1]
    if not dup:
        return values.set_axis(models.to_numpy(), axis=0), ""
    runs = int(counts[counts > 1].sum())
    what = f"{_n(len(dup), 'model')} with more than one row ({runs} rows: {_listing(dup)})"
    if rule == "refuse":
        raise InputError(f"{source}: {what}; pick a rule with --duplicates newest|mean|max|first")
    order = list(dict.fromkeys(models))
    values = values.set_axis(models.to_numpy(), axis=0)
    if rule in ("mean", "max"):
        grouped = values.groupby(level=0, sort=False)
        out = grouped.mean() if rule == "mean" else grouped.max()
        how = f"per benchmark, the {rule} over each model's runs"
    elif rule == "first":
        out = values[~values.index.duplicated(keep="first")]
        how = "the first row of each"
    elif dates is not None:
        when = pd.to_datetime(dates, errors="coerce", utc=True, format="mixed")
        in_dup = models.isin(dup).to_numpy()
        unread = dates[in_dup & when.isna().to_numpy()]
        if len(unread):
            raise InputError(
                f"{source}: date column {date_name!r} has unreadable dates for duplicated models (e.g. {unread.iloc[0]!r}); "
                "fix them, name another with --date-column, or pick --duplicates first|mean|max"
            )
        position = np.arange(len(models))
        rank = pd.DataFrame({"when": when.to_numpy(), "pos": position}).sort_values(["when", "pos"], na_position="first")
        keep = np.zeros(len(models), dtype=bool)
        keep[rank.groupby(models.to_numpy()[rank.index.to_numpy()], sort=False)["pos"].last().to_numpy()] = True
        out = values[keep]
        how = f"the newest of each by {date_name!r} (the later row on equal dates)"
    else:
        out = values[~values.index.duplicated(keep="last")]
        how = "the last row of each: no date column (name one with --date-column)"
    return out.loc[order], f"duplicates: {what}; kept {how} (--duplicates {rule})"


def _handle_missing(values: pd.DataFrame, rule: str, source: str) -> tuple[pd.DataFrame, str]:
    missing = values.isna()
    n = int(missing.to_numpy().sum())
    if n == 0:
        return values, ""
    bad_models = [str(m) for m in values.index[missing.any(axis=1)]]
    bad_benchmarks = [str(b) for b in values.columns[missing.any(axis=0)]]
    where = f"{_n(n, 'missing score')} in {_n(len(bad_models), 'model')} and {_n(len(bad_benchmarks), 'benchmark')}"
    if rule == "refuse":
        r, c = np.argwhere(missing.to_numpy())[0]
        raise InputError(
            f"{source}: {where} (e.g. {values.index[r]}/{values.columns[c]}); pass --missing drop-model "
            f"(drops {len(bad_models)} of {values.shape[0]} models) or --missing drop-benchmark "
            f"(drops {len(bad_benchmarks)} of {values.shape[1]} benchmarks)"
        )
    if rule == "drop-model":
        out = values.drop(index=[m for m in values.index if str(m) in set(bad_models)])
        line = f"missing: {where}; dropped models {_listing(bad_models)} (--missing drop-model)"
    else:
        out = values.drop(columns=[b for b in values.columns if str(b) in set(bad_benchmarks)])
        line = f"missing: {where}; dropped benchmarks {_listing(bad_benchmarks)} (--missing drop-benchmark)"
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"{source}: {where}; --missing {rule} would drop everything; try the other --missing rule")
    return out, line


def check_import_output(
    path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool, metadata: str | os.PathLike | None = None
) -> Path:
    """Refuse an existing ``out`` without ``overwrite``, and an ``out`` that is an input (always)."""
    return check_new_output(out, overwrite=overwrite, what="performance output", kind=PERFORMANCE, inputs=[path, metadata])


def import_leaderboard(
    path: str | os.PathLike,
    *,
    model_column: str | None = None,
    columns: Sequence[str] | None = None,
    scale: str = "auto",
    duplicates: str = "newest",
    date_column: str | None = None,
    missing: str = "refuse",
    task_names: str = "benchmark",
    metadata: str | os.PathLike | pd.DataFrame | None = None,
    metrics: Mapping[str, str] | None = None,
) -> ImportResult:
    """Read a leaderboard table or lm-eval results into ``score (model, benchmark)``.

    Parameters
    ----------
    path
        A table (``.csv``, ``.tsv``, ``.parquet``, ``.json`` records or columns, ``.jsonl``), or
        lm-eval results (a directory searched for ``results*.json``, or one results JSON).
    model_column, columns, scale, duplicates, date_column, missing
        See the module docstring; ``columns`` are names or globs (comma-separated allowed).
    task_names
        ``"benchmark"`` maps column/task names onto the metadata's names; ``"raw"`` keeps them.
    metadata
        Metadata CSV or DataFrame (default: the shipped table) for the names and coordinates.
    metrics
        lm-eval only: per-task metric overrides (``{"gsm8k": "exact_match,flexible-extract"}``).

    Returns
    -------
    ImportResult
        The score matrix (float64, benchmark metadata as coordinates) and one note per decision.
    """
    check_choice(scale, SCALES, "--scale")
    check_choice(duplicates, DUPLICATE_RULES, "--duplicates rule")
    check_choice(missing, MISSING_RULES, "--missing rule")
    check_choice(task_names, TASK_NAMES, "--task-names")
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; pass a leaderboard table or lm-eval results")
    meta = metadata if isinstance(metadata, pd.DataFrame) else load_metadata(metadata)
    notes: list[str] = []
    if _is_lm_eval(path):  # reads a .json once more below: results files are small
        if model_column or columns or date_column:
            raise OptionError("--model-column, --columns and --date-column apply to tables, not to lm-eval results")
        lm = import_lm_eval([path], metrics=metrics, task_names=task_names, metadata=meta)
        notes.append(f"lm-eval results: {_n(lm.sizes['model'], 'model')}, {_n(lm.sizes['benchmark'], 'task')} (the newest file wins per model and task)")
        values = lm.to_pandas()
    else:
        if metrics:
            raise OptionError("--metric applies to lm-eval results, not to tables")
        table = read_table(path)
        table.columns = [str(c) for c in table.columns]
        model_col, line = _pick_model_column(table, model_column, source)
        notes += [line] if line else []
        models = table[model_col].astype(str).str.strip().reset_index(drop=True)
        blank = table[model_col].isna().to_numpy() | (models == "").to_numpy()
        if blank.any():
            raise InputError(f"{source}: {_n(int(blank.sum()), 'row')} without a model name in {model_col!r}; fill or drop them")
        if models.str.contains(r"<[^>]+>").any():  # leaderboards that export names as HTML links
            models = models.str.replace(r"<[^>]+>", "", regex=True).str.strip()
            notes.append(f"model names: removed HTML markup from {model_col!r}")
        date_col = _pick_date_column(table, date_column, source)
        skip = {model_col} | ({date_col} if date_col else set())
        score_cols, line = _pick_score_columns(table, columns, skip, source)
        notes += [line] if line else []
        names, line = _benchmark_names(list(score_cols), task_names, [str(b) for b in meta.index])
        notes += [line] if line else []
        values = pd.DataFrame(dict(zip(names, (col.to_numpy() for col in score_cols.values()))), columns=names)
        dates = table[date_col].reset_index(drop=True) if (date_col and duplicates == "newest") else None
        values, line = _resolve_duplicates(values, models, duplicates, dates, date_col, source)
        notes += [line] if line else []
    values, lines = _apply_scale(values, scale)
    notes += lines
    values, line = _handle_missing(values, missing, source)
    notes += [line] if line else []
    score = xr.DataArray(
        values.to_numpy(dtype=np.float64),
        dims=("model", "benchmark"),
        coords={
            "model": np.array([str(m) for m in values.index], dtype=object),
            "benchmark": np.array([str(b) for b in values.columns], dtype=object),
        },
        name="score",
    )
    return ImportResult(with_metadata(score, meta), notes)


def performance_warnings(score: xr.DataArray, metadata: str | os.PathLike | pd.DataFrame | None = None) -> list[str]:
    """One line per kind of problem a score matrix may hide (empty when there is none).

    Kinds: benchmarks without metadata; zero scores; scores below chance (from the metadata's
    ``choices``/``format``, see :func:`~bsig_array.io.benchmark_metadata.chance_levels`; nonzero
    scores only); two columns on one benchmark; models with equal names up to case and spaces, or
    identical scores on every benchmark (three or more); benchmarks whose scores look like percent.
    """
    score = score.transpose("model", "benchmark")
    models = [str(m) for m in score["model"].values]
    benchmarks = [str(b) for b in score["benchmark"].values]
    values = np.asarray(score.values, dtype=np.float64)
    lines = []
    if all(c in score.coords for c in METADATA_COLUMNS):
        bare = [b for j, b in enumerate(benchmarks) if all(str(score[c].values[j]) == UNKNOWN for c in METADATA_COLUMNS)]
        if bare:
            lines.append(
                f"{_n(len(bare), 'benchmark')} without metadata (family/format/category/function unknown): {_listing(bare)}; "
                "pass --metadata with rows for them"
            )
    zero = [(b, [models[i] for i in np.flatnonzero(values[:, j] == 0)]) for j, b in enumerate(benchmarks)]
    zero = [(b, ms) for b, ms in zero if ms]
    if zero:
        n = sum(len(ms) for _, ms in zero)
        lines.append(f"{_n(n, 'zero score')} (failed runs?) in {_n(len(zero), 'benchmark')}: " + _listing([f"{b} ({_listing(ms, 3)})" for b, ms in zero], 6))
    chance = chance_levels(score, metadata)
    below = []
    for j, b in enumerate(benchmarks):
        level = chance[b]
        hit = np.flatnonzero((values[:, j] > 0) & (values[:, j] < level))
        if len(hit):
            below.append((b, level, [f"{models[i]} {values[i, j]:.3g}" for i in hit]))
    if below:
        n = sum(len(ms) for _, _, ms in below)
        lines.append(
            f"{_n(n, 'score')} below chance in {_n(len(below), 'benchmark')} (a failed run, a wrong metric or a percent/fraction mix?): "
            + _listing([f"{b} < {level:.3g} ({_listing(ms, 3)})" for b, level, ms in below], 6)
        )
    known = list(load_metadata(metadata).index) if not isinstance(metadata, pd.DataFrame) else [str(i) for i in metadata.index]
    same: dict[str, list[str]] = {}
    for b in benchmarks:
        same.setdefault(canonical_benchmark(b, known), []).append(b)
    clash = [f"{' and '.join(bs)} are all {key!r}" for key, bs in same.items() if len(bs) > 1]
    if clash:
        lines.append(f"duplicate benchmarks: {_listing(clash, 6)}; keep one column each")
    spelled: dict[str, list[str]] = {}
    for m in models:
        spelled.setdefault(re.sub(r"\s+", "", m.lower()), []).append(m)
    near = [" / ".join(ms) for ms in spelled.values() if len(ms) > 1]
    if near:
        lines.append(f"model names that differ only in case or spaces (duplicate runs?): {_listing(near, 6)}")
    if len(benchmarks) >= 3:
        rows: dict[bytes, list[str]] = {}
        for i, m in enumerate(models):
            if np.isfinite(values[i]).all():
                rows.setdefault(values[i].tobytes(), []).append(m)
        twins = [" = ".join(ms) for ms in rows.values() if len(ms) > 1]
        if twins:
            lines.append(f"models with identical scores on all {len(benchmarks)} benchmarks (duplicate runs?): {_listing(twins, 6)}")
    finite = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        top = np.nanmax(np.where(np.isnan(finite), -np.inf, finite), axis=0)
        low = np.nanmin(np.where(np.isnan(finite), np.inf, finite), axis=0)
    percent = [b for j, b in enumerate(benchmarks) if 1 < top[j] <= 100 and low[j] >= 0]
    if percent:
        lines.append(
            f"{_n(len(percent), 'benchmark')} with scores in (1, 100], which look like percent: {_listing(percent)}; "
            "bsig performance import --scale auto divides them by 100"
        )
    out_of_range = accuracy_range_warning(score, skip=percent)  # accuracies outside [0, 1], not percent-like
    if out_of_range:
        lines.append(out_of_range)
    return lines
