"""Stats stage: statistics on an overlap matrix (paper §4, A.6): categories, family/format, functions, cliques.

Pairwise overlaps share benchmarks: the n(n − 1)/2 pairs of n benchmarks are not independent, so
every test here permutes *benchmark labels* over the fixed matrix (a Mantel/QAP-style test) and
recomputes the statistic; the category sizes are kept.  With R permutations the two-sided p-value is
``(1 + #{|null| ≥ |observed|}) / (R + 1)``; when the benchmarks admit no more orderings than R
(n! ≤ R, e.g. n ≤ 7 at the default) every permutation is enumerated and p is exact:
``#{|null| ≥ |observed|} / n!`` (the identity included).  Labels ``unknown`` or blank never form a
category: their benchmarks leave the test, and the number of pairs left out is reported
(``n_pairs_excluded``).

Within- vs cross-category (Table 5).  Let ``M`` be the overlap matrix and ``mean(c, d)`` the mean of
``M[a, b]`` over pairs of distinct benchmarks ``a ∈ c``, ``b ∈ d`` (NaN entries skipped).  For category
``c``: ``within = mean(c, c)``; ``cross`` = the mean over the other categories ``d`` of ``mean(c, d)``,
so every category pair weighs the same whatever its size; ``diff = within − cross`` and
``diff% = diff / |cross| · 100``, left out (NaN, printed ``n/a``) when ``|cross| <``
:data:`DIFF_PCT_MIN_CROSS`, where a ratio to a near-zero number means nothing.  The ``overall`` row
compares the mean of the within values with the mean over category pairs.  The statistic permuted
is ``diff``.

Same vs different family and format (Figure 5): the overlaps of unordered pairs whose labels are
the same vs different.  ``p_value`` is the benchmark-label permutation test of
``diff = mean(same) − mean(different)``.  The paper's two-sided Mann–Whitney U test (scipy) stays
as ``U_paper`` / ``p_paper``; it treats the pairs as independent observations, so it is far too
small when a few benchmarks drive many pairs.

Function matrix (Figure 1 left): ``mean(f, g)`` over the benchmarks' ``function`` labels.

Maximum cliques: every largest set of benchmarks whose pairwise overlaps all exceed ``threshold``
(networkx ``find_cliques`` enumerates the maximal cliques; those of the largest size are kept), one
row per (clique, member).  No pair above the threshold gives an empty table and a warning naming the
largest overlap.  The tables are written by :mod:`bsig_array.io.stats_tables`.

Too little to test: an overlap of one benchmark (no pair) is refused.  A within_cross table without
a testable category (fewer than two known categories, or none with two benchmarks) is one ``overall``
row without values whose ``note`` says ``not testable: <reason>``; a family/format row without both
same- and different-label pairs gets such a ``note`` too (the column exists only when a row needs
it).  Two benchmarks (one pair) are computed with a warning: no test can run on them; the function
matrix and the clique still describe the pair.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import networkx as nx
import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from bsig_array.errors import BsigWarning, InputError, PlanError
from bsig_array.io.benchmark_metadata import benchmark_metadata
from bsig_array.options import check_count, check_number, check_seed
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import METADATA_COLUMNS, UNKNOWN

#: diff% is left out (NaN, "n/a") when |cross| is below this: a ratio to ~0 explodes (e.g. 4809 %).
DIFF_PCT_MIN_CROSS = 0.05
#: Maximal cliques enumerated before giving up (find_cliques is exponential on adversarial graphs).
MAX_CLIQUES_ENUMERATED = 1_000_000


def overlap_metadata(overlap: xr.Dataset, metadata: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Metadata of the overlap's benchmarks (rows in matrix order).

    From ``metadata`` (a CSV path or a table indexed by benchmark) when given, else from the
    overlap's ``<key>_a`` coordinates, else from the shipped default table.
    """
    benchmarks = [str(b) for b in overlap["benchmark_a"].values]
    if metadata is None and all(f"{k}_a" in overlap.coords for k in METADATA_COLUMNS):
        table = pd.DataFrame({k: [str(v) for v in overlap[f"{k}_a"].values] for k in METADATA_COLUMNS}, index=benchmarks)
    else:
        table = benchmark_metadata(benchmarks, metadata)
    table.index.name = "benchmark"
    return table.replace({"": UNKNOWN, "nan": UNKNOWN})


