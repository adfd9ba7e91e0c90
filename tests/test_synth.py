"""Synthetic pool: files and formats, determinism, realism, planted signal, resume, memory, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from scipy.stats import rankdata, spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from strategies import NLL_DTYPES, nll_matrices, planted_pools

from bsig_array.cli.main import main
from bsig_array.errors import BsigError
from bsig_array.io.benchmark_metadata import load_metadata
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.schema import PROGRESS
from bsig_array.io.scores import align_performance, load_performance
from bsig_array.pipelines.synth import (
    BLOCK_TOKENS,
    choose_benchmarks,
    make_spec,
    simulate,
    synthesize,
)
from bsig_array.pipelines.synth_questions import write_questions

SMALL = dict(models=5, benchmarks=6, tokens=BLOCK_TOKENS + 5_000, planted_per_benchmark=4, seed=3)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool")
    return synthesize(out, chunk_tokens=40_000, **SMALL)


def test_outputs_and_formats(pool):
    ds = xr.open_zarr(pool.perplexity)  # plain xarray reads it
    assert ds["nll"].dims == ("model", "token") and ds["nll"].dtype == np.float32
    assert ds.sizes == {"model": 5, "token": SMALL["tokens"], "chunk": 2}
    store = open_store(pool.perplexity)  # and so does the stage reader (complete, valid)
    np.testing.assert_array_equal(store["token"].values, np.arange(SMALL["tokens"]))
    score = load_performance(pool.performance, metadata=pool.metadata)
    aligned = align_performance(score, store)
    assert aligned.sizes == {"model": 5, "benchmark": 6}
    meta = load_metadata(pool.metadata)
    assert list(meta.index) == list(score["benchmark"].values)
    assert list(score["category"].values) == list(meta["category"])
    truth = json.loads(pool.truth.read_text())
    assert set(truth["benchmarks"]) == set(meta.index)
    for name, entry in truth["benchmarks"].items():
        assert entry["cluster"] == meta.loc[name, "category"]
        assert all(0 <= t < SMALL["tokens"] for t in entry["planted_tokens"])
    own = [t for e in truth["benchmarks"].values() for t in e["planted_tokens"]]
    assert len(own) == len(set(own)) == 6 * 4
    for name in meta.index:
        lines = (pool.questions / f"{name}.jsonl").read_text().splitlines()
        assert 20 <= len(lines) <= 60
        assert all(isinstance(json.loads(line)["question"], str) for line in lines)
    assert not [p for p in Path(pool.perplexity).parent.iterdir() if ".tmp" in p.name]


def test_store_equals_in_memory_pool_for_any_chunking(pool, tmp_path):
    """The pool depends on the seed only: not on chunk size, write order or the in-memory path."""
    expected = simulate(**SMALL).nll
    np.testing.assert_array_equal(xr.open_zarr(pool.perplexity)["nll"].values, expected)
    other = synthesize(tmp_path / "b", chunk_tokens=BLOCK_TOKENS // 3 + 1, questions=False, **SMALL)
    np.testing.assert_array_equal(xr.open_zarr(other.perplexity)["nll"].values, expected)
    assert (tmp_path / "b" / "performance.csv").read_text() == pool.performance.read_text()
    different = simulate(**(SMALL | {"seed": 4})).nll
    assert not np.array_equal(different, expected)


def test_float16_store(tmp_path):
    paths = synthesize(tmp_path / "h", dtype="float16", questions=False, **SMALL)
    nll = xr.open_zarr(paths.perplexity)["nll"]
    assert nll.dtype == np.float16
    np.testing.assert_array_equal(nll.values, simulate(**SMALL).nll.astype(np.float16))


def test_resume_rewrites_exactly_the_unfinished_chunks(pool, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(pool.perplexity.parent, out)
    group = zarr.open_group(out / "perplexity.zarr", mode="r+")
    group["nll"][:, 40_000:] = np.nan  # chunk 1 lost its data and its mark: an interrupted run
    group[PROGRESS][:, 1] = 0
    with pytest.raises(BsigError, match="incomplete"):
        open_store(out / "perplexity.zarr")
    synthesize(out, chunk_tokens=40_000, **SMALL)
    np.testing.assert_array_equal(xr.open_zarr(out / "perplexity.zarr")["nll"].values, simulate(**SMALL).nll)
    with pytest.raises(BsigError, match="already exists with other contents"):
        synthesize(out, **(SMALL | {"seed": 9}))
    synthesize(out, overwrite=True, questions=False, **(SMALL | {"seed": 9}))
    np.testing.assert_array_equal(xr.open_zarr(out / "perplexity.zarr")["nll"].values, simulate(**(SMALL | {"seed": 9})).nll)


def test_choose_benchmarks():
    table = load_metadata()
    eight = choose_benchmarks(8)
    assert eight["category"].nunique() == 8  # every cluster, even for tiny B
    assert list(choose_benchmarks(88).index) == list(table.index[:88])  # the paper's Table 2
    big = choose_benchmarks(100)
    assert list(big.index[:94]) == list(table.index[:88]) + list(table.index[88:])
    assert list(big.index[94:]) == [f"{b}_v2" for b in table.index[:6]]
    assert big.index.is_unique
    assert (big.loc["business_ethics_v2"] == table.loc["business_ethics"]).all()


def test_scores_look_like_accuracies():
    spec = make_spec(models=32, benchmarks=88, tokens=3_000, seed=0, planted_per_benchmark=30)
    score = spec.score
    assert score.min() >= 0 and score.max() <= 1
    k = score * spec.n_questions  # whole numbers of correct answers
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert (100 <= spec.n_questions).all() and (spec.n_questions <= 1000).all()
    ties = sum(32 - len(np.unique(score[:, j])) for j in range(88))
    assert ties > 0
    assert (np.ptp(score, axis=0) > 0).all()
    # Scores follow the planted abilities; same-category benchmarks agree more than others.
    corr = np.corrcoef(score.T)
    cat = spec.metadata["category"].to_numpy()
    same = (cat[:, None] == cat[None, :]) & ~np.eye(88, dtype=bool)
    assert corr[same].mean() > corr[cat[:, None] != cat[None, :]].mean() + 0.2
    # Multiple-choice floors: no model far below chance on 4-option benchmarks.
    mc = (spec.metadata["format"] == "multiple_choice").to_numpy()
    assert score[:, mc].min() > 0.1


def test_nll_realism():
    pool = simulate(models=16, benchmarks=8, tokens=40_000, seed=1, planted_per_benchmark=10)
    nll = pool.nll
    assert nll.min() >= 0 and nll.max() <= 20
    assert 0.5 < np.median(nll) < 3 and np.percentile(nll, 99) < 15
    # Weak models have higher NLL everywhere: mean NLL falls with general ability.
    rho = spearmanr(pool.spec.general, nll.mean(axis=1)).statistic
    assert rho < -0.8


def _spearman(y: np.ndarray, nll: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``y`` (m,) with every column of ``nll`` (m, n): Pearson of midranks."""
    ry = rankdata(y)
    rp = rankdata(nll, axis=0)
    ry, rp = ry - ry.mean(), rp - rp.mean(axis=0)
    return (ry @ rp) / np.sqrt((ry @ ry) * (rp * rp).sum(axis=0))


