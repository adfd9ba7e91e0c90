"""Provenance: every output records what it was made from; later stages refuse another input.

Real pools from ``bsig synth``, the real ``bsig`` entry point in-process, real Zarr/NetCDF/Parquet
files.  Fingerprints are checked for what they must see (another pool, another value) and what they
must not (file format, row/column order, chunking).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from bsig_array.cli.main import main
from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.io.provenance import (
    PROVENANCE_ATTR,
    PROVENANCE_FILE,
    check_consistent,
    make_record,
    performance_fingerprint,
    read_record,
    record_attrs,
    store_fingerprint,
)
from bsig_array.io.scores import load_performance, write_performance
from bsig_array.pipelines.synth import synthesize

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

SIZES = dict(models=8, benchmarks=4, tokens=12_000, chunk_tokens=3_000, questions=False)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def ok(capsys, *args) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return err


def refused(capsys, *args) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Two pools (seeds 1, 2) and the chain screen -> select -> overlap -> stats on the first."""
    root = tmp_path_factory.mktemp("prov")
    synthesize(root / "a", seed=1, **SIZES)
    synthesize(root / "b", seed=2, **SIZES)
    paths = {
        "a": root / "a", "b": root / "b", "store_a": root / "a" / "perplexity.zarr", "store_b": root / "b" / "perplexity.zarr",
        "perf_a": root / "a" / "performance.csv", "perf_b": root / "b" / "performance.csv",
        "screen": root / "s.zarr", "sig": root / "g.zarr", "overlap": root / "o.nc", "stats": root / "stats",
        "screen_b": root / "s_b.zarr",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSIG_PROGRESS", "0")
        for args in (
            ["screen", "--perplexity", paths["store_a"], "--performance", paths["perf_a"], "--out", paths["screen"]],
            ["screen", "--perplexity", paths["store_b"], "--performance", paths["perf_b"], "--out", paths["screen_b"]],
            ["select", "--screen", paths["screen"], "--performance", paths["perf_a"], "--out", paths["sig"], "--no-loocv"],
            ["overlap", "--signatures", paths["sig"], "--perplexity", paths["store_a"], "--performance", paths["perf_a"],
             "--out", paths["overlap"]],
            ["stats", "--overlap", paths["overlap"], "--out", paths["stats"], "--bootstrap", "100"],
        ):
            with pytest.raises(SystemExit) as exc:
                main([str(x) for x in args])
                raise SystemExit(0)
            assert exc.value.code == 0, args
    return paths


# -- fingerprints --------------------------------------------------------------------------------------------


def test_performance_fingerprint_is_of_the_matrix_not_the_file(tmp_path, chain):
    score = load_performance(chain["perf_a"])
    reference = performance_fingerprint(score)
    table = pd.read_csv(chain["perf_a"])
    table.sample(frac=1.0, random_state=0)[["model", *reversed(table.columns[1:].tolist())]].to_parquet(
        tmp_path / "y.parquet", index=False
    )  # rows shuffled, columns reversed
    write_performance(score, tmp_path / "y.nc")
    write_performance(score, tmp_path / "y.zarr")
    for path in ("y.parquet", "y.nc", "y.zarr"):
        assert performance_fingerprint(load_performance(tmp_path / path)) == reference, path
    changed = score.copy(data=score.values.copy())
    changed[0, 0] = np.nextafter(changed.values[0, 0], 2.0)  # one ulp
    assert performance_fingerprint(changed) != reference
    renamed = score.assign_coords(model=["x" + str(m) for m in score["model"].values])
    assert performance_fingerprint(renamed) != reference
    assert performance_fingerprint(load_performance(chain["perf_b"])) != reference


def test_store_fingerprint_sees_another_pool_but_not_the_chunking(tmp_path, chain):
    nll = open_store(chain["store_a"])["nll"]
    reference = store_fingerprint(nll)
    assert store_fingerprint(open_store(chain["store_b"])["nll"]) != reference
    assert store_fingerprint(nll.load()) == reference  # in memory: same content, same fingerprint
    values = np.asarray(nll.values)
    models = [str(m) for m in nll["model"].values]
    writer = create_store(tmp_path / "rechunked.zarr", models, values.shape[1], chunk_tokens=5_000, with_doc_piece=False)
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, values[:, sl])
    assert store_fingerprint(open_store(tmp_path / "rechunked.zarr")["nll"]) == reference
    last = values.copy()
    last[3, -1] += 0.5  # the last token of one model: inside what the fingerprint reads
    assert store_fingerprint(xr.DataArray(last, dims=nll.dims, coords=nll.load().coords)) != reference


