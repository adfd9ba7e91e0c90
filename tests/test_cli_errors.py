"""Every bad input gets one line on stderr (``bsig: error: ...``), a non-zero exit and no traceback.

Most cases call the real entry point :func:`bsig_array.cli.main.main` in-process (fast); one runs the
installed ``bsig`` console script in a subprocess to pin the end-to-end behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from bsig_array.cli.main import main
from bsig_array.io.perplexity_store.writer import create_store

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

MODELS = ["m0", "m1", "m2", "m3"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_one_line_error(capsys, args, *fragments: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code not in (0, None)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def good_store(path: Path, n_tokens: int = 300, chunk: int = 100, models=MODELS) -> Path:
    writer = create_store(path, models, n_tokens, chunk_tokens=chunk)
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, np.random.default_rng(j).random((len(models), sl.stop - sl.start)).astype("f4"))
    return path


def plain_store(path: Path, nll, models=("a", "b", "c"), dims=("model", "token"), name="nll") -> Path:
    coords = {"model": list(models)} if "model" in dims else {}
    xr.Dataset({name: (dims, nll)}, coords=coords).to_zarr(path, zarr_format=3)
    return path


def test_missing_nll(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr", np.zeros((3, 5)), name="logprob")
    assert_one_line_error(capsys, ["validate", store], "has no 'nll' variable", "logprob")


def test_wrong_dims(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr", np.zeros((5, 3)), dims=("token", "model"))
    assert_one_line_error(capsys, ["validate", store], "dims ('token', 'model'), expected ('model', 'token')")


def test_non_float_dtype(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr", np.zeros((3, 5), dtype=np.int32))
    assert_one_line_error(capsys, ["validate", store], "dtype int32, expected float")


def test_nan_and_inf_values(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    from bsig_array.io.perplexity_store.writer import StoreWriter

    writer = StoreWriter(store)
    block = np.ones((4, 100), "f4")
    block[1, 17] = np.nan
    block[3, 2] = np.inf
    block[0, 99] = np.nan
    writer.write_chunk(2, block)
    assert run_cli(capsys, "validate", store)[0] == 0  # shallow validation does not read values
    assert_one_line_error(
        capsys, ["validate", store, "--deep"], "2 NaN and 1 inf values", "first: model 'm3', token position 202"
    )


def test_duplicate_model_names(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr", np.zeros((3, 5)), models=("a", "b", "a"))
    assert_one_line_error(capsys, ["validate", store], "duplicate model names ['a']")


def test_fewer_than_three_models(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr", np.zeros((2, 5)), models=("a", "b"))
    assert_one_line_error(capsys, ["validate", store], "only 2 models, need at least 3")


def test_model_mismatch_between_store_and_performance(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    pd.DataFrame({"model": ["m0", "m1", "m2", "mX"], "bench": [0.1, 0.5, 0.3, 0.9]}).to_csv(tmp_path / "y.csv", index=False)
    assert_one_line_error(
        capsys, ["validate", store, "--performance", tmp_path / "y.csv"],
        "in the store but not in the performance: ['m3']", "in the performance but not in the store: ['mX']",
    )


def test_benchmark_with_all_equal_scores(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    pd.DataFrame({"model": MODELS[::-1], "ok": [0.1, 0.5, 0.3, 0.9], "flat": [0.25] * 4}).to_csv(tmp_path / "y.csv", index=False)
    assert_one_line_error(capsys, ["validate", store, "--performance", tmp_path / "y.csv"], "['flat']", "same score for every model")


def test_performance_that_matches_passes(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    pd.DataFrame({"model": MODELS[::-1], "ok": [0.1, 0.5, 0.3, 0.9]}).to_csv(tmp_path / "y.csv", index=False)
    code, out, err = run_cli(capsys, "validate", store, "--performance", tmp_path / "y.csv")
    assert code == 0 and "1 benchmarks, models match the store" in out and err == ""


def test_truncated_chunk(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    chunk = store / "nll" / "c" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:25])
    assert_one_line_error(capsys, ["validate", store, "--deep"], "unreadable chunk files (nll/c/0/1)", "--mark-pending")
    assert_one_line_error(capsys, ["validate", store, "--deep", "--mark-pending"], "now marked pending")
    assert_one_line_error(capsys, ["validate", store], "incomplete: 4 of 12 (model, chunk) blocks unwritten")


def test_corrupt_chunk_file_garbage(tmp_path, capsys):
    store = good_store(tmp_path / "s.zarr")
    (store / "nll" / "c" / "0" / "0").write_bytes(b"not a blosc frame at all")
    assert_one_line_error(capsys, ["validate", store, "--deep"], "nll/c/0/0")


def test_missing_store_and_not_a_store(tmp_path, capsys):
    assert_one_line_error(capsys, ["validate", tmp_path / "nope.zarr"], "does not exist")
    (tmp_path / "junk").mkdir()
    assert_one_line_error(capsys, ["validate", tmp_path / "junk"], "is an empty directory holding no artifact bsig writes")


def test_mark_pending_needs_deep(tmp_path, capsys):
    assert_one_line_error(capsys, ["validate", good_store(tmp_path / "s.zarr"), "--mark-pending"], "needs --deep")


def test_ingest_row_mismatch_and_existing_output(tmp_path, capsys):
    for name, rows in (("a", [(1, 0), (1, 1)]), ("b", [(1, 0), (1, 1)]), ("c", [(1, 0)])):
        pq.write_table(
            pa.table({"text_id": [r[0] for r in rows], "chunk_id": [r[1] for r in rows],
                      "logprobs": pa.array([[-0.5, -1.0]] * len(rows), pa.list_(pa.float32()))}),
            tmp_path / f"{name}.parquet",
        )
    files = [tmp_path / f"{n}.parquet" for n in "abc"]
    assert_one_line_error(capsys, ["ingest", *files, "--out", tmp_path / "s.zarr"],
                          "row (text_id=1, chunk_id=1) is in", "missing from")
    good_store(tmp_path / "t.zarr")
    assert_one_line_error(capsys, ["ingest", *files[:2], "--out", tmp_path / "t.zarr"], "already exists; pass --overwrite")


def test_ingest_non_numeric_wide_table(tmp_path, capsys):
    (tmp_path / "w.csv").write_text("m1,m2,m3\n1,2,3\n1,two,3\n")
    assert_one_line_error(capsys, ["ingest", tmp_path / "w.csv", "--out", tmp_path / "s.zarr"], "NLL columns must be numbers")


def test_console_script_end_to_end(tmp_path):
    store = plain_store(tmp_path / "s.zarr", np.zeros((2, 5)), models=("a", "b"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "bsig"), "validate", str(store)],  # the installed console script
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"bsig: error: {store}: only 2 models, need at least 3 to rank tokens across models"]