def _planted_vs_noise(pool) -> tuple[float, float, float]:
    spec, nll = pool.spec, pool.nll.astype(np.float64)
    n = nll.shape[1]
    noise = np.ones(n, dtype=bool)
    noise[spec.planted_token] = False
    planted_abs, noise_abs, in_tails = [], [], []
    for j in range(len(spec.benchmarks)):
        rho = _spearman(spec.score[:, j], nll)
        k = max(int(0.01 * n), 1)
        tails = np.argsort(rho)
        tail_set = set(tails[:k]) | set(tails[-k:])
        mine = spec.planted_token[spec.planted_benchmark == j]
        planted_abs.append(np.abs(rho[mine]).mean())
        noise_abs.append(np.abs(rho[noise]).mean())
        in_tails.append(np.mean([t in tail_set for t in mine]))
    return float(np.mean(planted_abs)), float(np.mean(noise_abs)), float(np.mean(in_tails))


def test_spearman_helper_matches_scipy():
    pool = simulate(models=7, benchmarks=2, tokens=50, seed=5, planted_per_benchmark=3)
    y = pool.spec.score[:, 0]
    expected = [spearmanr(y, pool.nll[:, t]).statistic for t in range(50)]
    np.testing.assert_allclose(_spearman(y, pool.nll), expected, rtol=1e-10)