# -- records ------------------------------------------------------------------------------------------------


def test_every_output_records_its_inputs(chain):
    screen = read_record(xr.open_zarr(chain["screen"]).attrs)
    assert screen["artifact"] == "screen" and screen["bsig_version"]
    assert screen["inputs"] == {"perplexity": str(chain["store_a"].absolute()), "performance": str(chain["perf_a"].absolute())}
    assert screen["options"]["alpha"] == 0.01 and screen["created"].endswith("Z")
    assert screen["fingerprints"] == {
        "perplexity": store_fingerprint(open_store(chain["store_a"])["nll"]),
        "performance": performance_fingerprint(load_performance(chain["perf_a"])),
    }
    sig = read_record(xr.open_zarr(chain["sig"]).attrs)
    assert sig["fingerprints"] == screen["fingerprints"]  # the store's is inherited from the screen
    assert sig["inputs"]["screen"] == str(chain["screen"].absolute()) and sig["options"]["loocv"] is False
    overlap = read_record(xr.load_dataset(chain["overlap"]).attrs)  # NetCDF keeps it too
    assert overlap["fingerprints"] == screen["fingerprints"]
    stats = json.loads((chain["stats"] / PROVENANCE_FILE).read_text())
    assert stats["artifact"] == "stats" and stats["fingerprints"] == screen["fingerprints"]
    assert stats["inputs"]["overlap"] == str(chain["overlap"].absolute())


def test_secrets_in_urls_are_never_recorded():
    record = make_record(
        "screen",
        inputs={"perplexity": "s3://alice:hunter2@bucket.example:9000/p.zarr?X-Amz-Signature=abc#frag", "x": None},
        options={"scheduler": "tls://bob:pa55@10.0.0.1:8786/?token=s3cret", "nested": {"url": "https://k:v@h/p?q=1"}},
    )
    text = json.dumps(record)
    for secret in ("alice", "hunter2", "X-Amz", "abc", "frag", "bob", "pa55", "s3cret", "k:v", "q=1"):
        assert secret not in text, secret
    assert record["inputs"] == {"perplexity": "s3://bucket.example:9000/p.zarr"}
    assert record["options"]["scheduler"] == "tls://10.0.0.1:8786/"


def test_a_damaged_record_is_one_input_error():
    with pytest.raises(InputError, match="not valid JSON"):
        read_record({PROVENANCE_ATTR: "{not json"}, "screen S.zarr")
    assert read_record({}) is None


# -- refusals -----------------------------------------------------------------------------------------------


def test_select_refuses_another_performance_matrix(capsys, chain, tmp_path):
    line = refused(capsys, "select", "--screen", chain["screen"], "--performance", chain["perf_b"],
                   "--out", tmp_path / "g.zarr", "--no-loocv")
    assert str(chain["perf_b"]) in line and f"screen {chain['screen']}" in line and "--allow-mismatch" in line
    assert not (tmp_path / "g.zarr").exists()
    # the same matrix as Parquet is the same matrix
    load_performance(chain["perf_a"]).to_pandas().reset_index().to_parquet(tmp_path / "y.parquet", index=False)
    assert "warning" not in ok(capsys, "select", "--screen", chain["screen"], "--performance", tmp_path / "y.parquet",
                               "--out", tmp_path / "g.zarr", "--no-loocv")
    # an explicit flag uses it anyway, with one warning line
    err = ok(capsys, "select", "--screen", chain["screen"], "--performance", chain["perf_b"], "--out",
             tmp_path / "g2.zarr", "--no-loocv", "--allow-mismatch")
    assert err.splitlines() == [err.strip()] and err.startswith("bsig: warning: ") and "--allow-mismatch" in err