def level_matrix(overlap: xr.Dataset, level: str) -> np.ndarray:
    """The ``level`` matrix as float64 (rows benchmark_a, columns benchmark_b)."""
    if level not in overlap:
        raise InputError(f"the overlap file has no {level!r} matrix (it has {sorted(overlap.data_vars, key=str)}); pick another --level")
    m = np.asarray(overlap[level].transpose("benchmark_a", "benchmark_b").values, dtype=np.float64)
    if not np.isfinite(m).any():
        raise InputError(f"the {level} overlap is all NaN ({overlap[level].attrs.get('reason', 'no data')}); pick another --level")
    return m


def _pair_sums(m: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of finite off-diagonal entries per (category, category) for batched labels.

    ``onehot`` is (R, B, C); returns two (R, C, C) arrays.
    """
    finite = np.isfinite(m) & ~np.eye(len(m), dtype=bool)
    values = np.where(finite, m, 0.0)
    lt = np.swapaxes(onehot, 1, 2)
    return lt @ values @ onehot, lt @ finite.astype(np.float64) @ onehot


def _within_cross_diffs(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per category (last column: overall) ``within`` and ``cross`` means, shape (R, C + 1) each."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    C = means.shape[-1]
    diag = np.eye(C, dtype=bool)
    within = means[:, diag]
    off = np.where(diag, np.nan, means)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: categories of one benchmark
        cross = np.nanmean(off, axis=2)
        overall_within = np.nanmean(within, axis=1)
        iu = np.triu_indices(C, 1)
        overall_cross = np.nanmean(means[:, iu[0], iu[1]], axis=1) if C > 1 else np.full(len(means), np.nan)
    return np.column_stack([within, overall_within]), np.column_stack([cross, overall_cross])


def known_labels(labels: Sequence[str]) -> np.ndarray:
    """Mask of labels that name a category: not ``unknown``, blank or ``nan`` (case-insensitive)."""
    text = np.asarray([str(x).strip().lower() for x in labels], dtype=object)
    return ~np.isin(text, [UNKNOWN, "", "nan", "none"])


def _permutation_batches(n: int, permutations: int, seed: int, batch: int) -> tuple[Iterator[np.ndarray], int, bool]:
    """Batches ``(r, n)`` of index permutations: all n! when n! ≤ ``permutations``, else random ones.

    Returns the batches, how many permutations they hold and whether they are exhaustive.
    """
    if math.factorial(n) <= permutations:
        total = math.factorial(n)

        def every() -> Iterator[np.ndarray]:
            it = itertools.permutations(range(n))
            while chunk := list(itertools.islice(it, batch)):
                yield np.array(chunk, dtype=np.int64).reshape(len(chunk), n)

        return every(), total, True

    def drawn() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        done = 0
        while done < permutations:
            r = min(batch, permutations - done)
            yield np.argsort(rng.random((r, n)), axis=1)
            done += r

    return drawn(), int(permutations), False


def permutation_p(
    observed: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    permutations: int,
    seed: int,
    batch: int = 500,
) -> tuple[np.ndarray, int, bool]:
    """Two-sided label-permutation p-values of ``observed`` (K,).

    ``statistic`` maps a batch of index permutations ``(r, n)`` (permuted label ``i`` = original
    label ``perm[i]``) to the statistics ``(r, K)``.  Returns the p-values, the number of
    permutations and whether they were exhaustive (p exact) — see the module docstring.
    """
    batches, total, exact = _permutation_batches(n, permutations, seed, batch)
    exceed = np.zeros(len(observed))
    for perms in batches:
        null = statistic(perms)
        # tolerance: relabelings that reproduce the observed grouping tie with it exactly
        exceed += (np.abs(null) >= np.abs(observed) * (1 - 1e-12) - 1e-15).sum(axis=0)
    p = exceed / total if exact else (1 + exceed) / (total + 1)
    return p, total, exact


def _excluded_pairs(known: np.ndarray) -> int:
    n, k = len(known), int(known.sum())
    return n * (n - 1) // 2 - k * (k - 1) // 2


def within_cross(
    m: np.ndarray,
    categories: Sequence[str],
    *,
    resamples: int = DEFAULTS.resamples,
    seed: int = DEFAULTS.seed,
    batch: int = 500,
) -> pd.DataFrame:
    """Within- vs cross-category overlap per category with benchmark-label permutation p-values (Table 5).

    Benchmarks whose category is unknown or blank are left out (``n_pairs_excluded``).

    Returns
    -------
    pandas.DataFrame
        One row per category (those with at least two benchmarks) and ``overall``: columns
        ``n_benchmarks, within, cross, diff, diff_pct, p_value, permutations, n_pairs_excluded``.
    """
    known = known_labels(categories)
    m = np.asarray(m, dtype=np.float64)[np.ix_(known, known)]
    labels = np.asarray([str(c) for c in categories], dtype=object)[known].astype(str)
    names, codes = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise InputError(
            f"within- vs cross-category needs at least two known categories, got {list(names)}; "
            "pass --metadata with a category column"
        )
    eye = np.eye(len(names))
    within, cross = _within_cross_diffs(*_pair_sums(m, eye[codes][None]))
    observed = (within - cross)[0]

    def statistic(perms: np.ndarray) -> np.ndarray:
        w, c = _within_cross_diffs(*_pair_sums(m, eye[codes[perms]]))
        return w - c

    p, total, _ = permutation_p(observed, statistic, len(codes), permutations=resamples, seed=seed, batch=batch)
    sizes = np.bincount(codes, minlength=len(names))
    rows = []
    for j, name in enumerate([*names, "overall"]):
        n = int(sizes[j]) if j < len(names) else len(codes)
        if not np.isfinite(observed[j]):
            continue
        cj = cross[0, j]
        rows.append(
            {
                "category": name,
                "n_benchmarks": n,
                "within": within[0, j],
                "cross": cj,
                "diff": observed[j],
                "diff_pct": observed[j] / abs(cj) * 100 if abs(cj) >= DIFF_PCT_MIN_CROSS else np.nan,
                "p_value": p[j],
                "permutations": total,
                "n_pairs_excluded": _excluded_pairs(known),
            }
        )
    columns = ["category", "n_benchmarks", "within", "cross", "diff", "diff_pct", "p_value", "permutations", "n_pairs_excluded"]
    return pd.DataFrame(rows, columns=columns).set_index("category")


def _pairs(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(len(m), 1)
    keep = np.isfinite(m[a, b])
    return a[keep], b[keep]


def same_vs_different(
    m: np.ndarray,
    meta: pd.DataFrame,
    attributes: Sequence[str] = ("family", "format"),
    *,
    permutations: int = 10_000,
    seed: int = DEFAULTS.seed,
    batch: int = 500,
) -> pd.DataFrame:
    """Overlap of same- vs different-label pairs (Figure 5): a benchmark-label permutation test and the paper's U test.

    Per attribute, benchmarks with an unknown or blank label are left out; ``p_value`` permutes the
    remaining labels over the benchmarks (statistic ``diff = mean_same − mean_different``),
    ``U_paper``/``p_paper`` are the paper's two-sided Mann–Whitney test over the pairs.
    """
    m = np.asarray(m, dtype=np.float64)
    rows = []
    for attr in attributes:
        known = known_labels(meta[attr])
        sub = m[np.ix_(known, known)]
        names, codes = np.unique(meta[attr].to_numpy(dtype=str)[known], return_inverse=True)
        a, b = _pairs(sub)
        same_pair = codes[a] == codes[b]
        same, diff = sub[a, b][same_pair], sub[a, b][~same_pair]
        u, p_paper = (np.nan, np.nan)
        p, total = np.array([np.nan]), 0
        if len(same) and len(diff):
            res = scipy.stats.mannwhitneyu(same, diff, alternative="two-sided")
            u, p_paper = float(res.statistic), float(res.pvalue)
            eye = np.eye(len(names))
            observed = np.array([same.mean() - diff.mean()])

            def statistic(perms: np.ndarray, sub: np.ndarray = sub, eye: np.ndarray = eye, codes: np.ndarray = codes) -> np.ndarray:
                sums, counts = _pair_sums(sub, eye[codes[perms]])
                s_same = np.trace(sums, axis1=1, axis2=2)
                n_same = np.trace(counts, axis1=1, axis2=2)
                with np.errstate(invalid="ignore", divide="ignore"):
                    d = s_same / n_same - (sums.sum(axis=(1, 2)) - s_same) / (counts.sum(axis=(1, 2)) - n_same)
                return d[:, None]

            p, total, _ = permutation_p(observed, statistic, len(codes), permutations=permutations, seed=seed, batch=batch)
        rows.append(
            {
                "attribute": attr,
                "n_same": len(same),
                "mean_same": same.mean() if len(same) else np.nan,
                "median_same": np.median(same) if len(same) else np.nan,
                "n_different": len(diff),
                "mean_different": diff.mean() if len(diff) else np.nan,
                "median_different": np.median(diff) if len(diff) else np.nan,
                "diff": same.mean() - diff.mean() if len(same) and len(diff) else np.nan,
                "p_value": float(p[0]),
                "permutations": total,
                "U_paper": u,
                "p_paper": p_paper,
                "n_pairs_excluded": _excluded_pairs(known),
            }
        )
    return pd.DataFrame(rows).set_index("attribute")


def group_matrix(m: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Mean overlap between distinct benchmarks of each pair of known labels (e.g. functions)."""
    known = known_labels(labels)
    m = np.asarray(m, dtype=np.float64)[np.ix_(known, known)]
    names, codes = np.unique(np.asarray([str(x) for x in labels])[known], return_inverse=True)
    sums, counts = _pair_sums(m, np.eye(len(names))[codes][None])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts)[0]
    return pd.DataFrame(means, index=pd.Index(names, name="function"), columns=names)


