"""``bsig ingest``: paper-repo Parquet files (one per model) and wide Parquet/CSV tables -> store.

The inputs are real pyarrow-written files with the paper repository's schema; the expected store is
rebuilt by a literal dict-based implementation of the rules (last logprob, order by key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.stages.ingest import detect_format, expand_inputs, ingest


def paper_rows(keys, rng, n_models):
    """Per model: list of (text_id, chunk_id, logprobs) rows in a random order."""
    out = []
    for _ in range(n_models):
        rows = [(t, c, list(-rng.gamma(2.0, 1.0, size=int(rng.integers(1, 6))))) for t, c in keys]
        out.append([rows[i] for i in rng.permutation(len(rows))])
    return out


def write_paper(directory: Path, per_model, names, text_type=None, row_group=7) -> list[Path]:
    text_type = pa.int64() if text_type is None else text_type
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rows in zip(names, per_model):
        table = pa.table(
            {
                "text_id": pa.array([r[0] for r in rows], text_type),
                "chunk_id": pa.array([r[1] for r in rows], pa.int32()),
                "logprobs": pa.array([r[2] for r in rows], pa.list_(pa.float32())),
            }
        )
        files.append(directory / f"{name}.parquet")
        pq.write_table(table, files[-1], row_group_size=row_group)
    return files


def literal_paper(per_model, sort_key=lambda k: k):
    """Reference: key -> -last logprob per model (as float32), tokens ordered by (text_id, chunk_id)."""
    maps = [{(t, c): -np.float32(lp[-1]) for t, c, lp in rows} for rows in per_model]
    keys = sorted(maps[0], key=sort_key)
    return keys, np.array([[m[k] for k in keys] for m in maps], dtype=np.float32)


@pytest.mark.parametrize("seed, chunk, batch", [(0, 5, 3), (1, 64, 1000), (2, 7, 16)])
def test_paper_layout_int_text_ids(tmp_path, seed, chunk, batch):
    rng = np.random.default_rng(seed)
    keys = [(int(t), c) for t in rng.choice(10_000, size=6, replace=False) for c in range(int(rng.integers(1, 9)))]
    per_model = paper_rows(keys, rng, 3)
    files = write_paper(tmp_path / "in", per_model, ["m-a", "m-b", "m-c"])
    out = ingest([tmp_path / "in"], tmp_path / "s.zarr", chunk_tokens=chunk, batch_rows=batch)
    ds = open_store(out)
    order, expected = literal_paper(per_model)
    assert list(ds["model"].values) == ["m-a", "m-b", "m-c"]  # file stems, directory sorted
    np.testing.assert_array_equal(ds["nll"].values, expected)
    np.testing.assert_array_equal(ds["token"].values, np.arange(len(order)))
    np.testing.assert_array_equal(ds["doc"].values, [t for t, _ in order])
    np.testing.assert_array_equal(ds["piece"].values, [c for _, c in order])
    assert ds["piece"].dtype == np.int32 and ds["doc"].dtype == np.int64
    assert ds.attrs["source"] == "paper-parquet" and ds.attrs["model_sources"]["m-b"] == str(files[1])
    assert not list(tmp_path.glob(".bsig-ingest-*"))  # staging directory removed


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=6, unique=True),
    pieces=st.integers(1, 5),
    chunk=st.integers(1, 12),
    batch=st.integers(1, 20),
    seed=st.integers(0, 1000),
)
def test_paper_layout_string_text_ids(tmp_path_factory, docs, pieces, chunk, batch, seed):
    rng = np.random.default_rng(seed)
    keys = [(d, int(c)) for d in docs for c in rng.choice(50, size=pieces, replace=False)]
    per_model = paper_rows(keys, rng, 3)
    tmp = tmp_path_factory.mktemp("s")
    files = write_paper(tmp / "in", per_model, ["x", "y", "z"], text_type=pa.string(), row_group=5)
    ds = open_store(ingest(files, tmp / "s.zarr", chunk_tokens=chunk, batch_rows=batch))
    order, expected = literal_paper(per_model)
    np.testing.assert_array_equal(ds["nll"].values, expected)
    ranks = {d: i for i, d in enumerate(sorted(docs))}  # doc = rank of the text id among sorted ids
    np.testing.assert_array_equal(ds["doc"].values, [ranks[t] for t, _ in order])
    np.testing.assert_array_equal(ds["piece"].values, [c for _, c in order])


def test_paper_layout_digit_string_ids_are_integers_and_names_override(tmp_path):
    rng = np.random.default_rng(5)
    keys = [(t, c) for t in ("10", "9", "100") for c in range(3)]
    per_model = paper_rows(keys, rng, 3)
    files = write_paper(tmp_path, per_model, ["f1", "f2", "f3"], text_type=pa.string())
    ds = open_store(ingest(files, tmp_path / "s.zarr", model_names=["A", "B", "C"], dtype="float16"))
    order, expected = literal_paper(per_model, sort_key=lambda k: (int(k[0]), k[1]))  # numeric, not "10" < "9"
    assert list(ds["model"].values) == ["A", "B", "C"] and ds["nll"].dtype == np.float16
    np.testing.assert_array_equal(ds["nll"].values, expected.astype(np.float16))
    np.testing.assert_array_equal(ds["doc"].values, [int(t) for t, _ in order])


def test_paper_row_missing_or_extra_in_one_model(tmp_path):
    rng = np.random.default_rng(1)
    keys = [(t, c) for t in (1, 2, 3) for c in range(4)]
    per_model = paper_rows(keys, rng, 3)
    short = [r for r in per_model[2] if (r[0], r[1]) != (2, 3)]
    files = write_paper(tmp_path / "a", [per_model[0], per_model[1], short], ["m0", "m1", "m2"])
    with pytest.raises(BsigError, match=r"row \(text_id=2, chunk_id=3\) is in .*m0.parquet .* but missing from .*m2.parquet"):
        ingest(files, tmp_path / "s.zarr")
    extra = per_model[1] + [(7, 0, [-0.5])]
    files = write_paper(tmp_path / "b", [per_model[0], extra, per_model[2]], ["m0", "m1", "m2"])
    with pytest.raises(BsigError, match=r"row \(text_id=7, chunk_id=0\) is in .*m1.parquet \(model 'm1'\) but not in"):
        ingest(files, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()  # mismatches are found before the store is created


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows + [rows[0]], "duplicate (text_id, chunk_id) rows"),
        (lambda rows: [(t, c, [] if i == 2 else lp) for i, (t, c, lp) in enumerate(rows)], "empty or missing logprobs list"),
        (lambda rows: [(t, c, lp[:-1] + [float("nan")] if i == 1 else lp) for i, (t, c, lp) in enumerate(rows)],
         "1 last logprobs are NaN/inf"),
    ],
)
def test_paper_bad_rows(tmp_path, mutate, message):
    rng = np.random.default_rng(2)
    per_model = paper_rows([(t, c) for t in (1, 2) for c in range(3)], rng, 3)
    per_model[0] = mutate(per_model[0])
    files = write_paper(tmp_path, per_model, ["m0", "m1", "m2"])
    with pytest.raises(BsigError) as err:
        ingest(files, tmp_path / "s.zarr")
    assert message in str(err.value)


def test_paper_name_count_and_existing_output(tmp_path):
    per_model = paper_rows([(1, 0), (1, 1)], np.random.default_rng(0), 3)
    files = write_paper(tmp_path, per_model, ["a", "b", "c"])
    with pytest.raises(BsigError, match="got 2 model names for 3 files"):
        ingest(files, tmp_path / "s.zarr", model_names=["x", "y"])
    ingest(files, tmp_path / "s.zarr")
    with pytest.raises(BsigError, match="already exists; pass --overwrite"):
        ingest(files, tmp_path / "s.zarr")
    ingest(files, tmp_path / "s.zarr", overwrite=True, model_names=["p", "q", "r"])
    assert list(open_store(tmp_path / "s.zarr")["model"].values) == ["p", "q", "r"]


def test_detect_format_and_inputs(tmp_path):
    per_model = paper_rows([(1, 0)], np.random.default_rng(0), 3)
    files = write_paper(tmp_path / "p", per_model, ["a", "b", "c"])
    assert detect_format(files) == "paper"
    pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]}).to_parquet(tmp_path / "w.parquet")
    assert detect_format([tmp_path / "w.parquet"]) == "wide"
    with pytest.raises(BsigError, match="not per-model Parquet files"):
        detect_format([tmp_path / "w.parquet", files[0]])
    with pytest.raises(BsigError, match="does not exist"):
        expand_inputs([tmp_path / "nope.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BsigError, match="holds no"):
        expand_inputs([tmp_path / "empty"])


# ---------------------------------------------------------------------------------------- wide layout


def wide_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "token": np.arange(n, dtype=np.int64) * 3 + 11,
            "m1": rng.gamma(2.0, 1.0, n),
            "m2": rng.gamma(2.0, 1.0, n),
            "m3": rng.gamma(2.0, 1.0, n),
            "doc": np.arange(n) // 4,
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("n, chunk, batch", [(100, 32, 7), (1, 4, 1), (64, 16, 16)])
def test_wide_table(tmp_path, suffix, n, chunk, batch):
    frame = wide_frame(n)
    path = tmp_path / f"wide{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=9)
    ds = open_store(ingest([path], tmp_path / "s.zarr", chunk_tokens=chunk, batch_rows=batch))
    assert list(ds["model"].values) == ["m1", "m2", "m3"]
    np.testing.assert_array_equal(ds["nll"].values, frame[["m1", "m2", "m3"]].to_numpy().T.astype(np.float32))
    np.testing.assert_array_equal(ds["token"].values, frame["token"].to_numpy())
    np.testing.assert_array_equal(ds["doc"].values, frame["doc"].to_numpy())
    np.testing.assert_array_equal(ds["piece"].values, np.full(n, -1))  # absent column: -1


def test_wide_without_token_column_and_model_subset(tmp_path):
    frame = wide_frame(30).drop(columns=["token", "doc"])
    frame["m4"] = 1.5
    frame.to_csv(tmp_path / "w.csv", index=False)
    ds = open_store(ingest([tmp_path / "w.csv"], tmp_path / "s.zarr", model_names=["m4", "m1", "m3"], chunk_tokens=8))
    assert list(ds["model"].values) == ["m4", "m1", "m3"] and "doc" not in ds
    np.testing.assert_array_equal(ds["token"].values, np.arange(30))
    np.testing.assert_array_equal(ds["nll"].values, frame[["m4", "m1", "m3"]].to_numpy().T.astype(np.float32))


@pytest.mark.parametrize(
    "content, message",
    [
        ("m1,m2,m3\n1,2,3\n1,x,3\n", "NLL columns must be numbers"),
        ("m1,m2,m3\n1,2,3\n1,,3\n", "1 values cannot be NLLs (row 1 model 'm2': empty)"),
        ("m1,m2,m3\n1,2,3\n1,inf,3\n", "1 values cannot be NLLs (row 1 model 'm2': inf)"),
        ("token,m1,m2,m3\n1.5,1,2,3\n", "token ids: 1 are not integers (row 0: '1.5')"),
        ("m1,m2,m3\n", "has no rows"),
    ],
)
def test_wide_bad_values(tmp_path, content, message):
    (tmp_path / "w.csv").write_text(content)
    with pytest.raises(BsigError) as err:
        ingest([tmp_path / "w.csv"], tmp_path / "s.zarr", chunk_tokens=1)
    assert message in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.csv"]  # no partial store left behind


def test_wide_parquet_string_column_and_unknown_model(tmp_path):
    pd.DataFrame({"m1": [1.0], "m2": ["a"], "m3": [2.0]}).to_parquet(tmp_path / "w.parquet")
    with pytest.raises(BsigError, match="model column 'm2' has type (large_)?string, expected float"):
        ingest([tmp_path / "w.parquet"], tmp_path / "s.zarr")
    with pytest.raises(BsigError, match=r"has no columns \['m9'\]"):
        ingest([tmp_path / "w.parquet"], tmp_path / "s.zarr", model_names=["m1", "m9", "m3"])


def test_cli_ingest_then_validate(tmp_path, capsys):
    from bsig_array.cli.main import main

    rng = np.random.default_rng(4)
    per_model = paper_rows([(t, c) for t in (3, 1) for c in range(5)], rng, 3)
    write_paper(tmp_path / "in", per_model, ["a", "b", "c"])
    main(["ingest", str(tmp_path / "in"), "--out", str(tmp_path / "s.zarr"), "--chunk-tokens", "4",
          "--model-names", "x, y,z", "--dtype", "float16"])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 's.zarr'}: 3 models x 10 tokens (float16)"
    _, expected = literal_paper(per_model)
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["nll"].values, expected.astype(np.float16))
    main(["validate", str(tmp_path / "s.zarr"), "--deep"])
    out = capsys.readouterr().out
    assert "models     3: x, y, z" in out and "tokens     10 in 3 chunks of 4" in out and "no NaN/inf" in out
