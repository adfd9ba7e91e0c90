"""Validation: structural checks, the per-block value check, and the deep store scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.schema import check_block, check_store_structure
from bsig_array.io.perplexity_store.validate import validate_store
from bsig_array.io.perplexity_store.writer import StoreWriter, create_store

MODELS = ["m0", "m1", "m2", "m3"]


def write_full(path: Path, n_tokens: int = 500, chunk: int = 100, models=MODELS) -> StoreWriter:
    writer = create_store(path, models, n_tokens, chunk_tokens=chunk)
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, np.random.default_rng(j).random((len(models), sl.stop - sl.start)).astype("f4"),
                           token=np.arange(sl.start, sl.stop))
    return writer


# ------------------------------------------------------------------------------------ check_block


@st.composite
def blocks_with_bad_values(draw):
    """Float blocks where some cells are NaN, +inf or -inf (possibly none)."""
    m = draw(st.integers(1, 5))
    n = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    block = draw(hnp.arrays(dtype, (m, n), elements=st.floats(0, 20, width=16)))
    kinds = draw(hnp.arrays(np.int8, (m, n), elements=st.sampled_from([0, 0, 0, 0, 1, 2, 3])))
    block[kinds == 1] = np.nan
    block[kinds == 2] = np.inf
    block[kinds == 3] = -np.inf
    return block, draw(st.integers(0, 10**9))


@given(blocks_with_bad_values())
def test_check_block_counts_and_first_position(case):
    block, start = case
    names = [f"model{i}" for i in range(block.shape[0])]
    # literal reference: walk tokens in order, models within a token
    nan = inf = 0
    first = None
    for t in range(block.shape[1]):
        for i in range(block.shape[0]):
            v = float(block[i, t])
            if v != v:
                nan += 1
            elif v in (float("inf"), float("-inf")):
                inf += 1
            else:
                continue
            first = first or (names[i], start + t)
    if first is None:
        check_block(block, names, start)
        return
    with pytest.raises(BsigError) as err:
        check_block(block, names, start, path="p.zarr")
    msg = str(err.value)
    assert msg == (
        f"store p.zarr: nll has {nan} NaN and {inf} inf values in tokens {start}..{start + block.shape[1] - 1} "
        f"(first: model {first[0]!r}, token position {first[1]}); recompute those NLLs or drop those tokens "
        "before using the store"
    )


# ------------------------------------------------------------------------------------- structure


def dataset(nll, models=("a", "b", "c"), dims=("model", "token")):
    return xr.Dataset({"nll": (dims, nll)}, coords={"model": list(models)} if "model" in dims else {})


@pytest.mark.parametrize(
    "ds, message",
    [
        (xr.Dataset({"x": (("model", "token"), np.zeros((3, 2)))}), "has no 'nll' variable"),
        (dataset(np.zeros((2, 3)), dims=("token", "model")), "expected ('model', 'token')"),
        (dataset(np.zeros((3, 2), dtype=np.int32)), "dtype int32, expected float"),
        (dataset(np.zeros((3, 2)), models=("a", "b", "a")), "duplicate model names ['a']"),
        (dataset(np.zeros((2, 2)), models=("a", "b")), "only 2 models, need at least 3"),
    ],
)
def test_structure_errors(ds, message):
    with pytest.raises(BsigError) as err:
        check_store_structure(ds, "x.zarr")
    assert message in str(err.value)


def test_structure_accepts_float_stores():
    for dtype in ("float16", "float32", "float64"):
        check_store_structure(dataset(np.zeros((3, 2), dtype=dtype)))


# ------------------------------------------------------------------------------------ deep scan


def test_validate_summary_shallow_and_deep(tmp_path):
    write_full(tmp_path / "s.zarr")
    summary = validate_store(tmp_path / "s.zarr")
    assert (summary.models, summary.n_tokens, summary.n_chunks, summary.chunk_tokens) == (MODELS, 500, 5, 100)
    assert (summary.complete_blocks, summary.total_blocks, summary.dtype, summary.bsig_store) == (20, 20, "float32", True)
    assert summary.coords == ["token", "doc", "piece"] and not summary.deep
    text = validate_store(tmp_path / "s.zarr", deep=True).format()
    assert "500 in 5 chunks of 100" in text and "all chunks readable, no NaN/inf" in text


def test_validate_deep_counts_nonfinite_over_chunks(tmp_path):
    writer = write_full(tmp_path / "s.zarr")
    for j, cells in ((1, [(2, 5, np.nan), (0, 7, np.inf)]), (3, [(1, 0, np.nan), (3, 99, -np.inf), (0, 50, np.nan)])):
        sl = writer.chunk_slice(j)
        block = np.asarray(writer.nll[:, sl])
        for i, t, v in cells:
            block[i, t] = v
        writer.write_chunk(j, block)
    validate_store(tmp_path / "s.zarr")  # shallow: values are not read
    with pytest.raises(BsigError) as err:
        validate_store(tmp_path / "s.zarr", deep=True)
    assert "nll has 3 NaN and 2 inf values (first: model 'm2', token position 105)" in str(err.value)


def test_validate_deep_names_corrupt_and_missing_files_and_marks_pending(tmp_path):
    write_full(tmp_path / "s.zarr")
    bad = tmp_path / "s.zarr" / "nll" / "c" / "0" / "3"
    bad.write_bytes(bad.read_bytes()[:40])
    (tmp_path / "s.zarr" / "nll" / "c" / "0" / "1").unlink()
    with pytest.raises(BsigError) as err:
        validate_store(tmp_path / "s.zarr", deep=True)
    msg = str(err.value)
    assert "2 unreadable chunk files (nll/c/0/1 (missing) and 1 more)" in msg and "--mark-pending" in msg
    assert "NaN" not in msg  # a missing file is named, not counted as NaN fill
    with pytest.raises(BsigError, match="now marked pending"):
        validate_store(tmp_path / "s.zarr", deep=True, mark_pending=True)
    writer = StoreWriter(tmp_path / "s.zarr")
    assert writer.pending() == [1, 3]
    with pytest.raises(BsigError, match="incomplete"):
        validate_store(tmp_path / "s.zarr")
    for j in writer.pending():  # resume rewrites exactly those
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, np.ones((4, sl.stop - sl.start), "f4"))
    assert validate_store(tmp_path / "s.zarr", deep=True).complete_blocks == 20
    assert float(open_store(tmp_path / "s.zarr")["nll"][:, 100:200].sum()) == 400.0


def test_validate_deep_finds_corrupt_coordinate_chunk(tmp_path):
    write_full(tmp_path / "s.zarr")
    bad = tmp_path / "s.zarr" / "token" / "c" / "2"
    bad.write_bytes(bad.read_bytes()[:10])
    with pytest.raises(BsigError, match=r"1 unreadable chunk files \(token/c/2\)"):
        validate_store(tmp_path / "s.zarr", deep=True)


def test_validate_incomplete_store_deep_ignores_unwritten_blocks(tmp_path):
    writer = create_store(tmp_path / "s.zarr", MODELS, 300, chunk_tokens=100)
    writer.write_chunk(0, np.ones((4, 100), "f4"))
    writer.write_chunk(1, np.ones((2, 100), "f4"), rows=[0, 2])
    # mark_pending opens incomplete stores; unwritten blocks (NaN fill) are not counted as bad values
    summary = validate_store(tmp_path / "s.zarr", deep=True, mark_pending=True)
    assert summary.complete_blocks == 6 and summary.nan == 0


@pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")
def test_validate_plain_store_summary(tmp_path):
    xr.Dataset({"nll": (("model", "token"), np.ones((3, 30), "f8") + np.arange(30))}, coords={"model": ["x", "y", "z"]}).chunk(
        {"token": 7}
    ).to_zarr(tmp_path / "p.zarr", zarr_format=3)
    summary = validate_store(tmp_path / "p.zarr", deep=True)
    assert not summary.bsig_store and summary.schema_version is None
    assert (summary.n_chunks, summary.chunk_tokens, summary.dtype, summary.coords) == (5, 7, "float64", [])
    assert "plain zarr" in summary.format()