def max_cliques(m: np.ndarray, benchmarks: Sequence[str], threshold: float, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every maximum clique of the graph with an edge where overlap > ``threshold``.

    One row per (clique, member): columns ``clique`` (1, 2, … ordered by the sorted member names),
    ``n_cliques``, ``size``, ``mean_overlap`` (the member's mean overlap with the clique's others)
    and, with ``meta``, ``category``, ``family``, ``function``; index ``benchmark`` (a benchmark in
    several maximum cliques has several rows).  Empty when no pair exceeds the threshold.

    Raises
    ------
    PlanError
        When the graph has more than :data:`MAX_CLIQUES_ENUMERATED` maximal cliques.
    """
    graph = nx.Graph()
    graph.add_nodes_from(range(len(benchmarks)))
    a, b = _pairs(m)
    edge = m[a, b] > threshold
    graph.add_edges_from(zip(a[edge].tolist(), b[edge].tolist()))
    best: list[list[int]] = []
    size = 2  # a single benchmark is no clique worth reporting
    for count, clique in enumerate(nx.find_cliques(graph)):
        if count >= MAX_CLIQUES_ENUMERATED:
            raise PlanError(f"more than {MAX_CLIQUES_ENUMERATED} maximal cliques at overlap > {threshold}; raise --threshold")
        if len(clique) > size:
            best, size = [], len(clique)
        if len(clique) == size:
            best.append(clique)
    cliques = sorted((sorted(c, key=lambda i: benchmarks[i]) for c in best), key=lambda c: [benchmarks[i] for i in c])
    columns = ["benchmark", "clique", "n_cliques", "size", "mean_overlap"] + (["category", "family", "function"] if meta is not None else [])
    rows = []
    for k, clique in enumerate(cliques, start=1):
        for i in clique:
            others = [j for j in clique if j != i]
            row = {"benchmark": benchmarks[i], "clique": k, "n_cliques": len(cliques), "size": len(clique),
                   "mean_overlap": float(np.mean(m[i, others]))}
            if meta is not None:
                row.update({key: meta.iloc[i][key] for key in ("category", "family", "function")})
            rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    table.attrs.update(threshold=threshold, n_cliques=len(cliques))
    return table.set_index("benchmark")


def compute_stats(
    overlap: xr.Dataset,
    metadata: str | os.PathLike | pd.DataFrame | None = None,
    *,
    level: str = "signature",
    threshold: float = DEFAULTS.threshold,
    resamples: int = DEFAULTS.resamples,
    seed: int = DEFAULTS.seed,
) -> dict[str, pd.DataFrame]:
    """All statistics of one overlap level.

    Returns
    -------
    dict
        ``within_cross``, ``family_format``, ``function_matrix``, ``clique`` (see the module docstring).
    """
    resamples = check_count(resamples, "--permutations", minimum=1)
    threshold = check_number(threshold, "--threshold")
    seed = check_seed(seed)
    m = level_matrix(overlap, level)
    meta = overlap_metadata(overlap, metadata)
    benchmarks = list(meta.index)
    if len(benchmarks) < 2:
        raise InputError(f"the {level} overlap has {len(benchmarks)} benchmark{'s' * (len(benchmarks) != 1)} "
                         f"({', '.join(benchmarks) or 'none'}): statistics compare pairs of benchmarks and there is none; "
                         "run bsig overlap on more benchmarks")
    if len(benchmarks) == 2:
        warnings.warn(f"the {level} overlap has only 2 benchmarks (1 pair): no test can run; the within_cross and "
                      "family_format rows say 'not testable'", BsigWarning, stacklevel=2)
    categories = meta["category"]
    wc_columns = ["n_benchmarks", "within", "cross", "diff", "diff_pct", "p_value", "permutations", "n_pairs_excluded"]
    if len(set(categories[known_labels(categories)])) < 2:
        # scores-only data often has no categories: the other tables still mean something
        wc = _not_testable(wc_columns, "category", "fewer than two known categories (pass --metadata with a category column)")
    else:
        wc = within_cross(m, categories, resamples=resamples, seed=seed)
        if wc.empty:
            wc = _not_testable(wc_columns, "category", "no category has two benchmarks")
    clique = max_cliques(m, benchmarks, threshold, meta)
    if clique.empty:
        a, b = _pairs(m)
        largest = f"largest overlap {float(np.max(m[a, b])):.4g}" if len(a) else "no finite overlap between two benchmarks"
        warnings.warn(f"no pair exceeds --threshold {threshold:g} ({largest}) at the {level} level; the clique table is empty",
                      BsigWarning, stacklevel=2)
    return {
        "within_cross": wc,
        "family_format": _mark_untestable(same_vs_different(m, meta, permutations=resamples, seed=seed)),
        "function_matrix": group_matrix(m, meta["function"]),
        "clique": clique,
    }


#: Column of the within_cross and family_format tables saying why a row has no test (only when one has none).
NOTE = "note"


def _not_testable(columns: Sequence[str], index: str, reason: str) -> pd.DataFrame:
    """A table of one ``overall`` row without values whose ``note`` says why no test ran."""
    row = {c: (0 if c in ("permutations",) else np.nan) for c in columns}
    return pd.DataFrame([{**row, NOTE: f"not testable: {reason}"}], index=pd.Index(["overall"], name=index))


def _mark_untestable(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``note`` = "not testable: …" to the family/format rows without a test (no same or no different pair)."""
    notes = []
    for attr, row in table.iterrows():
        if row["n_same"] and row["n_different"]:
            notes.append("")
        elif not row["n_same"] and not row["n_different"]:
            notes.append(f"not testable: no pair of benchmarks with a known {attr}")
        elif not row["n_same"]:
            notes.append(f"not testable: no two benchmarks share a {attr}")
        else:
            notes.append(f"not testable: every benchmark with a known {attr} has the same one")
    if any(notes):
        table = table.assign(**{NOTE: notes})
    return table