def test_overlap_refuses_another_store_or_matrix(capsys, chain, tmp_path):
    line = refused(capsys, "overlap", "--signatures", chain["sig"], "--perplexity", chain["store_b"],
                   "--performance", chain["perf_a"], "--out", tmp_path / "o.nc")
    assert "perplexity store" in line and str(chain["store_b"]) in line and f"signatures {chain['sig']}" in line
    line = refused(capsys, "overlap", "--signatures", chain["sig"], "--perplexity", chain["store_a"],
                   "--performance", chain["perf_b"], "--out", tmp_path / "o.nc")
    assert "performance matrix" in line and str(chain["perf_b"]) in line
    assert not (tmp_path / "o.nc").exists()
    err = ok(capsys, "overlap", "--signatures", chain["sig"], "--perplexity", chain["store_b"], "--performance",
             chain["perf_a"], "--out", tmp_path / "o.nc", "--allow-mismatch")
    assert err.startswith("bsig: warning: ") and len(err.splitlines()) == 1


def test_report_refuses_outputs_of_two_chains(capsys, chain, tmp_path):
    line = refused(capsys, "report", "--out", tmp_path / "r", "--overlap", chain["overlap"],
                   "--screen", chain["screen_b"], "--stats", chain["stats"])
    assert f"screen {chain['screen_b']}" in line and f"overlap {chain['overlap']}" in line
    assert not (tmp_path / "r").exists()
    ok(capsys, "report", "--out", tmp_path / "r", "--overlap", chain["overlap"], "--screen", chain["screen"],
       "--signatures", chain["sig"], "--stats", chain["stats"])
    record = json.loads((tmp_path / "r" / PROVENANCE_FILE).read_text())
    assert record["artifact"] == "report" and record["inputs"]["screen"] == str(chain["screen"].absolute())


