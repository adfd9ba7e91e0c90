"""Valid statistics for pairwise overlaps (issue 12) against literal implementations.

Benchmark-label permutation tests against brute force over every permutation, partial Spearman
against scipy.stats.spearmanr on literally computed residual ranks, signed signature profiles
against a loop, maximum cliques against networkx, and the scores-only overlap through the CLI.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr
from click.testing import CliRunner

from bsig_array.io.overlap_file import load_overlap, present_levels
from bsig_array.pipelines.synth import make_spec
from bsig_array.stages.overlap import compute_overlaps, controlled_spearman_matrix, spearman_matrix
from bsig_array.stages.stats import max_cliques, same_vs_different, within_cross


def symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, n))
    x = (x + x.T) / 2
    np.fill_diagonal(x, 1.0)
    return x


def pair_mean(m: np.ndarray, labels: list[str], c: str, d: str) -> float:
    vals = [m[a, b] for a in range(len(labels)) for b in range(len(labels)) if a != b and labels[a] == c and labels[b] == d]
    return float(np.mean(vals)) if vals else np.nan


def literal_diffs(m: np.ndarray, labels: list[str], names: list[str]) -> dict[str, float]:
    """within − cross per category and overall, written out (Table 5)."""
    means = {(c, d): pair_mean(m, labels, c, d) for c in names for d in names}
    out = {c: means[c, c] - np.nanmean([means[c, d] for d in names if d != c]) for c in names}
    out["overall"] = np.nanmean([means[c, c] for c in names]) - np.nanmean([means[c, d] for c, d in itertools.combinations(names, 2)])
    return out


def exceeds(null: float, obs: float) -> bool:
    return abs(null) >= abs(obs) * (1 - 1e-12) - 1e-15


def test_within_cross_equals_brute_force_over_all_permutations():
    rng = np.random.default_rng(0)
    labels = ["x", "x", "unknown", "y", "y", "y", "z", "z"]  # 7 known benchmarks: 5040 orderings
    m = symmetric(rng, len(labels))
    table = within_cross(m, labels, resamples=9999)
    keep = [i for i, c in enumerate(labels) if c != "unknown"]
    sub, known = m[np.ix_(keep, keep)], [labels[i] for i in keep]
    names = ["x", "y", "z"]
    obs = literal_diffs(sub, known, names)
    count = dict.fromkeys(obs, 0)
    for perm in itertools.permutations(range(len(known))):
        for k, v in literal_diffs(sub, [known[i] for i in perm], names).items():
            count[k] += exceeds(v, obs[k])
    for k in obs:
        assert table.loc[k, "diff"] == pytest.approx(obs[k])
        assert table.loc[k, "p_value"] == pytest.approx(count[k] / math.factorial(7))  # exact: identity included
    assert (table["permutations"] == 5040).all()
    assert (table["n_pairs_excluded"] == 7).all()  # the unknown benchmark's pairs
    assert "unknown" not in table.index


def test_same_vs_different_equals_brute_force_and_keeps_the_papers_u_test():
    rng = np.random.default_rng(1)
    meta = pd.DataFrame({
        "family": ["a", "a", "b", "b", "b", "c", "c", "unknown", ""],
        "format": ["mc", "tf", "mc", "unknown", "mc", "ff", "ff", "tf", " "],  # 7 known each: 5040 orderings
    })
    m = symmetric(rng, len(meta))
    table = same_vs_different(m, meta, permutations=9999)
    for attr in ("family", "format"):
        labels = list(meta[attr])
        keep = [i for i, c in enumerate(labels) if c.strip() not in ("unknown", "")]
        sub, known = m[np.ix_(keep, keep)], [labels[i] for i in keep]
        n = len(known)

        def stat(lab: list[str], sub: np.ndarray = sub, n: int = n) -> tuple[float, list[float], list[float]]:
            same = [sub[a, b] for a, b in itertools.combinations(range(n), 2) if lab[a] == lab[b]]
            diff = [sub[a, b] for a, b in itertools.combinations(range(n), 2) if lab[a] != lab[b]]
            return float(np.mean(same) - np.mean(diff)), same, diff

        obs, same, diff = stat(known)
        count = sum(exceeds(stat([known[i] for i in perm])[0], obs) for perm in itertools.permutations(range(n)))
        assert table.loc[attr, "diff"] == pytest.approx(obs)
        assert table.loc[attr, "p_value"] == pytest.approx(count / math.factorial(n))
        assert table.loc[attr, "permutations"] == math.factorial(n)
        assert table.loc[attr, "n_pairs_excluded"] == math.comb(9, 2) - math.comb(n, 2)
        res = scipy.stats.mannwhitneyu(same, diff, alternative="two-sided")
        assert table.loc[attr, "U_paper"] == pytest.approx(res.statistic)
        assert table.loc[attr, "p_paper"] == pytest.approx(res.pvalue)


def test_sampled_permutations_approach_the_exact_p_value_and_are_seeded():
    rng = np.random.default_rng(2)
    labels = list(np.repeat(["p", "q"], 4))
    m = symmetric(rng, 8) * 0.3
    m[np.equal.outer(labels, labels)] += 0.15
    exact = within_cross(m, labels, resamples=math.factorial(8)).loc["overall"]
    assert exact["permutations"] == 40320
    sampled = within_cross(m, labels, resamples=9999, seed=3).loc["overall"]
    assert sampled["permutations"] == 9999
    se = math.sqrt(exact["p_value"] * (1 - exact["p_value"]) / 9999)
    assert abs(sampled["p_value"] - exact["p_value"]) < 4 * se + 1e-3
    again = within_cross(m, labels, resamples=9999, seed=3).loc["overall"]
    assert again["p_value"] == sampled["p_value"]
    assert within_cross(m, labels, resamples=9999, seed=4).loc["overall", "p_value"] != sampled["p_value"]


def test_diff_pct_is_left_out_when_cross_is_near_zero():
    labels = list(np.repeat(["a", "b", "c"], 3))
    m = np.full((9, 9), 0.01)  # cross ~ 0.01
    m[np.equal.outer(labels, labels)] = 0.5
    m[:3, 3:6] = m[3:6, :3] = 0.2  # a-b pairs: a and b have cross 0.105
    table = within_cross(m, labels, resamples=50)
    assert table.loc["c", "cross"] == pytest.approx(0.01) and np.isnan(table.loc["c", "diff_pct"])
    assert table.loc["c", "diff"] == pytest.approx(0.49)
    assert table.loc["a", "diff_pct"] == pytest.approx((0.5 - 0.105) / 0.105 * 100)


@pytest.mark.parametrize("seed", range(6))
def test_max_cliques_equal_networkx(seed):
    rng = np.random.default_rng(seed)
    n = 14
    m = rng.uniform(0, 1, size=(n, n))
    m = np.triu(m, 1) + np.triu(m, 1).T
    names = [f"b{i:02d}" for i in range(n)]
    table = max_cliques(m, names, threshold=0.45)
    graph = nx.Graph([(a, b) for a, b in itertools.combinations(range(n), 2) if m[a, b] > 0.45])
    size = nx.max_weight_clique(graph, weight=None)[1]
    expected = {frozenset(names[i] for i in c) for c in nx.find_cliques(graph) if len(c) == size}
    got = {frozenset(g.index) for _, g in table.groupby("clique")}
    assert got == expected and (table["size"] == size).all() and (table["n_cliques"] == len(expected)).all()
    for _, group in table.groupby("clique"):
        idx = [names.index(b) for b in group.index]
        for i, b in zip(idx, group.index):
            assert group.loc[b, "mean_overlap"] == pytest.approx(np.mean([m[i, j] for j in idx if j != i]))


def literal_partial_spearman(x: np.ndarray, score: np.ndarray, a: int, b: int) -> tuple[float, float]:
    """Spearman of the residuals of rank(x_a), rank(x_b) on the ranked mean score rank over the other benchmarks."""
    m, k = score.shape
    others = [j for j in range(k) if j not in (a, b)]
    control = scipy.stats.rankdata(np.mean([scipy.stats.rankdata(score[:, j]) for j in others], axis=0))
    design = np.column_stack([np.ones(m), control])
    res = []
    for v in (x[:, a], x[:, b]):
        r = scipy.stats.rankdata(v)
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        res.append(np.round(r - design @ coef, 9))
    rho = scipy.stats.spearmanr(res[0], res[1]).statistic
    t = rho * math.sqrt((m - 3) / (1 - rho**2))
    return float(rho), float(2 * scipy.stats.t.sf(abs(t), m - 3))


@pytest.mark.parametrize("ties", [False, True])
def test_partial_spearman_matches_scipy_on_literal_residual_ranks(ties):
    rng = np.random.default_rng(5)
    m, k = 15, 6
    g = rng.normal(size=m)
    score = g[:, None] + rng.normal(size=(m, k))
    x = score + rng.normal(size=(m, k))
    if ties:
        score, x = np.round(score), np.round(x)
    rho, p = controlled_spearman_matrix(x, score)
    for a, b in itertools.combinations(range(k), 2):
        r, pv = literal_partial_spearman(x, score, a, b)
        assert rho[a, b] == pytest.approx(r, abs=1e-12) and rho[b, a] == rho[a, b]
        assert p[a, b] == pytest.approx(pv, rel=1e-9)
    assert (np.diag(rho) == 1).all()


def test_control_removes_general_ability():
    """Benchmarks that share only general ability: raw overlap high, controlled overlap about zero.

    The control is a proxy (the mean over the other benchmarks, noisy with few of them), so 30 are used.
    """
    rng = np.random.default_rng(6)
    m, k = 200, 30
    g = rng.normal(size=m)
    score = 2 * g[:, None] + rng.normal(size=(m, k))
    raw, _ = spearman_matrix(score)
    controlled, _ = controlled_spearman_matrix(score, score)
    off = ~np.eye(k, dtype=bool)
    assert raw[off].mean() > 0.7
    assert abs(controlled[off].mean()) < 0.1
    with pytest.raises(Exception, match="at least three benchmarks"):
        controlled_spearman_matrix(score[:, :2], score[:, :2])


def test_signed_profiles_match_a_literal_loop():
    rng = np.random.default_rng(7)
    m, n, B = 9, 30, 3
    nll = rng.gamma(2.0, 1.0, size=(m, n))
    score = rng.normal(size=(m, B))
    sig = np.array([[0, 4, 7, -1], [1, 4, 9, 12], [20, 21, -1, -1]])
    models, benchmarks = [f"m{i}" for i in range(m)], [f"b{j}" for j in range(B)]
    ds = compute_overlaps(
        xr.Dataset({"signature_token": (("benchmark", "step"), sig)}, coords={"benchmark": benchmarks}, attrs={"covariate": "nll"}),
        xr.DataArray(nll, dims=("model", "token"), coords={"model": models, "token": np.arange(n)}),
        xr.DataArray(score, dims=("model", "benchmark"), coords={"model": models, "benchmark": benchmarks}),
        signature_mode="signed",
    )
    union = sorted({int(t) for t in sig.ravel() if t >= 0})
    z = (nll[:, union] - nll[:, union].mean(axis=1, keepdims=True)) / nll[:, union].std(axis=1, keepdims=True)
    profiles = []
    for j in range(B):
        cols = []
        for t in (int(t) for t in sig[j] if t >= 0):
            zt = z[:, union.index(t)]
            sign = -1.0 if scipy.stats.spearmanr(zt, score[:, j]).statistic < 0 else 1.0  # the averaged z-scores' sign
            cols.append(sign * zt)
        profiles.append(np.mean(cols, axis=0))
    for a, b in itertools.combinations(range(B), 2):
        assert ds["signature"].values[a, b] == pytest.approx(scipy.stats.spearmanr(profiles[a], profiles[b]).statistic, abs=1e-12)
    assert ds["signature"].attrs["mode"] == "signed" and ds.attrs["signature_mode"] == "signed"


def test_synthetic_scores_carry_a_format_effect_independent_of_the_clusters():
    spec = make_spec(models=32, benchmarks=32, tokens=3_000, seed=0, planted_per_benchmark=30)
    meta = spec.metadata
    assert (meta.groupby("category")["format"].nunique() >= 2).all()  # format says nothing about the cluster
    rho, _ = spearman_matrix(spec.score)
    table = same_vs_different(rho, meta, attributes=("format",), permutations=999)
    assert table.loc["format", "diff"] > 0.03 and table.loc["format", "p_value"] < 0.01


def write_scores(path, score: np.ndarray) -> None:
    frame = pd.DataFrame(score, columns=[f"bench{j}" for j in range(score.shape[1])])
    frame.insert(0, "model", [f"m{i}" for i in range(len(score))])
    frame.to_csv(path, index=False)


def test_scores_only_overlap_and_stats_through_the_cli(tmp_path):
    from bsig_array.cli.main import cli

    rng = np.random.default_rng(8)
    score = rng.normal(size=(12, 6)) + rng.normal(size=(12, 1))
    write_scores(tmp_path / "y.csv", score)
    pd.DataFrame({"benchmark": [f"bench{j}" for j in range(6)], "family": list("aabbcc"), "format": list("mtmtmt"),
                  "category": list("xxyyzz"), "function": list("ffgghh")}).to_csv(tmp_path / "meta.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(cli, ["overlap", "--performance", str(tmp_path / "y.csv"), "--metadata", str(tmp_path / "meta.csv"),
                              "--control", "general", "--out", str(tmp_path / "o.nc")])
    assert res.exit_code == 0, res.output
    assert "levels: performance, performance_controlled" in res.output
    ds = load_overlap(tmp_path / "o.nc")
    assert present_levels(ds) == ["performance", "performance_controlled"]
    assert "signature" not in ds and "semantic" not in ds
    np.testing.assert_allclose(ds["performance"].values, scipy.stats.spearmanr(score).statistic, rtol=1e-12)
    np.testing.assert_allclose(ds["performance_controlled"].values, controlled_spearman_matrix(score, score)[0], rtol=1e-12)

    res = runner.invoke(cli, ["stats", "--overlap", str(tmp_path / "o.nc"), "--permutations", "99", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    written = sorted(p.name for p in (tmp_path / "s").glob("*.csv"))
    assert written == sorted(f"{lv}_{t}.csv" for lv in ("performance", "performance_controlled")
                             for t in ("within_cross", "family_format", "function_matrix", "clique"))
    ff = pd.read_csv(tmp_path / "s" / "performance_family_format.csv", index_col=0)
    assert {"p_value", "permutations", "U_paper", "p_paper", "n_pairs_excluded"} <= set(ff.columns)
    assert "signature" not in res.output

    bad = runner.invoke(cli, ["overlap", "--performance", str(tmp_path / "y.csv"), "--signatures", str(tmp_path / "g.zarr"),
                              "--out", str(tmp_path / "o2.nc")])
    assert bad.exit_code != 0 and not (tmp_path / "o2.nc").exists()


def test_present_levels_of_a_file_without_the_attribute():
    names = ["a", "b", "c"]
    m = np.eye(3)
    ds = xr.Dataset(
        {lv: (("benchmark_a", "benchmark_b"), m if lv != "semantic" else np.full((3, 3), np.nan)) for lv in ("signature", "performance", "semantic")},
        coords={"benchmark_a": names, "benchmark_b": names},
    )
    assert present_levels(ds) == ["signature", "performance"]  # the all-NaN placeholder of old files is no level
    assert present_levels(ds.assign_attrs(levels="performance")) == ["performance"]


def test_signed_mode_recovers_planted_clusters_better_than_the_papers_mean():
    """Planted tokens as signatures (no screen): ~30 % rise with the score, ~70 % fall; their plain mean blurs.

    Not guaranteed per pool (seeds 0-3 give signed − paper = +0.19, +0.09, +0.27, −0.06), so the mean is tested.
    """
    from bsig_array.pipelines.demo import separation
    from bsig_array.pipelines.synth import simulate

    gains = []
    for seed in range(4):
        pool = simulate(models=32, benchmarks=16, tokens=4_000, seed=seed, planted_per_benchmark=10)
        spec = pool.spec
        sig = np.stack([spec.planted_token[spec.planted_benchmark == j] for j in range(16)])
        signatures = xr.Dataset({"signature_token": (("benchmark", "step"), sig)}, coords={"benchmark": spec.benchmarks})
        diff = {}
        for mode in ("signed", "paper"):
            ds = compute_overlaps(signatures, pool.dataset()["nll"], pool.score, covariate="nll", signature_mode=mode)
            diff[mode] = separation(ds["signature"].values, list(spec.metadata["category"]))["diff"]
        gains.append(diff["signed"] - diff["paper"])
    assert np.mean(gains) > 0.05, gains
