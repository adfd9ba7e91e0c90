"""Hostile inputs of ``bsig stats`` and its folder (issue 27): values that make no sense, too few
benchmarks, an unreachable clique threshold, and a stats folder killed or mixed part-way.

Everything runs through the real CLI entry point and the package's own writers; the kill test runs
``bsig stats --overwrite`` in a subprocess killed (SIGKILL) at each fault point it passes
(:mod:`bsig_array.io.faults`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_cli_errors as cli_errors
import xarray as xr

from bsig_array.io.overlap_file import write_overlap
from bsig_array.io.provenance import PROVENANCE_FILE
from bsig_array.io.stats_tables import read_stats

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    code, out, err = cli_errors.run_cli(capsys, *args)
    assert "Traceback" not in err
    return code or 0, out, err


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bsig: warning: ")]


def overlap_file(path: Path, n: int, seed: int = 0, cats=None) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, size=(n, n))
    m = (x + x.T) / 2
    np.fill_diagonal(m, 1.0)
    names = [f"b{i}" for i in range(n)]
    cats = cats or list(np.resize(["x", "y", "z"], n))
    ds = xr.Dataset({"signature": (("benchmark_a", "benchmark_b"), m)}, coords={"benchmark_a": names, "benchmark_b": names})
    meta = {"category": cats, "function": list(np.resize(["math", "logic"], n)), "family": list(np.resize(["f1", "f2"], n)),
            "format": ["multiple_choice"] * n}
    for k, v in meta.items():
        ds = ds.assign_coords({f"{k}_a": ("benchmark_a", np.array(v, dtype=object)),
                               f"{k}_b": ("benchmark_b", np.array(v, dtype=object))})
    write_overlap(ds, path)
    return path


# ------------------------------------------------------------------------- values without sense


def test_accuracy_scores_outside_unit_interval_warn_once(tmp_path, capsys):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"model": [f"m{i}" for i in range(5)],
                          "marketing": [0.5, -0.2, 0.7, 1.3, 0.6],  # multiple_choice in the shipped metadata
                          "business_ethics": rng.uniform(0.3, 0.9, 5)})
    table.to_csv(tmp_path / "y.csv", index=False)
    code, _, err = run_cli(capsys, "performance", "show", tmp_path / "y.csv")
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1, err
    assert "2 scores outside [0, 1] in 1 accuracy benchmark" in lines[0] and "marketing" in lines[0], lines[0]
    assert "-0.2 to 1.3" in lines[0] and "business_ethics" not in lines[0]
    table["marketing"] = [0.5, 0.4, 0.7, 0.9, 0.6]  # in range: nothing to say
    table.to_csv(tmp_path / "y.csv", index=False)
    code, _, err = run_cli(capsys, "performance", "show", tmp_path / "y.csv")
    assert code == 0 and not warning_lines(err), err


def test_stats_on_one_benchmark_is_refused(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 1)
    code, _, err = run_cli(capsys, "stats", "--overlap", tmp_path / "o.nc", "--out", tmp_path / "s")
    assert code not in (0, None)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: ") and "1 benchmark (b0)" in lines[0], err
    assert not (tmp_path / "s").exists()


def test_stats_on_two_benchmarks_warns_and_marks_rows_not_testable(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 2, cats=["x", "y"])
    code, _, err = run_cli(capsys, "stats", "--overlap", tmp_path / "o.nc", "--out", tmp_path / "s", "--threshold", "-1")
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1 and "only 2 benchmarks (1 pair): no test can run" in lines[0], err
    tables = read_stats(tmp_path / "s")["signature"]
    wc, ff = tables["within_cross"], tables["family_format"]
    assert list(wc.index) == ["overall"] and wc["note"].str.startswith("not testable: ").all() and wc["within"].isna().all()
    assert ff["note"].str.startswith("not testable: ").all() and ff["p_value"].isna().all()
    assert len(tables["clique"]) == 2  # the one pair above --threshold -1 is still described


def test_categories_missing_are_written_not_testable(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 6, cats=["unknown"] * 6)
    code, _, err = run_cli(capsys, "stats", "--overlap", tmp_path / "o.nc", "--out", tmp_path / "s", "--threshold", "-1")
    assert code == 0, err
    wc = pd.read_csv(tmp_path / "s" / "signature_within_cross.csv", index_col=0)
    assert wc.loc["overall", "note"] == "not testable: fewer than two known categories (pass --metadata with a category column)"
    ff = pd.read_csv(tmp_path / "s" / "signature_family_format.csv", index_col=0)
    assert pd.isna(ff.loc["family", "note"]) and np.isfinite(ff.loc["family", "p_value"])  # two families: a test
    assert ff.loc["format", "note"] == "not testable: every benchmark with a known format has the same one"
    assert not warning_lines(err), err


def test_unreachable_clique_threshold_warns(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 9)
    code, _, err = run_cli(capsys, "stats", "--overlap", tmp_path / "o.nc", "--out", tmp_path / "s",
                           "--threshold", "0.9", "--permutations", "20")
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1 and "no pair exceeds --threshold 0.9 (largest overlap 0." in lines[0], err
    assert lines[0].endswith("the clique table is empty")
    assert pd.read_csv(tmp_path / "s" / "signature_clique.csv").empty


# ---------------------------------------------------------------------------- one folder, one run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def tables_of(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if k.endswith(".csv")}


BSIG = "import sys; from bsig_array.cli.main import main; main(sys.argv[1:])"


def bsig_process(args: list[object], **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "BSIG_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", BSIG, *map(str, args)], env=full, capture_output=True, text=True, timeout=300)


def test_overwrite_killed_at_every_point_leaves_old_or_new_folder_whole(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 8)
    common = ["stats", "--overlap", tmp_path / "o.nc", "--permutations", "20", "--threshold", "0"]
    old = tmp_path / "old"
    assert run_cli(capsys, *common, "--out", old, "--seed", "1")[0] == 0
    (old / "notes.txt").write_text("mine\n")  # a file of the user's in the folder: kept
    new_ref = tmp_path / "new"
    assert run_cli(capsys, *common, "--out", new_ref, "--seed", "2")[0] == 0
    old_snap, new_tables = snapshot(old), tables_of(snapshot(new_ref))
    assert tables_of(old_snap) != new_tables
    count = tmp_path / "count.txt"
    work = tmp_path / "work"
    shutil.copytree(old, work)
    args = [*common, "--out", work, "--seed", "2", "--overwrite"]
    assert bsig_process(args, BSIG_FAULT_COUNT=str(count)).returncode == 0
    points = len(count.read_text().split())
    assert points >= 2
    seen = set()
    for n in range(1, points + 1):
        shutil.rmtree(work)
        shutil.copytree(old, work)
        killed = bsig_process(args, BSIG_FAULT_KILL_AT=str(n))
        assert killed.returncode == -9, (n, killed.stderr)
        now = snapshot(work)
        if now == old_snap:
            seen.add("old")
        else:
            assert tables_of(now) == new_tables and now["notes.txt"] == b"mine\n", n  # the new folder, whole
            assert json.loads(now[PROVENANCE_FILE])["options"]["seed"] == 2
            read_stats(work)
            seen.add("new")
    assert seen == {"old", "new"}
    # the next run removes the killed runs' debris (saying so) and writes the new folder
    code, _, err = run_cli(capsys, *args)
    assert code == 0 and "left by an interrupted bsig run" in err, err
    assert tables_of(snapshot(work)) == new_tables
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".work.")]


def test_report_refuses_a_hand_mixed_stats_folder(tmp_path, capsys):
    overlap_file(tmp_path / "o.nc", 8)
    common = ["stats", "--overlap", tmp_path / "o.nc", "--permutations", "20", "--threshold", "0"]
    assert run_cli(capsys, *common, "--out", tmp_path / "a", "--seed", "1")[0] == 0
    assert run_cli(capsys, *common, "--out", tmp_path / "b", "--seed", "2")[0] == 0
    assert run_cli(capsys, "report", "--stats", tmp_path / "a", "--out", tmp_path / "r")[0] == 0

    def refused(folder: Path, *fragments: str) -> None:
        code, _, err = run_cli(capsys, "report", "--stats", folder, "--out", tmp_path / "r2")
        lines = err.splitlines()
        assert code not in (0, None) and len(lines) == 1 and lines[0].startswith("bsig: error: "), err
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        assert not (tmp_path / "r2").exists()

    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "a", mixed)
    shutil.copy(tmp_path / "b" / "signature_family_format.csv", mixed)  # a table of the other run
    refused(mixed, "mixes runs", "signature_family_format.csv", "--overwrite")
    shutil.copy(tmp_path / "a" / "signature_family_format.csv", mixed)
    (mixed / "signature_clique.csv").unlink()
    refused(mixed, "incomplete", "signature_clique.csv", "is missing")
    shutil.copy(tmp_path / "a" / "signature_clique.csv", mixed)
    shutil.copy(tmp_path / "a" / "signature_clique.csv", mixed / "semantic_clique.csv")
    refused(mixed, "mixes runs", "semantic_clique.csv")
    # bsig stats itself will not write one run beside tables of another into one folder
    code, _, err = run_cli(capsys, *common, "--out", mixed, "--overwrite")
    assert code not in (0, None) and "semantic_clique.csv" in err and len(err.splitlines()) == 1, err


def test_remote_overwrite_killed_is_refused_until_rerun(tmp_path, capsys, s3, s3_options):
    overlap_file(tmp_path / "o.nc", 8)
    url = f"s3://{s3.bucket()}/stats"
    common = ["stats", "--overlap", tmp_path / "o.nc", "--permutations", "20", "--threshold", "0", "--out", url]
    assert run_cli(capsys, *common, "--seed", "1")[0] == 0
    old = read_stats(url)
    killed = bsig_process([*common, "--seed", "2", "--overwrite"], BSIG_FAULT_KILL_AT="4", BSIG_STORAGE_OPTIONS=s3.options_json)
    assert killed.returncode == -9, killed.stderr
    code, _, err = run_cli(capsys, "report", "--stats", url, "--out", tmp_path / "r")
    assert code not in (0, None) and "incomplete" in err and len(err.splitlines()) == 1, err
    assert run_cli(capsys, *common, "--seed", "2", "--overwrite")[0] == 0
    new = read_stats(url)
    assert not new["signature"]["family_format"].equals(old["signature"]["family_format"])
