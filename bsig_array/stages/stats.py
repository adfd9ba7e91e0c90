"""Stats stage: statistics on an overlap matrix (paper §4, A.6): categories, family/format, functions, cliques.

Within- vs cross-category (Table 5).  Let ``M`` be the overlap matrix and ``mean(c, d)`` the mean of
``M[a, b]`` over pairs of distinct benchmarks ``a ∈ c``, ``b ∈ d`` (NaN entries skipped).  For category
``c``: ``within = mean(c, c)``; ``cross`` = the mean over the other categories ``d`` of ``mean(c, d)``,
so every category pair weighs the same whatever its size; ``diff% = (within − cross) / |cross| · 100``.
The ``overall`` row compares the mean of the within values with the mean over category pairs.

Null and p-value.  The null hypothesis is "categories carry no information about overlap".  Each of
the ``resamples`` (default 10 000) draws a random relabeling of the benchmarks (a permutation of the
category labels, so the category sizes are kept) and recomputes ``within − cross``; the two-sided
p-value is ``(1 + #{|null| ≥ |observed|}) / (resamples + 1)``.  Under the null the p-value is
uniform; with planted within-category structure it is ~1/(resamples + 1).

Same vs different family and format (Figure 5): the overlaps of unordered pairs whose labels are the
same vs different, compared with a two-sided Mann–Whitney U test (scipy); pairs with an ``unknown``
label are left out.

Function matrix (Figure 1 left): ``mean(f, g)`` over the benchmarks' ``function`` labels.

Maximum clique: the largest set of benchmarks whose pairwise overlap all exceed ``threshold``
(networkx ``max_weight_clique`` with unit weights, exact).  The tables are written by
:mod:`bsig_array.io.stats_tables`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import networkx as nx
import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.benchmark_metadata import benchmark_metadata
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import METADATA_COLUMNS, UNKNOWN


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


def within_cross(
    m: np.ndarray,
    categories: Sequence[str],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    batch: int = 500,
) -> pd.DataFrame:
    """Within- vs cross-category overlap per category with relabeling p-values (Table 5).

    Returns
    -------
    pandas.DataFrame
        One row per category (those with at least two benchmarks) and ``overall``: columns
        ``n_benchmarks, within, cross, diff, diff_pct, p_value, resamples``.
    """
    labels = np.asarray([str(c) for c in categories])
    names, codes = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise InputError(f"within- vs cross-category needs at least two categories, got {list(names)}; pass --metadata with a category column")
    eye = np.eye(len(names))
    within, cross = _within_cross_diffs(*_pair_sums(m, eye[codes][None]))
    observed = (within - cross)[0]
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(observed))
    done = 0
    while done < resamples:
        r = min(batch, resamples - done)
        perms = np.argsort(rng.random((r, len(codes))), axis=1)
        w, c = _within_cross_diffs(*_pair_sums(m, eye[codes[perms]]))
        null = w - c
        # tolerance: relabelings that reproduce the observed grouping tie with it exactly
        exceed += (np.abs(null) >= np.abs(observed) * (1 - 1e-12) - 1e-15).sum(axis=0)
        done += r
    sizes = np.bincount(codes, minlength=len(names))
    rows = []
    for j, name in enumerate([*names, "overall"]):
        n = int(sizes[j]) if j < len(names) else len(codes)
        if not np.isfinite(observed[j]):
            continue
        rows.append(
            {
                "category": name,
                "n_benchmarks": n,
                "within": within[0, j],
                "cross": cross[0, j],
                "diff": observed[j],
                "diff_pct": observed[j] / abs(cross[0, j]) * 100 if cross[0, j] != 0 else np.nan,
                "p_value": (1 + exceed[j]) / (resamples + 1),
                "resamples": int(resamples),
            }
        )
    columns = ["category", "n_benchmarks", "within", "cross", "diff", "diff_pct", "p_value", "resamples"]
    return pd.DataFrame(rows, columns=columns).set_index("category")


def _pairs(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(len(m), 1)
    keep = np.isfinite(m[a, b])
    return a[keep], b[keep]


def same_vs_different(m: np.ndarray, meta: pd.DataFrame, attributes: Sequence[str] = ("family", "format")) -> pd.DataFrame:
    """Overlap of same- vs different-label pairs with a two-sided Mann–Whitney U test (Figure 5)."""
    a, b = _pairs(m)
    rows = []
    for attr in attributes:
        labels = meta[attr].to_numpy(dtype=str)
        known = (labels[a] != UNKNOWN) & (labels[b] != UNKNOWN)
        same = m[a, b][known & (labels[a] == labels[b])]
        diff = m[a, b][known & (labels[a] != labels[b])]
        u, p = (np.nan, np.nan)
        if len(same) and len(diff):
            res = scipy.stats.mannwhitneyu(same, diff, alternative="two-sided")
            u, p = float(res.statistic), float(res.pvalue)
        rows.append(
            {
                "attribute": attr,
                "n_same": len(same),
                "mean_same": same.mean() if len(same) else np.nan,
                "median_same": np.median(same) if len(same) else np.nan,
                "n_different": len(diff),
                "mean_different": diff.mean() if len(diff) else np.nan,
                "median_different": np.median(diff) if len(diff) else np.nan,
                "U": u,
                "p_value": p,
            }
        )
    return pd.DataFrame(rows).set_index("attribute")


def group_matrix(m: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Mean overlap between distinct benchmarks of each pair of labels (e.g. functions)."""
    names, codes = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
    sums, counts = _pair_sums(m, np.eye(len(names))[codes][None])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts)[0]
    return pd.DataFrame(means, index=pd.Index(names, name="function"), columns=names)


def max_clique(m: np.ndarray, benchmarks: Sequence[str], threshold: float, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Members of a maximum clique of the graph with an edge where overlap > ``threshold``.

    Rows are sorted by name; column ``mean_overlap`` is the member's mean overlap with the others.
    """
    graph = nx.Graph()
    graph.add_nodes_from(range(len(benchmarks)))
    a, b = _pairs(m)
    edge = m[a, b] > threshold
    graph.add_edges_from(zip(a[edge].tolist(), b[edge].tolist()))
    clique, _ = nx.max_weight_clique(graph, weight=None)
    clique = sorted(clique, key=lambda i: benchmarks[i])
    rows = []
    for i in clique:
        others = [j for j in clique if j != i]
        row = {"benchmark": benchmarks[i], "mean_overlap": float(np.mean(m[i, others])) if others else np.nan}
        if meta is not None:
            row.update({k: meta.iloc[i][k] for k in ("category", "family", "function")})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["benchmark", "mean_overlap", "category", "family", "function"][: 2 + 3 * (meta is not None)])
    table.attrs["threshold"] = threshold
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
    if resamples < 1:
        raise OptionError(f"--bootstrap must be at least 1, got {resamples}")
    m = level_matrix(overlap, level)
    meta = overlap_metadata(overlap, metadata)
    benchmarks = list(meta.index)
    return {
        "within_cross": within_cross(m, meta["category"], resamples=resamples, seed=seed),
        "family_format": same_vs_different(m, meta),
        "function_matrix": group_matrix(m, meta["function"]),
        "clique": max_clique(m, benchmarks, threshold, meta),
    }
