"""Perplexity store: create/write/open, resume after a killed writer, add_models, plain-xarray stores,
guarded reads (corrupt chunks and NaN become one-line BsigErrors, also on dask.distributed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store, read_block
from bsig_array.io.perplexity_store.writer import StoreWriter, create_store, is_complete

MODELS = ["alpha", "beta", "gamma", "delta"]


def chunk_values(j: int, m: int, width: int, dtype: str = "float32") -> np.ndarray:
    """Deterministic NLLs of chunk j (same in the reference and the resumed run)."""
    return np.random.default_rng(1000 + j).gamma(2.0, 1.5, size=(m, width)).astype(dtype)


def fill_store(path: Path, models=MODELS, n_tokens=1000, chunk_tokens=128, dtype="float32") -> StoreWriter:
    writer = create_store(path, models, n_tokens, chunk_tokens=chunk_tokens, dtype=dtype)
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        ids = np.arange(sl.start, sl.stop)
        writer.write_chunk(j, chunk_values(j, len(models), len(ids), dtype), token=ids * 7, doc=ids // 10, piece=ids % 10)
    return writer


def expected_nll(models=MODELS, n_tokens=1000, chunk_tokens=128, dtype="float32") -> np.ndarray:
    starts = range(0, n_tokens, chunk_tokens)
    return np.concatenate(
        [chunk_values(j, len(models), min(chunk_tokens, n_tokens - s), dtype) for j, s in enumerate(starts)], axis=1
    )


def test_roundtrip_values_coords_attrs(tmp_path):
    fill_store(tmp_path / "s.zarr")
    ds = open_store(tmp_path / "s.zarr")
    assert isinstance(ds["nll"].data, dask.array.Array)
    assert ds["nll"].dims == ("model", "token") and ds["nll"].dtype == np.float32
    assert ds["nll"].data.chunks == ((4,), (128,) * 7 + (104,))
    np.testing.assert_array_equal(ds["nll"].values, expected_nll())
    assert list(ds["model"].values) == MODELS
    assert "token" not in ds.indexes  # no pandas index on the long axis
    np.testing.assert_array_equal(ds["token"].values, np.arange(1000) * 7)
    np.testing.assert_array_equal(ds["doc"].values, np.arange(1000) // 10)
    assert ds["piece"].dtype == np.int32
    assert ds.attrs["bsig_schema_version"] == 1 and ds.attrs["chunk_tokens"] == 128
    # the model axis is indexed, so stages can select by name
    np.testing.assert_array_equal(ds["nll"].sel(model="gamma").values, expected_nll()[2])
    # and the store is a plain Zarr v3 store that xarray itself reads
    plain = xr.open_zarr(tmp_path / "s.zarr")
    np.testing.assert_array_equal(plain["nll"].values, expected_nll())


def test_float16_store(tmp_path):
    fill_store(tmp_path / "h.zarr", dtype="float16")
    ds = open_store(tmp_path / "h.zarr")
    assert ds["nll"].dtype == np.float16
    np.testing.assert_array_equal(ds["nll"].values, expected_nll(dtype="float16"))


def test_create_refuses_bad_requests(tmp_path):
    with pytest.raises(BsigError, match="duplicate model names"):
        create_store(tmp_path / "a.zarr", ["x", "y", "x"], 10)
    with pytest.raises(BsigError, match="unsupported store dtype"):
        create_store(tmp_path / "a.zarr", ["x", "y", "z"], 10, dtype="int32")
    create_store(tmp_path / "a.zarr", ["x", "y", "z"], 10)
    with pytest.raises(BsigError, match="already exists"):
        create_store(tmp_path / "a.zarr", ["x", "y", "z"], 10)
    create_store(tmp_path / "a.zarr", ["x", "y", "z"], 12, overwrite=True)
    assert StoreWriter(tmp_path / "a.zarr").n_tokens == 12


def test_incomplete_store_is_refused_and_pending_lists_it(tmp_path):
    writer = create_store(tmp_path / "s.zarr", MODELS, 300, chunk_tokens=100)
    writer.write_chunk(1, chunk_values(1, 4, 100))
    assert writer.pending() == [0, 2]
    assert not is_complete(tmp_path / "s.zarr")
    with pytest.raises(BsigError, match=r"incomplete: 8 of 12 \(model, chunk\) blocks unwritten"):
        open_store(tmp_path / "s.zarr")
    ds = open_store(tmp_path / "s.zarr", require_complete=False)
    np.testing.assert_array_equal(ds["nll"][:, 100:200].values, chunk_values(1, 4, 100))
    assert np.isnan(ds["nll"][:, :100].values).all()  # unwritten blocks read as the NaN fill


def test_data_written_but_unmarked_is_pending(tmp_path):
    """A writer killed between the data write and the progress mark leaves the chunk pending."""
    writer = create_store(tmp_path / "s.zarr", MODELS, 300, chunk_tokens=100)
    writer.nll[:, 0:100] = chunk_values(0, 4, 100)  # the data write of write_chunk, without the mark
    assert writer.pending() == [0, 1, 2]


def test_partial_row_writes(tmp_path):
    writer = create_store(tmp_path / "s.zarr", MODELS, 250, chunk_tokens=100)
    full = chunk_values(0, 4, 100)
    writer.write_chunk(0, full[[3, 1]], rows=[3, 1])  # unsorted rows
    done = writer.complete()
    assert done[:, 0].tolist() == [False, True, False, True] and not done[:, 1:].any()
    assert writer.pending(rows=[1, 3]) == [1, 2]
    assert writer.pending() == [0, 1, 2]
    writer.write_chunk(0, full[[0, 2]], rows=[0, 2])
    assert writer.pending() == [1, 2]
    for j in (1, 2):
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, chunk_values(j, 4, sl.stop - sl.start))
    expected = np.concatenate([full, chunk_values(1, 4, 100), chunk_values(2, 4, 50)], axis=1)
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["nll"].values, expected)
    with pytest.raises(ValueError, match="expects shape"):
        writer.write_chunk(2, full[:2], rows=[0, 1])


def test_add_models(tmp_path):
    writer = fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    rows = writer.add_models(["eps", "alpha", "zeta"])
    assert rows == [4, 0, 5] and writer.models == MODELS + ["eps", "zeta"]
    assert writer.pending(rows=[0]) == [] and writer.pending(rows=[4, 5]) == [0, 1, 2]
    with pytest.raises(BsigError, match="incomplete"):
        open_store(tmp_path / "s.zarr")
    new = {j: np.full((2, 100), 10.0 + j, dtype=np.float32) for j in range(3)}
    for j in StoreWriter(tmp_path / "s.zarr").pending(rows=[4, 5]):  # a fresh writer sees the new rows
        writer.write_chunk(j, new[j], rows=[4, 5])
    ds = open_store(tmp_path / "s.zarr")
    assert list(ds["model"].values) == MODELS + ["eps", "zeta"]
    np.testing.assert_array_equal(ds["nll"].values[:4], expected_nll(n_tokens=300, chunk_tokens=100))
    np.testing.assert_array_equal(ds["nll"].values[4:], np.concatenate([new[j] for j in range(3)], axis=1))
    np.testing.assert_array_equal(ds["token"].values, np.arange(300) * 7)


def test_invalidate_marks_chunks_pending(tmp_path):
    writer = fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    writer.invalidate([2, 0], rows=[1])
    assert writer.pending() == [0, 2] and writer.pending(rows=[0, 2, 3]) == []
    with pytest.raises(IndexError):
        writer.invalidate([3])


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store import chunk_values
    from bsig_array.io.perplexity_store.writer import StoreWriter
    import numpy as np

    writer = StoreWriter(sys.argv[1])
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        ids = np.arange(sl.start, sl.stop)
        writer.write_chunk(j, chunk_values(j, len(writer.models), len(ids)), token=ids * 7, doc=ids // 10, piece=ids % 10)
        print(j, flush=True)
        time.sleep(0.02)
    print("finished", flush=True)
    """
)


