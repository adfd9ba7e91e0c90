"""Benchmark metadata: ``family``, ``format``, ``category`` and ``function`` of each benchmark.

Read from a metadata CSV (``benchmark`` plus the four columns) or the shipped default table, and
attached to a score matrix as coordinates along ``benchmark``; names from lm-eval are mapped onto
the paper's benchmark names by :func:`canonical_benchmark`.

The shipped table ``bsig_array/data/benchmarks.csv`` is the paper's benchmark list
(``shared/paper/benchmarks.csv``: Table 2's 88 MMLU and BBH rows, then GSM8K, MBPP, MMLU,
TruthfulQA, IFEval, AbsenceBench) with its ``family`` and ``format`` (Table 3; a blank format reads
as ``unknown``), with these corrections and additions (docs/performance.md, "Benchmark metadata", lists the source
of every label):

``family`` — the paper's, except ``global_facts``: Table 2 lists it under BBH, but it is one of the
57 MMLU subjects (Hendrycks et al.; lm-eval ``mmlu_global_facts``), so it is ``mmlu``.

``format`` — ``multiple_choice``, ``true_false`` or ``free_form``.  MMLU (every subject and the
aggregates) is 4-way multiple choice.  The six BBH formats the paper states (``true_false``) are kept;
the other 21 BBH tasks are labelled from the BBH task definitions (Suzgun et al. 2022; the answer
options in lm-eval's ``leaderboard/bbh_mc/<task>.yaml``): yes/no, True/False and valid/invalid answers
are ``true_false`` (``boolean_expressions``, ``causal_judgement``, ``formal_fallacies``, ``navigate``,
``sports_understanding``, ``web_of_lies``); lettered options (A)... are ``multiple_choice``; tasks
whose answer is generated text (``dyck_languages``, ``word_sorting``, ``multistep_arithmetic_two``,
``object_counting``: a number, a sorted word list or a bracket sequence) are ``free_form``.

``choices`` — answer options per question, for the chance level (:func:`chance_levels`): 4 for MMLU,
2 for true/false, and for BBH multiple choice the length of the task's option list in lm-eval's
leaderboard task (the most any question offers, so ``1/choices`` is a lower bound of chance); blank
for free-form and unstated formats.  It is not a coordinate of the score matrix.

Two columns are added here:

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
``high_school_macroeconomics`` is the paper's ``high_school_macro_economics``); harness-style names
of lm-eval 0.3 and the Open LLM Leaderboard (``harness|hendrycksTest-anatomy|5``,
``hendrycksTest-anatomy``) and title-case column names (``High School Biology``) map too; see
:func:`canonical_benchmark`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.location import Location, as_location
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


_TASK_ALIASES = {
    "truthfulqa_mc2": "truthfulqa",
    "truthfulqa_mc": "truthfulqa",  # harness 0.3 / Open LLM Leaderboard v1 "truthfulqa:mc"
    "mmlu_continuation": "mmlu",
    "hendrycksTest": "mmlu",
}

# lm-eval 0.3 / Open LLM Leaderboard v1 result keys: "harness|<task>|<n-shot>".
_HARNESS = re.compile(r"^harness\|(?P<task>[^|]+)\|\d+$")
# lm-eval 0.3 MMLU task prefix ("hendrycksTest-anatomy").
_OLD_PREFIXES = ("hendrycksTest-",)


def load_metadata(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Benchmark metadata indexed by ``benchmark`` with columns family, format, category, function.

    Parameters
    ----------
    path
        A CSV with a ``benchmark`` column and any of the metadata columns (missing columns and blank
        cells read as ``"unknown"``); None for the shipped default table.
    """
    return _read_table(path)[list(METADATA_COLUMNS)]


def _read_table(path: str | os.PathLike | None) -> pd.DataFrame:
    """The metadata CSV with every column (``choices`` included), indexed by ``benchmark``."""
    if path is None:
        with resources.files("bsig_array.data").joinpath("benchmarks.csv").open("r") as fh:
            table = pd.read_csv(fh, dtype=str, keep_default_na=False)
        source = "the shipped benchmarks.csv"
    else:
        loc = as_location(path)
        if not (loc.exists() and not loc.is_dir()):
            raise InputError(f"metadata file {loc} does not exist; pass a CSV with benchmark,family,format,category,function")
        try:
            with loc.open("rb") as fh:
                table = pd.read_csv(fh, dtype=str, keep_default_na=False)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read metadata CSV {loc} ({type(exc).__name__}: {exc})") from None
        source = str(loc)
    if "benchmark" not in table.columns:
        raise InputError(f"metadata {source} has no 'benchmark' column (found {list(table.columns)}); add one")
    dup = duplicates(table["benchmark"])
    if dup:
        raise InputError(f"metadata {source} lists benchmarks {dup} more than once; keep one row per benchmark")
    for col in METADATA_COLUMNS:
        if col not in table.columns:
            table[col] = UNKNOWN
        table[col] = table[col].str.strip().replace("", UNKNOWN)
    return table.set_index("benchmark")


