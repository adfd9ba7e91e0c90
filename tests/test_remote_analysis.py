"""The analysis commands (overlap, stats, report, corpus) read and write object-storage URLs.

A small chain is built locally once (synth → screen → select → overlap → stats → report, and a
corpus), its inputs are uploaded to a real S3 server (``s3`` fixture: moto's server mode), and each
analysis command is run again with ``s3://`` inputs and outputs: its results equal the local ones,
and the test credentials appear in no object and in no output.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
from click.testing import CliRunner
from s3 import KEY, SECRET

from bsig_array.cli.main import cli
from bsig_array.io.corpus_store import feature_context
from bsig_array.io.location import as_location, set_storage_options
from bsig_array.io.overlap_file import load_overlap
from bsig_array.io.stats_tables import read_stats

#: every stage runs on this pool in about a second
POOL = ["--models", "8", "--benchmarks", "4", "--tokens", "2000", "--chunk-tokens", "1000", "--planted", "5"]


def bsig(*args: object) -> str:
    """Run a bsig command in this process; it must succeed; its output (stdout and stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and KEY not in result.output
    return result.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory, s3):
    """The local chain and its inputs uploaded to a fresh bucket; yields (local root, bucket URL)."""
    root = tmp_path_factory.mktemp("remote-analysis")
    pool = root / "pool"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSIG_STORAGE_OPTIONS", s3.options_json)
        set_storage_options(None)
        bsig("synth", pool, *POOL)
        bsig("screen", "--perplexity", pool / "perplexity.zarr", "--performance", pool / "performance.csv",
             "--out", root / "screen.zarr", "--alpha", 0.05, "--workers", 1)
        bsig("select", "--screen", root / "screen.zarr", "--performance", pool / "performance.csv",
             "--out", root / "signatures.zarr", "--no-loocv", "--workers", 1)
        overlap_args = ["--signatures", "signatures.zarr", "--perplexity", "pool/perplexity.zarr",
                        "--performance", "pool/performance.csv", "--metadata", "pool/metadata.csv"]
        local = [str(root / a) if a.endswith((".zarr", ".csv")) else a for a in overlap_args]
        bsig("overlap", *local, "--out", root / "overlap.nc")
        bsig("stats", "--overlap", root / "overlap.nc", "--out", root / "stats", "--permutations", 5)
        docs = root / "docs.jsonl"
        docs.write_text("".join(json.dumps({"text": f"doc{i} " + "word " * (30 + i)}) + "\n" for i in range(20)))
        bsig("corpus", docs, "--out", root / "corpus.zarr", "--sample-rate", 0.5)
        url = f"s3://{s3.bucket()}"
        for name in ("pool/perplexity.zarr", "pool/performance.csv", "pool/metadata.csv", "signatures.zarr",
                     "screen.zarr", "docs.jsonl"):
            s3.upload(root / name, f"{url}/in/{name}")
        yield root, url, overlap_args
    set_storage_options(None)


def assert_no_secret(s3, url: str) -> None:
    """The test credentials are in no object of the bucket."""
    fs = s3.fs()
    for key in fs.find(url.removeprefix("s3://")):
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY.encode() not in data, key


@pytest.fixture
def remote(chain, s3_options):
    """``chain`` with the server's storage options set in this process."""
    return chain


def test_overlap_reads_and_writes_urls(remote, s3):
    root, url, overlap_args = remote
    args = [f"{url}/in/{a}" if a.endswith((".zarr", ".csv")) else a for a in overlap_args]
    bsig("overlap", *args, "--out", f"{url}/out/overlap.nc")
    bsig("overlap", *args, "--out", f"{url}/out/overlap.zarr")
    local = load_overlap(root / "overlap.nc")
    for name in ("overlap.nc", "overlap.zarr"):
        got = load_overlap(f"{url}/out/{name}")
        for level in ("signature", "signature_p", "performance", "performance_p"):
            np.testing.assert_array_equal(got[level].values, local[level].values, err_msg=f"{name} {level}")
        assert [str(b) for b in got["benchmark_a"].values] == [str(b) for b in local["benchmark_a"].values]
    # a second run refuses to replace it without --overwrite, in one line
    result = CliRunner().invoke(cli, ["overlap", *args, "--out", f"{url}/out/overlap.nc"])
    assert result.exit_code != 0 and "already exists" in str(result.exception or result.output)
    # plain xarray opens the remote store cleanly too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(f"{url}/out/overlap.zarr", storage_options=s3.options)
        np.testing.assert_array_equal(ds["signature"].values, local["signature"].values)
    assert_no_secret(s3, url)