def test_writer_killed_mid_run_resumes_to_identical_store(tmp_path):
    n_tokens, chunk = 3000, 100
    reference = fill_store(tmp_path / "ref.zarr", n_tokens=n_tokens, chunk_tokens=chunk)
    create_store(tmp_path / "s.zarr", MODELS, n_tokens, chunk_tokens=chunk)
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s.zarr")], stdout=subprocess.PIPE, text=True)
    reported = []
    try:
        for line in proc.stdout:
            reported.append(int(line))
            if len(reported) == 5:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    writer = StoreWriter(tmp_path / "s.zarr")
    pending = writer.pending()
    assert pending, "the writer finished before it was killed; the test did not interrupt it"
    assert not set(pending) & set(reported)  # reported chunks are never rewritten
    assert len(pending) + int(writer.complete().all(axis=0).sum()) == writer.n_chunks
    assert pending == list(range(pending[0], writer.n_chunks))  # the writer goes in order; the rest is left

    # resume with the same program; it must write exactly the pending chunks, once each
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "s.zarr")], capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    assert lines[-1] == "finished" and [int(x) for x in lines[:-1]] == pending
    resumed, ref = open_store(tmp_path / "s.zarr"), open_store(tmp_path / "ref.zarr")
    for name in ("nll", "token", "doc", "piece"):
        np.testing.assert_array_equal(resumed[name].values, ref[name].values)
    assert reference.pending() == []


