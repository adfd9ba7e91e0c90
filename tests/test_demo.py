"""The demo runs the real chain (synth → screen → select → overlap → stats → report) at a small size."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from click.testing import CliRunner

from bsig_array.pipelines.demo import recovery, run_demo


def test_demo_recovers_the_planted_truth(tmp_path):
    lines: list[str] = []
    s = run_demo(tmp_path / "d", models=16, benchmarks=16, tokens=20_000, semantic_bootstrap=2, resamples=200, log=lines.append)
    assert [line.split("]")[0] for line in lines] == ["[synth", "[screen", "[select", "[overlap", "[stats", "[report"]
    out = tmp_path / "d"
    for path in ("screen.zarr", "signatures.zarr", "overlap.nc", "stats/signature_within_cross.csv", "report/report.html", "summary.json"):
        assert (out / path).exists(), path
    assert json.loads((out / "summary.json").read_text())["first_token_planted"] == s["first_token_planted"]
    overlap = xr.load_dataset(out / "overlap.nc", engine="scipy")
    for level in ("signature", "signature_controlled", "performance", "performance_controlled", "semantic"):
        assert np.isfinite(overlap[level].values).all(), level
    assert s["benchmarks_with_signature"] == 16
    # Many first tokens are planted in the benchmark's cluster (chance is ~1e-3).  At 16 models the
    # race against lucky noise tokens is close, and the scores' format skill (which no token carries)
    # makes it closer: seeds 0-3 give 0.69, 0.31, 0.31, 0.5 (0.88, 0.38, 0.44, 0.63 without it).
    assert s["first_token_in_cluster"] >= 0.5
    # the format story needs the default size (32 benchmarks); tests/test_stats_valid.py checks it on the scores
    assert set(s["format_effect"]) == {"signature", "signature_controlled", "performance", "performance_controlled"}
    assert set(s["separation"]) >= {"signature (paper)", "signature (signed)", "performance", "performance (controlled)"}
    assert all(np.isfinite(v["diff"]) for v in s["separation"].values())
    assert "Format confound" in (out / "report" / "report.html").read_text()
    assert s["first_token_planted"] >= 0.25
    assert np.isfinite(s["within_minus_cross"])
    assert "Recovered planted truth" in (out / "report" / "report.html").read_text()


def test_recovery_counts_planted_first_tokens():
    sig = xr.Dataset({"signature_token": (("benchmark", "step"), np.array([[5, 9], [7, -1], [-1, -1]]))}, coords={"benchmark": ["a", "b", "c"]})
    m = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    overlap = xr.Dataset({"signature": (("benchmark_a", "benchmark_b"), m)}, coords={"benchmark_a": ["a", "b", "c"], "benchmark_b": ["a", "b", "c"]})
    truth = {
        "benchmarks": {"a": {"cluster": "x", "planted_tokens": [5]}, "b": {"cluster": "x", "planted_tokens": [8]}, "c": {"cluster": "y", "planted_tokens": [1]}},
        "clusters": {"x": {"planted_tokens": [5, 7, 8]}, "y": {"planted_tokens": [1]}},
    }
    r = recovery(sig, overlap, truth)
    assert r["benchmarks_with_signature"] == 2
    assert r["first_token_planted"] == 0.5 and r["first_token_in_cluster"] == 1.0
    assert r["within_minus_cross"] == 0.8 - 0.2
    assert r["signature_tokens_in_cluster"] == 2 / 3  # 5 and 7 are cluster-x tokens, 9 is not


def test_cli_demo_help():
    from bsig_array.cli.main import cli

    res = CliRunner().invoke(cli, ["demo", "--help"])
    assert res.exit_code == 0 and "--semantic-bootstrap" in res.output
