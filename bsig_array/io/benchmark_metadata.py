"""Benchmark metadata: ``family``, ``format``, ``category`` and ``function`` of each benchmark.

Read from a metadata CSV (``benchmark`` plus the four columns) or the shipped default table, and
attached to a score matrix as coordinates along ``benchmark``; names from lm-eval are mapped onto
the paper's benchmark names by :func:`canonical_benchmark`.

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

import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.options import duplicates
from bsig_array.schema import METADATA_COLUMNS, UNKNOWN

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
            raise InputError(f"metadata file {path} does not exist; pass a CSV with benchmark,family,format,category,function")
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise InputError(f"cannot read metadata CSV {path} ({type(exc).__name__}: {exc})") from None
        source = str(path)
    if "benchmark" not in table.columns:
        raise InputError(f"metadata {source} has no 'benchmark' column (found {list(table.columns)}); add one")
    dup = duplicates(table["benchmark"])
    if dup:
        raise InputError(f"metadata {source} lists benchmarks {dup} more than once; keep one row per benchmark")
    for col in METADATA_COLUMNS:
        if col not in table.columns:
            table[col] = UNKNOWN
        table[col] = table[col].str.strip().replace("", UNKNOWN)
    return table.set_index("benchmark")[list(METADATA_COLUMNS)]


def write_metadata(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a metadata table (indexed by ``benchmark``) as CSV, atomically; :func:`load_metadata` reads it."""
    path = Path(path)
    with atomic_output(path) as tmp:
        table.reset_index().to_csv(tmp, index=False)
    return path


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