@pytest.mark.filterwarnings("ignore:The data type")
def test_plain_xarray_store_is_accepted(tmp_path):
    nll = np.random.default_rng(3).random((3, 50)).astype("float32")
    ds = xr.Dataset({"nll": (("model", "token"), nll)}, coords={"model": ["a", "b", "c"], "token": np.arange(50) + 100})
    ds.chunk({"token": 20}).to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    opened = open_store(tmp_path / "plain.zarr")
    np.testing.assert_array_equal(opened["nll"].values, nll)
    assert list(opened["model"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(opened["token"].values, np.arange(50) + 100)
    assert opened["nll"].data.chunks == ((3,), (20, 20, 10))
    with pytest.raises(BsigError, match="not a writable bsig store"):
        StoreWriter(tmp_path / "plain.zarr")


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_chunk_read_is_one_line_error(tmp_path):
    fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    ds = open_store(tmp_path / "s.zarr")
    corrupt(tmp_path / "s.zarr" / "nll" / "c" / "0" / "1")
    np.testing.assert_array_equal(ds["nll"][:, :100].values, chunk_values(0, 4, 100))  # other chunks still read
    with pytest.raises(BsigError) as err:
        ds["nll"].sum().compute()
    msg = str(err.value)
    assert "nll/c/0/1" in msg and "tokens 100..199" in msg and "rewrite" in msg and "\n" not in msg


def test_nan_in_block_names_count_model_and_position(tmp_path):
    writer = fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    block = chunk_values(2, 4, 100)
    block[2, 40] = np.nan
    block[1, 41] = np.inf
    block[3, 90] = np.nan
    writer.write_chunk(2, block)
    ds = open_store(tmp_path / "s.zarr")
    assert np.isfinite(ds["nll"][:, :200].values).all()  # clean chunks read fine
    with pytest.raises(BsigError, match=r"2 NaN and 1 inf values in tokens 200\.\.299 \(first: model 'gamma', token position 240\)"):
        ds["nll"].max().compute()
    # opting out of the value check (e.g. a stage that handles NaN itself)
    assert np.isnan(open_store(tmp_path / "s.zarr", check_values=False)["nll"].values).sum() == 2


def test_truncated_coordinate_chunk_read_is_one_line_error(tmp_path):
    fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    corrupt(tmp_path / "s.zarr" / "doc" / "c" / "2")
    ds = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(ds["token"].values, np.arange(300) * 7)
    with pytest.raises(BsigError, match=r"chunk file doc/c/2 \(tokens 200\.\.299\) is unreadable"):
        _ = ds["doc"].values


def test_read_block_directly(tmp_path):
    fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    array = zarr.open_group(tmp_path / "s.zarr", mode="r")["nll"]
    np.testing.assert_array_equal(read_block(array, slice(50, 150)), expected_nll(n_tokens=300, chunk_tokens=100)[:, 50:150])
    np.testing.assert_array_equal(
        read_block(array, (slice(1, 3), slice(0, 300))), expected_nll(n_tokens=300, chunk_tokens=100)[1:3]
    )
    corrupt(tmp_path / "s.zarr" / "nll" / "c" / "0" / "2")
    with pytest.raises(BsigError, match=r"chunk file nll/c/0/2 \(tokens 200\.\.299\) is unreadable"):
        read_block(array, slice(150, 250), path=tmp_path / "s.zarr", models=MODELS)


def test_guarded_reads_on_distributed(tmp_path):
    """Worker processes read through the guard too, and the BsigError reaches the client intact."""
    from distributed import Client, LocalCluster

    fill_store(tmp_path / "s.zarr", n_tokens=300, chunk_tokens=100)
    ds = open_store(tmp_path / "s.zarr")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        total = float(ds["nll"].sum().compute())
        np.testing.assert_allclose(total, expected_nll(n_tokens=300, chunk_tokens=100).sum(dtype=np.float64), rtol=1e-6)
        corrupt(tmp_path / "s.zarr" / "nll" / "c" / "0" / "0")
        with pytest.raises(BsigError, match="nll/c/0/0"):
            open_store(tmp_path / "s.zarr")["nll"].sum().compute()
