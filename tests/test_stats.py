"""Statistics on overlap matrices: literal loops, null calibration, planted structure, cliques."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr
from click.testing import CliRunner

from bsig_array.errors import BsigError
from bsig_array.io.stats_tables import read_stats, write_stats
from bsig_array.stages.stats import (
    compute_stats,
    group_matrix,
    max_cliques,
    same_vs_different,
    within_cross,
)


def symmetric(rng: np.random.Generator, B: int) -> np.ndarray:
    x = rng.normal(size=(B, B))
    x = (x + x.T) / 2
    np.fill_diagonal(x, 1.0)
    return x


def literal_within_cross(m: np.ndarray, cats: list[str]) -> dict[str, tuple[float, float]]:
    """Table 5 with loops: within mean, and the unweighted mean over other categories of pair means."""
    names = sorted(set(cats))

    def pair_mean(c, d):
        vals = [m[a, b] for a in range(len(cats)) for b in range(len(cats)) if a != b and cats[a] == c and cats[b] == d and np.isfinite(m[a, b])]
        return np.mean(vals) if vals else np.nan

    out = {}
    for c in names:
        if cats.count(c) < 2:
            continue
        within = pair_mean(c, c)
        cross = np.nanmean([pair_mean(c, d) for d in names if d != c])
        out[c] = (within, cross)
    overall_within = np.nanmean([pair_mean(c, c) for c in names if cats.count(c) >= 2])
    overall_cross = np.nanmean([pair_mean(c, d) for c, d in itertools.combinations(names, 2)])
    out["overall"] = (overall_within, overall_cross)
    return out


def test_within_cross_matches_literal_with_unequal_sizes_and_nan():
    rng = np.random.default_rng(0)
    cats = ["h", "h", "h", "r", "r", "s", "s", "s", "s", "w"]
    m = symmetric(rng, len(cats))
    m[2, 7] = m[7, 2] = np.nan
    table = within_cross(m, cats, resamples=50)
    expected = literal_within_cross(m, cats)
    assert set(table.index) == set(expected)  # "w" has one benchmark: no within value
    for name, (w, c) in expected.items():
        assert table.loc[name, "within"] == pytest.approx(w)
        assert table.loc[name, "cross"] == pytest.approx(c)
        pct = (w - c) / abs(c) * 100 if abs(c) >= 0.05 else np.nan  # no diff% against a cross near 0
        assert table.loc[name, "diff_pct"] == pytest.approx(pct, nan_ok=True)
        assert table.loc[name, "diff"] == pytest.approx(w - c)
    assert table["diff_pct"].isna().any() and table["diff_pct"].notna().any()  # both cases exercised
    assert table.loc["s", "n_benchmarks"] == 4


def test_p_value_matches_a_literal_relabeling_loop():
    rng = np.random.default_rng(1)
    cats = ["a"] * 3 + ["b"] * 3 + ["c"] * 2
    m = symmetric(rng, len(cats))
    table = within_cross(m, cats, resamples=40, seed=5)
    obs = {k: w - c for k, (w, c) in literal_within_cross(m, cats).items()}
    perms = np.argsort(np.random.default_rng(5).random((40, len(cats))), axis=1)
    exceed = dict.fromkeys(obs, 0)
    for perm in perms:
        relabeled = [cats[i] for i in perm]
        for k, (w, c) in literal_within_cross(m, relabeled).items():
            exceed[k] += abs(w - c) >= abs(obs[k]) * (1 - 1e-12) - 1e-15
    for k in obs:
        assert table.loc[k, "p_value"] == pytest.approx((1 + exceed[k]) / 41)


def test_p_values_are_roughly_uniform_without_category_structure():
    cats = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    p = []
    for seed in range(60):
        m = symmetric(np.random.default_rng(100 + seed), len(cats))
        p.append(within_cross(m, cats, resamples=199, seed=seed).loc["overall", "p_value"])
    assert scipy.stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.3 < np.mean(p) < 0.7


def test_p_values_are_tiny_with_planted_structure():
    rng = np.random.default_rng(2)
    cats = np.repeat(["x", "y", "z"], 5)
    m = 0.1 + 0.05 * symmetric(rng, 15)
    same = cats[:, None] == cats[None, :]
    m[same] += 0.6
    table = within_cross(m, cats, resamples=999)
    # a relabeling that happens to reproduce a category counts as extreme, hence "tiny", not 1/1000
    assert (table["p_value"] <= 0.005).all() and table.loc["overall", "p_value"] == pytest.approx(1 / 1000)
    assert (table["diff_pct"] > 100).all()


def test_same_vs_different_matches_scipy_on_pairs():
    rng = np.random.default_rng(3)
    meta = pd.DataFrame({"family": list("aabbbcc"), "format": ["mc", "mc", "tf", "unknown", "tf", "mc", "tf"]})
    m = symmetric(rng, 7)
    table = same_vs_different(m, meta)
    for attr in ("family", "format"):
        labels = list(meta[attr])
        same, diff = [], []
        for a in range(7):
            for b in range(a + 1, 7):
                if "unknown" in (labels[a], labels[b]):
                    continue
                (same if labels[a] == labels[b] else diff).append(m[a, b])
        res = scipy.stats.mannwhitneyu(same, diff, alternative="two-sided")
        assert table.loc[attr, "n_same"] == len(same) and table.loc[attr, "n_different"] == len(diff)
        assert table.loc[attr, "U_paper"] == pytest.approx(res.statistic)
        assert table.loc[attr, "p_paper"] == pytest.approx(res.pvalue)
        assert table.loc[attr, "mean_same"] == pytest.approx(np.mean(same))


def test_function_matrix_matches_loops():
    rng = np.random.default_rng(4)
    funcs = ["math", "logic", "math", "knowledge", "logic", "math"]
    m = symmetric(rng, 6)
    table = group_matrix(m, funcs)
    for f, g in itertools.product(set(funcs), repeat=2):
        vals = [m[a, b] for a in range(6) for b in range(6) if a != b and funcs[a] == f and funcs[b] == g]
        expected = np.mean(vals) if vals else np.nan  # one "knowledge" benchmark: no distinct pair
        assert table.loc[f, g] == pytest.approx(expected, nan_ok=True)


def test_max_clique_on_a_known_graph():
    names = [f"b{i}" for i in range(9)]
    m = np.full((9, 9), 0.1)
    for group in ([0, 2, 4, 6], [1, 3, 5], [7, 8]):
        for a, b in itertools.permutations(group, 2):
            m[a, b] = 0.8
    m[6, 1] = m[1, 6] = 0.9  # an extra edge that does not enlarge any clique
    m[0, 2] = m[2, 0] = np.nan  # NaN is no edge: the 4-clique breaks, size 3 remains
    table = max_cliques(m, names, threshold=0.5)
    graph = nx.Graph([(a, b) for a, b in itertools.combinations(range(9), 2) if m[a, b] > 0.5])
    assert (table["size"] == max(len(c) for c in nx.find_cliques(graph))).all()
    # three maximum cliques of size 3: {b0,b4,b6}, {b1,b3,b5}, {b2,b4,b6}
    assert (table["n_cliques"] == 3).all() and len(table) == 9
    assert [list(g.index) for _, g in table.groupby("clique")] == [["b0", "b4", "b6"], ["b1", "b3", "b5"], ["b2", "b4", "b6"]]
    m[0, 2] = m[2, 0] = 0.7
    table = max_cliques(m, names, threshold=0.5)
    assert list(table.index) == ["b0", "b2", "b4", "b6"]
    assert table.loc["b0", "mean_overlap"] == pytest.approx((0.7 + 0.8 + 0.8) / 3)
    assert max_cliques(m, names, threshold=0.95).empty  # no pair above the threshold


def overlap_dataset(m: np.ndarray, cats, funcs=None, fams=None) -> xr.Dataset:
    names = [f"b{i}" for i in range(len(m))]
    ds = xr.Dataset({"signature": (("benchmark_a", "benchmark_b"), m)}, coords={"benchmark_a": names, "benchmark_b": names})
    meta = {"category": cats, "function": funcs or ["f"] * len(m), "family": fams or ["mmlu"] * len(m), "format": ["mc"] * len(m)}
    for k, v in meta.items():
        ds = ds.assign_coords({f"{k}_a": ("benchmark_a", np.array(v, dtype=object)), f"{k}_b": ("benchmark_b", np.array(v, dtype=object))})
    return ds


def test_compute_stats_write_read_and_cli(tmp_path):
    from bsig_array.cli.main import cli
    from bsig_array.io.overlap_file import write_overlap

    rng = np.random.default_rng(6)
    cats = list(np.repeat(["x", "y", "z"], 4))
    m = 0.2 * symmetric(rng, 12)
    m[np.equal.outer(cats, cats)] += 0.7
    ds = overlap_dataset(m, cats, funcs=list(np.repeat(["math", "logic"], 6)))
    tables = compute_stats(ds, resamples=99)
    assert set(tables) == {"within_cross", "family_format", "function_matrix", "clique"}
    assert len(tables["clique"]) == 4 and tables["clique"]["category"].nunique() == 1
    write_stats(tables, tmp_path / "s", "signature")
    back = read_stats(tmp_path / "s")["signature"]
    pd.testing.assert_frame_equal(back["within_cross"], tables["within_cross"], check_dtype=False)

    write_overlap(ds, tmp_path / "o.nc")
    meta = pd.DataFrame({"benchmark": ds.benchmark_a.values, "category": ["p"] * 6 + ["q"] * 6})
    meta.to_csv(tmp_path / "meta.csv", index=False)
    res = CliRunner().invoke(cli, ["stats", "--overlap", str(tmp_path / "o.nc"), "--metadata", str(tmp_path / "meta.csv"),
                                   "--bootstrap", "99", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    wc = pd.read_csv(tmp_path / "out" / "signature_within_cross.csv", index_col=0)
    assert list(wc.index) == ["p", "q", "overall"]  # categories came from --metadata, not the coords
    assert "within- vs cross-category" in res.output
    bad = CliRunner().invoke(cli, ["stats", "--overlap", str(tmp_path / "o.nc"), "--level", "semantic", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and isinstance(bad.exception, BsigError)


def test_single_category_is_an_error():
    with pytest.raises(BsigError, match="two known categories"):
        within_cross(np.eye(3), ["a", "a", "a"])


def test_categories_of_one_benchmark_give_an_empty_table():
    table = within_cross(np.eye(3), ["a", "b", "c"], resamples=10)
    assert table.empty and "within" in table.columns