def test_stats_and_report_on_urls(remote, s3):
    root, url, overlap_args = remote
    args = [f"{url}/in/{a}" if a.endswith((".zarr", ".csv")) else a for a in overlap_args]
    if not as_location(f"{url}/out/overlap.nc").exists():
        bsig("overlap", *args, "--out", f"{url}/out/overlap.nc")
    bsig("stats", "--overlap", f"{url}/out/overlap.nc", "--out", f"{url}/out/stats", "--permutations", 5)
    fs = s3.fs()
    bucket = url.removeprefix("s3://")
    local_names = sorted(p.name for p in (root / "stats").iterdir())
    assert sorted(Path(k).name for k in fs.ls(f"{bucket}/out/stats")) == local_names
    for name in local_names:
        if name.endswith(".csv"):
            assert fs.cat_file(f"{bucket}/out/stats/{name}") == (root / "stats" / name).read_bytes(), name
    tables = read_stats(f"{url}/out/stats")
    for level, frames in read_stats(root / "stats").items():
        for key, frame in frames.items():
            pd.testing.assert_frame_equal(tables[level][key], frame)

    out = bsig("report", "--overlap", f"{url}/out/overlap.nc", "--stats", f"{url}/out/stats",
               "--screen", f"{url}/in/screen.zarr", "--signatures", f"{url}/in/signatures.zarr",
               "--out", f"{url}/out/report")
    assert f"{url}/out/report/report.html" in out
    page = fs.cat_file(f"{bucket}/out/report/report.html").decode()
    figures = sorted(Path(k).name for k in fs.ls(f"{bucket}/out/report/figures"))
    assert "heatmap_signature.png" in figures and "coefficients.png" in figures
    for name in figures:
        assert fs.cat_file(f"{bucket}/out/report/figures/{name}").startswith(b"\x89PNG")
        assert f"figures/{name}" in page
    assert fs.exists(f"{bucket}/out/report/provenance.json")
    assert not [k for k in fs.find(bucket) if "/.bsig-" in k or ".tmp-" in k]  # no staging debris
    assert_no_secret(s3, url)


def test_corpus_to_and_from_urls(remote, s3):
    root, url, _ = remote
    bsig("corpus", f"{url}/in/docs.jsonl", "--out", f"{url}/out/corpus.zarr", "--sample-rate", 0.5)
    ids = np.arange(-1, 40, 3)
    assert feature_context(f"{url}/out/corpus.zarr", ids) == feature_context(root / "corpus.zarr", ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        remote_ds = xr.open_zarr(f"{url}/out/corpus.zarr", storage_options=s3.options).load()
        local_ds = xr.open_zarr(root / "corpus.zarr").load()
    xr.testing.assert_equal(remote_ds.drop_attrs(), local_ds.drop_attrs())
    inputs = remote_ds.attrs["inputs"]
    assert inputs == [f"{url}/in/docs.jsonl"]
    assert_no_secret(s3, url)


def test_corpus_reads_gzip_and_parquet_urls(remote, s3, tmp_path):
    root, url, _ = remote
    lines = (root / "docs.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress("".join(lines[:10]).encode()))
    pq.write_table(pa.table({"text": [json.loads(line)["text"] for line in lines[10:]]}), tmp_path / "b.parquet")
    for name in ("a.jsonl.gz", "b.parquet"):
        s3.upload(tmp_path / name, f"{url}/in/{name}")
    bsig("corpus", tmp_path / "a.jsonl.gz", tmp_path / "b.parquet", "--out", tmp_path / "local.zarr", "--sample-rate", 0.5)
    bsig("corpus", f"{url}/in/a.jsonl.gz", f"{url}/in/b.parquet", "--out", f"{url}/out/mixed.zarr", "--sample-rate", 0.5)
    ids = np.arange(0, 30)
    assert feature_context(f"{url}/out/mixed.zarr", ids) == feature_context(tmp_path / "local.zarr", ids)


def test_missing_remote_inputs_are_one_line(remote):
    _, url, _ = remote
    for args, words in (
        (["stats", "--overlap", f"{url}/in/nothing.nc", "--out", f"{url}/out/s2"], "does not exist"),
        (["report", "--stats", f"{url}/in/no-stats", "--out", f"{url}/out/r2"], "does not exist"),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code != 0
        message = str(result.exception) if result.exception else result.output
        assert words in message and "Traceback" not in result.output, message