def test_planted_tokens_track_their_benchmark():
    pool = simulate(models=32, benchmarks=16, tokens=30_000, seed=2, planted_per_benchmark=20)
    planted, noise, in_tails = _planted_vs_noise(pool)
    assert planted > 0.55 and noise < 0.3
    assert in_tails > 0.8  # screening at alpha = 1 % keeps most planted tokens
    # The sign is recorded: "-1" tokens get lower NLL in stronger models (negative Spearman).
    spec = pool.spec
    j = 0
    rho = _spearman(spec.score[:, j], pool.nll[:, spec.planted_token[spec.planted_benchmark == j]])
    signs = spec.planted_sign[spec.planted_benchmark == j]
    assert (np.sign(rho) == signs).mean() > 0.9


@settings(max_examples=8)
@given(planted_pools())
def test_planted_pools_strategy(p):
    m, n = p.nll.shape
    assert p.score.sizes["model"] == m and n == 2_000
    assert np.isfinite(p.nll).all() and (p.nll >= 0).all()
    assert (np.ptp(p.spec.score, axis=0) > 0).all()
    assert p.dataset()["nll"].dims == ("model", "token")


@given(nll_matrices(levels=3), nll_matrices())
def test_nll_matrices_strategy(few, any_):
    for x in (few, any_):
        assert str(x.dtype) in NLL_DTYPES and (x >= 0).all() and not np.signbit(x).any()
        np.testing.assert_array_equal(x.astype(np.float16).astype(np.float64), x.astype(np.float64))  # exact in all dtypes
    m, n = few.shape
    assert m >= 3 and len(np.unique(few)) <= 3  # so every column of >= 4 models has a tie
    if m > 3:
        assert all(len(np.unique(few[:, j])) < m for j in range(n))


def test_questions_share_vocabulary_within_a_category(tmp_path):
    meta = choose_benchmarks(24)
    write_questions(tmp_path, list(meta.index), list(meta["category"]), seed=0)
    docs = [" ".join(json.loads(line)["question"] for line in (tmp_path / f"{b}.jsonl").read_text().splitlines()) for b in meta.index]
    x = TfidfVectorizer().fit_transform(docs)
    sim = (x @ x.T).toarray()
    cat = meta["category"].to_numpy()
    same = (cat[:, None] == cat[None, :]) & ~np.eye(len(cat), dtype=bool)
    assert sim[same].mean() > 2 * sim[cat[:, None] != cat[None, :]].mean()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(models=2), "at least 3 models"),
        (dict(benchmarks=0), "at least one benchmark"),
        (dict(tokens=100, benchmarks=10, planted_per_benchmark=30), "cannot hold 300 planted tokens"),
        (dict(out_is_file=True), "is a file"),
    ],
)
def test_errors(tmp_path, kwargs, message):
    out = tmp_path / "x"
    if kwargs.pop("out_is_file", False):
        out.write_text("")
    with pytest.raises(BsigError, match=message):
        synthesize(out, **kwargs)


def test_cli(tmp_path, capsys):
    main(["synth", str(tmp_path / "c"), "--models", "4", "--benchmarks", "3", "--tokens", "3000", "--planted", "2", "--no-questions"])
    assert "wrote" in capsys.readouterr().out
    assert xr.open_zarr(tmp_path / "c" / "perplexity.zarr").sizes["model"] == 4
    assert not (tmp_path / "c" / "questions").exists()
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "d"), "--models", "2"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and err.count("\n") == 1 and "at least 3 models" in err


_RSS_SCRIPT = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "bsig_array.cli.main", "synth", sys.argv[1], "--tokens", sys.argv[2],
                "--chunk-tokens", str(1 << 18), "--no-questions"], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def _peak_rss(out: Path, tokens: int) -> int:
    """Peak RSS (bytes) of one ``bsig synth`` run, measured by a parent process of its own."""
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(out), str(tokens)], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_a_chunk_not_the_pool(tmp_path):
    small = _peak_rss(tmp_path / "s", 300_000)
    big = _peak_rss(tmp_path / "b", 3_000_000)  # 384 MB of float32 NLLs (32 models)
    assert xr.open_zarr(tmp_path / "b" / "perplexity.zarr").sizes["token"] == 3_000_000
    assert big < 1 << 30
    assert big - small < 150 * 2**20, (small, big)