def write_metadata(table: pd.DataFrame, path: str | os.PathLike | Location) -> Path:
    """Write a metadata table (indexed by ``benchmark``) as CSV, atomically; :func:`load_metadata` reads it.

    ``path`` may be an object-store URL: the CSV is then written locally and published in one PUT.
    Returns the local path (for a URL, its :class:`~bsig_array.io.location.Location`).
    """
    loc = as_location(path)
    with atomic_output(loc) as tmp:
        table.reset_index().to_csv(tmp, index=False)
    return loc.path if loc.is_local else loc  # type: ignore[return-value]  # a Location: every reader takes both


@lru_cache(maxsize=1)
def _default_lookup() -> dict[str, str]:
    """Default-table benchmark names keyed by their underscore-free spelling."""
    return {name.replace("_", ""): name for name in load_metadata().index}


def _harness_core(name: str) -> str | None:
    """``harness|hendrycksTest-anatomy|5`` → ``anatomy``; ``harness|arc:challenge|25`` → ``arc_challenge``.

    None when ``name`` is not harness-style (no ``harness|`` wrapper and no old MMLU prefix).
    """
    match = _HARNESS.match(name)
    core = match.group("task") if match else name
    for prefix in _OLD_PREFIXES:
        if core.startswith(prefix):
            core = core[len(prefix) :]
            break
    else:
        if match is None:
            return None
    return re.sub(r"[:\-]", "_", core)


def _slug(name: str) -> str:
    """``High School Biology`` → ``high_school_biology`` (lower case, runs of other characters → ``_``)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def canonical_benchmark(name: str, known: Iterable[str] | None = None) -> str:
    """The benchmark name of an lm-eval task or leaderboard column (``mmlu_anatomy`` → ``anatomy``).

    Tried in order: the exact name; lm-eval aliases and task prefixes (``mmlu_``, ``bbh_*_``,
    ``leaderboard_bbh_``, ...) with underscores ignored; the same on the harness-style core
    (``harness|hendrycksTest-anatomy|5`` → ``anatomy``); the same on the lower-case slug
    (``Boolean Expressions`` → ``boolean_expressions``).  An unknown name comes back unchanged, except
    that a harness-style name comes back as its core (``harness|arc:challenge|25`` → ``arc_challenge``).

    Parameters
    ----------
    name
        A task, column or benchmark name.
    known
        Benchmark names to map onto (default: the shipped table).
    """
    if known is not None:
        known = list(known)
        if name in known:
            return name
    lookup = _default_lookup() if known is None else {k.replace("_", ""): k for k in known}

    def find(candidate: str) -> str | None:
        hit = lookup.get(candidate.replace("_", ""))
        if hit is None and candidate in _TASK_ALIASES:
            hit = lookup.get(_TASK_ALIASES[candidate].replace("_", ""))
        for prefix in _TASK_PREFIXES:
            if hit is None and candidate.startswith(prefix):
                hit = lookup.get(candidate[len(prefix) :].replace("_", ""))
        return hit

    core = _harness_core(name)
    for candidate in (name, core, _slug(core or name)):
        if candidate and (hit := find(candidate)) is not None:
            return hit
    return core or name


def chance_levels(score: xr.DataArray, metadata: str | os.PathLike | pd.DataFrame | None = None) -> dict[str, float]:
    """Chance score of each benchmark of ``score``: ``1/choices``, else 0.5 for ``true_false``, else 0.

    ``choices`` comes from the metadata table (the shipped one lists MMLU and BBH; see the module
    docstring); a ``format`` coordinate of ``true_false`` gives 0.5 where the table has no count.
    0 means "unknown": only a zero score is below it.
    """
    table = metadata if isinstance(metadata, pd.DataFrame) else _read_table(metadata)
    choices = table["choices"] if "choices" in table.columns else pd.Series(dtype=object)
    known = [str(b) for b in table.index]
    formats = score["format"].values if "format" in score.coords else [UNKNOWN] * score.sizes["benchmark"]
    out = {}
    for name, fmt in zip((str(b) for b in score["benchmark"].values), formats):
        key = canonical_benchmark(name, known)
        count = pd.to_numeric(pd.Series([choices.get(key, "")]), errors="coerce").iloc[0]
        if count >= 2:
            out[name] = 1.0 / float(count)
        else:
            out[name] = 0.5 if str(fmt) == "true_false" else 0.0
    return out


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
