"""``bsig profile`` (kernel rates against this machine's limits) and ``bsig screen --profile`` /
``--performance-report`` (a real run's time breakdown, Dask's own report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli_errors import MODELS, assert_one_line_error, good_store, run_cli

from bsig_array.diagnostics.profile import COST
from bsig_array.runtime.device import cupy_available

KERNELS = {"read + decode", "ranks", "thrush codes", "preselect codes", "both codes", "histogram thrush",
           "histogram preselect", "tail test thrush", "tail test preselect", "forward step"}


def test_profile_table_and_json(capsys, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    code, out, err = run_cli(capsys, "profile", "--tokens", "512", "--models", "5", "--benchmarks", "3",
                             "--ties", "first", "--json", path)
    assert code == 0, err
    for name in KERNELS:
        assert name in out
    assert "share" in out and f"wrote {path}" in out
    r = json.loads(path.read_text())
    assert (r["device"], r["models"], r["benchmarks"], r["tokens"], r["ties"]) == ("cpu", 5, 3, 512, "first")
    assert r["limits"]["memory_bytes_per_s"] > 1e8 and r["limits"]["ops_per_s"] > 1e8
    assert len(r["limits"]["how"]) == 2
    assert {k["kernel"] for k in r["kernels"]} == KERNELS
    cost = COST(5, 3, 2)  # float16 chunk
    for k in r["kernels"]:
        assert k["wall_s"] > 0 and k["cpu_s"] is not None and k["cpu_s"] >= 0
        assert k["tokens_per_s"] == pytest.approx(k["tokens"] / k["wall_s"])
        nbytes, ops = cost[k["kernel"]]
        assert k["bytes_per_s"] == pytest.approx(k["tokens_per_s"] * nbytes)
        assert k["ops_per_s"] == pytest.approx(k["tokens_per_s"] * ops)
        shares = {"memory": k["bytes_per_s"] / r["limits"]["memory_bytes_per_s"],
                  "ops": k["ops_per_s"] / r["limits"]["ops_per_s"]}
        assert k["limit"] == max(shares, key=lambda s: shares[s])
        assert k["share_of_limit"] == pytest.approx(max(shares.values())) and k["share_of_limit"] > 0
    assert next(k for k in r["kernels"] if k["kernel"] == "forward step")["tokens"] == 512


@pytest.mark.skipif(cupy_available(), reason="a GPU is present")
def test_profile_gpu_without_gpu_is_one_line(capsys) -> None:
    assert_one_line_error(capsys, ["profile", "--device", "gpu", "--tokens", "256"], "--device gpu needs CuPy")


@pytest.mark.parametrize("args, fragment", [
    (["--tokens", "10"], "--tokens must be an integer >= 64"),
    (["--models", "1"], "--models must be an integer >= 2"),
    (["--models", "201"], "--models must be at most 200"),
    (["--benchmarks", "0"], "--benchmarks must be an integer >= 1"),
])
def test_profile_bad_sizes_are_one_line(capsys, args: list[str], fragment: str) -> None:
    assert_one_line_error(capsys, ["profile", *args], fragment)


@pytest.fixture
def run_inputs(tmp_path: Path) -> tuple[Path, Path]:
    store = good_store(tmp_path / "p.zarr", n_tokens=300, chunk=100)
    csv = tmp_path / "perf.csv"
    frame = pd.DataFrame(np.random.default_rng(0).integers(0, 5, (len(MODELS), 2)) / 5.0, columns=["b0", "b1"])
    frame.insert(0, "model", MODELS)
    frame.to_csv(csv, index=False)
    return store, csv


@pytest.mark.parametrize("passes, names", [("1", {"pass"}), ("2", {"pass1", "pass2"})])
def test_screen_profile_breakdown(capsys, tmp_path: Path, run_inputs, passes: str, names: set[str]) -> None:
    store, csv = run_inputs
    report = tmp_path / "screen-profile.json"
    code, _, err = run_cli(capsys, "screen", "--perplexity", store, "--performance", csv, "--out", tmp_path / "s.zarr",
                           "--alpha", "0.05", "--device", "cpu", "--passes", passes, "--profile", report)
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["device"] == "cpu" and set(r["passes"]) == names
    for p in r["passes"].values():
        assert p["wall_s"] > 0 and p["read_decode_s"] > 0 and p["compute_s"] > 0
        assert p["check_s"] >= 0 and p["spill_s"] >= 0
    assert r["merge_s"] > 0 and r["write_s"] > 0 and r["timings"]


def test_screen_reports_refuse_bad_paths_before_work(capsys, tmp_path: Path, run_inputs) -> None:
    store, csv = run_inputs
    before = csv.read_bytes()
    base = ["screen", "--perplexity", store, "--performance", csv, "--out", tmp_path / "s.zarr"]
    assert_one_line_error(capsys, [*base, "--profile", csv], "is an input or output of this run")
    assert_one_line_error(capsys, [*base, "--performance-report", tmp_path / "r.html"], "needs a dask.distributed")
    assert csv.read_bytes() == before and not (tmp_path / "s.zarr").exists() and not (tmp_path / "r.html").exists()


def test_screen_dask_performance_report(capsys, tmp_path: Path, run_inputs) -> None:
    from distributed import LocalCluster

    store, csv = run_inputs
    html = tmp_path / "dask-report.html"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        code, _, err = run_cli(capsys, "screen", "--perplexity", store, "--performance", csv, "--out",
                               tmp_path / "s.zarr", "--alpha", "0.05", "--scheduler", cluster.scheduler_address,
                               "--performance-report", html)
    assert code == 0, err
    assert html.stat().st_size > 1000 and "<html" in html.read_text()[:2000].lower()
