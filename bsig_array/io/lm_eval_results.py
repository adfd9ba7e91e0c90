"""lm-eval ``results_*.json`` files → a performance matrix ``score (model, benchmark)``.

Both layouts are read: lm-eval 0.4 (metric keys ``acc,none``, ``exact_match,strict-match``) and
lm-eval 0.3 / the Open LLM Leaderboard v1 results (metric keys without a filter, ``acc_norm``,
``acc``, ``mc2``; task keys such as ``hendrycksTest-anatomy`` or ``harness|hendrycksTest-anatomy|5``;
the model in ``config.model_args`` or ``config_general.model_name``; the aggregate ``all`` is skipped).
The model name comes from ``model_name`` / ``config.model_args`` or the results folder; when
several files cover the same (model, task) the newest wins; task names map onto the paper's
benchmark names (:func:`~bsig_array.io.benchmark_metadata.canonical_benchmark`).  Default metric:
see :func:`default_metric`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeGuard

import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.benchmark_metadata import canonical_benchmark, with_metadata

# Metric preference for lm-eval results (first match wins); see default_metric.  The keys without
# ",none" are lm-eval 0.3's (no filters); "mc2" is TruthfulQA-MC's score in 0.3.
_METRIC_PREFERENCE = ("acc_norm,none", "acc_norm", "acc,none", "acc", "mc2", "exact_match,strict-match", "exact_match")
# Result keys that are not tasks: the Open LLM Leaderboard v1's average over all tasks.
_NOT_TASKS = ("all",)


def default_metric(task_results: Mapping[str, object]) -> str | None:
    """The metric key to use for one task's lm-eval results.

    Preference: ``acc_norm,none`` (0.4) or ``acc_norm`` (0.3), ``acc,none`` or ``acc``, ``mc2``,
    ``exact_match,strict-match`` or ``exact_match``, any other ``exact_match,*`` (sorted), then the
    first numeric key that is not a standard error.
    """
    numeric = [k for k, v in task_results.items() if "_stderr" not in k and _is_number(v)]
    for key in _METRIC_PREFERENCE:
        if key in numeric:
            return key
    exact = sorted(k for k in numeric if k.startswith("exact_match,"))
    if exact:
        return exact[0]
    return numeric[0] if numeric else None


def _is_number(value: object) -> TypeGuard[int | float]:
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
    raw_config = data.get("config")
    config: Mapping[str, object] = raw_config if isinstance(raw_config, dict) else {}
    raw_general = data.get("config_general")  # Open LLM Leaderboard v1 results
    general: Mapping[str, object] = raw_general if isinstance(raw_general, dict) else {}
    candidates = (data.get("model_name"), config.get("model_name"), general.get("model_name"), _model_name_from_args(config.get("model_args")))
    for candidate in candidates:
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
    """lm-eval ``results*.json`` files under ``paths`` (searched recursively; files taken as given).

    ``results.json`` is lm-eval 0.3's usual ``--output_path``; 0.4 writes ``results_<date>.json``.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("results*.json")))
        else:
            raise InputError(f"lm-eval results path {p} does not exist; pass directories or results_*.json files")
    if not files:
        raise InputError(f"no results_*.json (or results.json) files under {[str(p) for p in paths]}; point at lm-eval's --output_path")
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
    """Build ``score (model, benchmark)`` from lm-eval 0.3 or 0.4 results files.

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
        raise OptionError(f"--model-name-from must be 'model_name' or 'dir', got {model_name_from!r}")
    if task_names not in ("benchmark", "raw"):
        raise OptionError(f"task names must be 'benchmark' or 'raw', got {task_names!r}")
    metrics = dict(metrics or {})
    loaded = []
    for file in find_results_files(paths):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read lm-eval results {file} ({type(exc).__name__}: {exc}); is it a results_*.json?") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise InputError(f"{file} has no 'results' mapping; it is not an lm-eval results file")
        loaded.append((_results_model_name(data, file, model_name_from), _results_time(data, file), str(file), data))
    loaded.sort(key=lambda item: (item[0], item[1], item[2]))  # oldest first: newer files overwrite

    cells: dict[tuple[str, str], float] = {}
    origin: dict[str, str] = {}  # benchmark -> task it came from (to refuse two tasks on one name)
    for model, _, source, data in loaded:
        for task, res in data["results"].items():
            if include and not any(fnmatch.fnmatchcase(task, pat) for pat in include):
                continue
            if not isinstance(res, dict) or task in _NOT_TASKS:
                continue
            name = canonical_benchmark(task) if task_names == "benchmark" else task
            metric = metrics.get(task) or metrics.get(name) or default_metric(res)
            if metric is None:
                continue
            if metric not in res or not _is_number(res[metric]):
                have = sorted(k for k, v in res.items() if _is_number(v) and "_stderr" not in k)
                raise InputError(f"task {task} in {source} has no numeric metric {metric!r} (it has {have}); pick one with --metric {task}=METRIC")
            if origin.setdefault(name, task) != task:
                raise InputError(
                    f"tasks {origin[name]!r} and {task!r} both map to benchmark {name!r}; "
                    "keep lm-eval's names (--task-names raw) or filter with --include"
                )
            cells[(model, name)] = float(res[metric])
    if not cells:
        raise InputError("the lm-eval results hold no numeric task scores (check --include and --metric)")
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
            raise InputError(f"--metric {item!r} is not TASK=METRIC (e.g. --metric arc_easy=acc,none)")
        out[task.strip()] = metric.strip()
    return out