def test_outputs_without_a_record_are_accepted_with_a_warning(capsys, chain, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(chain["screen"], old)
    group = zarr.open_group(old, mode="r+")
    del group.attrs[PROVENANCE_ATTR]
    zarr.consolidate_metadata(old)
    assert PROVENANCE_ATTR not in xr.open_zarr(old).attrs
    err = ok(capsys, "select", "--screen", old, "--performance", chain["perf_b"], "--out", tmp_path / "g.zarr",
             "--no-loocv")
    assert err.startswith("bsig: warning: ") and "no provenance record" in err and len(err.splitlines()) == 1


def test_check_consistent_names_both():
    a = make_record("screen", fingerprints={"performance": "1" * 32})
    b = make_record("overlap", fingerprints={"performance": "2" * 32})
    with pytest.raises(InputError, match="overlap O.nc and screen S.zarr were made from different performance"):
        check_consistent({"screen S.zarr": a, "overlap O.nc": b})
    with pytest.warns(UserWarning, match="anyway"):
        check_consistent({"screen S.zarr": a, "overlap O.nc": b}, allow_mismatch=True)
    check_consistent({"screen S.zarr": a, "again": json.loads(record_attrs(a)[PROVENANCE_ATTR])})


# -- the outputs that start a chain: synth, ingest, perplexity, performance ---------------------------------


def _store_record(path) -> dict:
    return read_record(dict(zarr.open_group(path, mode="r").attrs))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_synth_records_the_fingerprints_of_what_it_wrote(chain, tmp_path, dtype):
    if dtype == "float32":
        store, perf, seed, chunk = chain["store_a"], chain["perf_a"], 1, 3_000
    else:  # float16 rounding must be in the recorded fingerprint too
        synthesize(tmp_path / "p", models=4, benchmarks=2, tokens=9_000, chunk_tokens=2_000, seed=3, dtype=dtype,
                   questions=False)
        store, perf, seed, chunk = tmp_path / "p" / "perplexity.zarr", tmp_path / "p" / "performance.csv", 3, 2_000
    record = _store_record(store)
    assert record["artifact"] == "synth" and record["inputs"] == {}
    assert (record["options"]["seed"], record["options"]["dtype"], record["options"]["chunk_tokens"]) == (seed, dtype, chunk)
    assert record["fingerprints"] == {
        "perplexity": store_fingerprint(open_store(store)["nll"]),
        "performance": performance_fingerprint(load_performance(perf)),
    }
    assert record["fingerprints"]["perplexity"] != _store_record(chain["store_b"])["fingerprints"]["perplexity"]


def test_ingest_records_its_sources(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"token": np.arange(40), **{f"m{i}": rng.random(40) * 5 for i in range(3)}})
    frame.to_csv(tmp_path / "w.csv", index=False)
    ok(capsys, "ingest", tmp_path / "w.csv", "--out", tmp_path / "w.zarr", "--chunk-tokens", 16)
    record = _store_record(tmp_path / "w.zarr")
    assert record["artifact"] == "ingest" and record["inputs"] == {"nll": str(tmp_path / "w.csv")}
    assert record["options"]["format"] == "wide" and record["options"]["chunk_tokens"] == 16
    assert record["fingerprints"] == {"perplexity": store_fingerprint(open_store(tmp_path / "w.zarr")["nll"])}
    (tmp_path / "nll").mkdir()
    for name in ("a", "b", "c"):
        lp = [[-float(x)] for x in rng.random(30) * 5]
        table = pa.table({"text_id": pa.array(np.arange(30) // 3, pa.int64()), "chunk_id": pa.array(np.arange(30) % 3, pa.int64()),
                          "logprobs": pa.array(lp, pa.list_(pa.float32()))})
        pq.write_table(table, tmp_path / "nll" / f"{name}.parquet")
    ok(capsys, "ingest", tmp_path / "nll", "--out", tmp_path / "p.zarr")
    record = _store_record(tmp_path / "p.zarr")
    assert record["inputs"] == {f"nll:{n}": str(tmp_path / "nll" / f"{n}.parquet") for n in ("a", "b", "c")}
    assert record["options"]["format"] == "paper"
    assert record["fingerprints"]["perplexity"] == store_fingerprint(open_store(tmp_path / "p.zarr")["nll"])


def test_perplexity_records_each_model_row(tmp_path):
    from bsig_array.io.provenance import MODEL_PROVENANCE_ATTR
    from bsig_array.models.loading import build_tiny_gpt2
    from bsig_array.stages.corpus import build_corpus, stdlib_documents
    from bsig_array.stages.perplexity import extract_perplexity

    tiny = build_tiny_gpt2(tmp_path / "tiny", n_layer=1, n_embd=32)
    build_corpus([d for _, d in zip(range(3), stdlib_documents())], tmp_path / "c.zarr", sample_rate=0.005, seed=0,
                 context_pieces=8)
    store = tmp_path / "p.zarr"
    for name, batch in (("tiny", 8), ("again", 4)):
        extract_perplexity(tmp_path / "c.zarr", store, str(tiny), name=name, chunk_tokens=16, batch_size=batch, max_tokens=64)
    group = zarr.open_group(store, mode="r")
    records, chunk = json.loads(group.attrs[MODEL_PROVENANCE_ATTR]), group["nll"].chunks[1]
    assert sorted(records) == ["again", "tiny"]
    for name, batch in (("tiny", 8), ("again", 4)):
        record = records[name]
        assert record["artifact"] == "perplexity" and record["created"].endswith("Z")
        assert record["inputs"] == {"corpus": str(tmp_path / "c.zarr"), "model": str(tiny)}
        assert (record["options"]["name"], record["options"]["batch_size"], record["options"]["chunk_tokens"]) == (name, batch, chunk)
    assert PROVENANCE_ATTR not in group.attrs  # one record per row, none for the store


def test_performance_outputs_record_their_source(capsys, chain, tmp_path):
    want = performance_fingerprint(load_performance(chain["perf_a"]))
    ok(capsys, "performance", "convert", chain["perf_a"], tmp_path / "y.nc")
    ok(capsys, "performance", "convert", tmp_path / "y.nc", tmp_path / "y.zarr")
    ok(capsys, "performance", "import", chain["perf_a"], "--out", tmp_path / "i.nc")
    ok(capsys, "performance", "convert", tmp_path / "y.zarr", tmp_path / "y.csv")
    for path, artifact, inputs in (
        ("y.nc", "performance convert", {"source": str(chain["perf_a"])}),
        ("y.zarr", "performance convert", {"source": str(tmp_path / "y.nc")}),
        ("i.nc", "performance import", {"table": str(chain["perf_a"])}),
    ):
        zarr_kwargs = {"engine": "zarr", "consolidated": False} if path.endswith(".zarr") else {}
        with xr.open_dataset(tmp_path / path, **zarr_kwargs) as ds:
            record = read_record(ds.attrs)
        assert record["artifact"] == artifact and record["inputs"] == inputs, path
        assert record["fingerprints"] == {"performance": want}, path
    assert performance_fingerprint(load_performance(tmp_path / "i.nc")) == want
    assert PROVENANCE_ATTR not in (tmp_path / "y.csv").read_text()  # CSV holds only the numbers
