"""Screen and select on object storage: a real S3 server (moto's server mode, ``tests/s3.py``).

A tiny pool is made locally and, by ``bsig synth s3://…``, in a fresh bucket, and screened and selected from S3 to S3,
on the threaded scheduler (in-process CLI) and on a dask.distributed ``LocalCluster`` of two worker
processes (``bsig`` in a subprocess, ``--scheduler tcp://…``).  Results must equal the local run's
exactly.  The cluster's workers are started without any storage options in their environment and
count the chunks they decode from the object store themselves, so the test shows that the workers
read S3 directly with the options pickled inside each task's Location, and that the client ships
no NLL data.  The test credentials must appear in no object of the bucket and in no output.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from distributed.diagnostics.plugin import WorkerPlugin
from s3 import KEY, SECRET

from bsig_array.cli.main import main
from bsig_array.io.location import set_storage_options
from bsig_array.io.screen_output import open_screen
from bsig_array.io.signatures import load_signatures

M, B, TOKENS, CHUNK = 6, 4, 20_000, 4_000
STARTS = set(range(0, TOKENS, CHUNK))
BSIG = str(Path(sys.executable).parent / "bsig")


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    """``bsig ARGS`` in this process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _quiet_main(*args: object) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code, f"bsig {args[0]} failed"


@pytest.fixture(scope="module")
def pool(s3, tmp_path_factory):
    """The pool on disk and in a fresh bucket, with the local screen and signatures to compare with."""
    from bsig_array.pipelines.synth import synthesize

    root = tmp_path_factory.mktemp("remote")
    paths = synthesize(root / "pool", models=M, benchmarks=B, tokens=TOKENS, chunk_tokens=CHUNK, questions=False)
    bucket = s3.bucket()
    # The same pool written straight to the bucket by bsig synth (chunks and progress marks in place).
    _quiet_main("synth", f"s3://{bucket}/pool", "--models", M, "--benchmarks", B, "--tokens", TOKENS,
                "--chunk-tokens", CHUNK, "--no-questions", "--storage-options", s3.options_json)
    set_storage_options(None)
    _quiet_main("screen", "--perplexity", paths.perplexity, "--performance", paths.performance,
                "--out", root / "screen.zarr")
    _quiet_main("select", "--screen", root / "screen.zarr", "--performance", paths.performance,
                "--out", root / "sig.zarr")
    url = f"s3://{bucket}"
    return {
        "root": root, "bucket": bucket, "url": url, "local_screen": root / "screen.zarr",
        "local_sig": root / "sig.zarr", "perplexity": f"{url}/pool/perplexity.zarr",
        "performance": f"{url}/pool/performance.csv",
    }


def assert_same(local: xr.Dataset, remote: xr.Dataset) -> None:
    """Every variable and coordinate equal, exactly."""
    assert set(local.variables) == set(remote.variables)
    for name in local.variables:
        np.testing.assert_array_equal(local[name].values, remote[name].values, err_msg=str(name))


def assert_no_credentials(s3, bucket: str, *texts: str) -> None:
    """The test credentials are in no object of ``bucket`` and in none of ``texts``."""
    fs = s3.fs()
    for key in fs.find(bucket):
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY.encode() not in data, key
    for text in texts:
        assert SECRET not in text and KEY not in text


def test_screen_and_select_from_s3_to_s3_match_the_local_run(pool, s3, s3_options, capsys):
    url = pool["url"]
    code, out, err = run_cli(capsys, "screen", "--perplexity", pool["perplexity"], "--performance",
                             pool["performance"], "--out", f"{url}/screen.zarr", "--profile", f"{url}/profile.json")
    assert code == 0, err
    code, out2, err2 = run_cli(capsys, "select", "--screen", f"{url}/screen.zarr", "--performance",
                               pool["performance"], "--out", f"{url}/sig.zarr")
    assert code == 0, err2
    assert f"wrote {url}/screen.zarr" in out and f"wrote {url}/sig.zarr" in out2

    assert_same(open_screen(pool["local_screen"]).load(), open_screen(f"{url}/screen.zarr").load())
    local, remote = load_signatures(pool["local_sig"]), load_signatures(f"{url}/sig.zarr")
    assert_same(local, remote)
    assert local.attrs["scheduler"] == remote.attrs["scheduler"] == "threads"
    with warnings.catch_warnings():  # plain xarray opens the outputs without a warning
        warnings.simplefilter("error")
        plain = xr.open_zarr(f"{url}/screen.zarr", storage_options=s3.options)
        assert plain["candidate_token"].shape == open_screen(pool["local_screen"])["candidate_token"].shape
    # the spill of a remote --out is local scratch; nothing but the outputs reached the bucket
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.fs().ls(pool["bucket"])) == [
        "pool", "profile.json", "screen.zarr", "sig.zarr"]
    assert_no_credentials(s3, pool["bucket"], out, err, out2, err2)


@pytest.mark.parametrize("suffix", [".nc", ".parquet", ".zarr"])
def test_performance_matrix_is_read_from_a_url(pool, s3, s3_options, suffix):
    from bsig_array.io.scores import load_performance, write_performance

    local = load_performance(pool["root"] / "pool" / "performance.csv")
    if suffix == ".parquet":
        path = pool["root"] / "performance.parquet"
        local.to_pandas().reset_index().to_parquet(path)
        s3.upload(path, f"{pool['url']}/perf/performance.parquet")
    else:  # written straight to the bucket by bsig's writer (staged, then published)
        write_performance(local, f"{pool['url']}/perf/performance{suffix}")
    remote = load_performance(f"{pool['url']}/perf/performance{suffix}")
    np.testing.assert_array_equal(local.values, remote.values)
    assert list(local["benchmark"].values) == list(remote["benchmark"].values)


def test_performance_commands_take_urls(pool, s3_options, capsys):
    """import (table and metadata from S3), show and convert, all on URLs; --metadata of screen too."""
    from bsig_array.io.scores import load_performance

    url = pool["url"]
    meta = f"{url}/pool/metadata.csv"
    code, out, err = run_cli(capsys, "performance", "import", pool["performance"], "--metadata", meta,
                             "--out", f"{url}/imported/p.nc")
    assert code == 0 and f"wrote {url}/imported/p.nc" in out, err
    code, out, err = run_cli(capsys, "performance", "convert", f"{url}/imported/p.nc", f"{url}/imported/p.zarr",
                             "--metadata", meta)
    assert code == 0, err
    code, out, err = run_cli(capsys, "performance", "show", f"{url}/imported/p.zarr")
    assert code == 0 and "scores are complete and every benchmark varies" in out, err
    local = load_performance(pool["root"] / "pool" / "performance.csv", metadata=pool["root"] / "pool" / "metadata.csv")
    remote = load_performance(f"{url}/imported/p.zarr")
    np.testing.assert_array_equal(local.values, remote.values)
    assert list(local["category"].values) == list(remote["category"].values)
    code, out, err = run_cli(capsys, "performance", "import", f"{url}/pool/missing.csv", "--out", f"{url}/x.nc")
    assert code == 2 and err.splitlines() == [err.strip()] and f"{url}/pool/missing.csv" in err


class CountRemoteChunks(WorkerPlugin):
    """Records, on each worker, the token start of every chunk the worker decoded itself from an
    object store with the fast whole-chunk decoder (bsig's decoder wrapped, the store is real)."""

    def setup(self, worker) -> None:
        from bsig_array.io.perplexity_store import reader

        original = reader.decode_whole_chunk
        worker.bsig_remote_chunks = []
        worker.bsig_storage_env = os.environ.get("BSIG_STORAGE_OPTIONS")

        def counted(array, region):
            block = original(array, region)
            if block is not None and reader._is_object_store(array.store):
                worker.bsig_remote_chunks.append(region[1].start)
            return block

        reader.decode_whole_chunk = counted


def _worker_state(dask_worker) -> tuple[list[int], str | None]:
    return list(dask_worker.bsig_remote_chunks), dask_worker.bsig_storage_env


def test_tasks_hold_only_the_location(pool, s3_options):
    """A screen task carries the store's Location (URL + options), never NLL values."""
    from bsig_array.io.perplexity_store.chunks import StoreSlice, chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store

    nll = open_store(pool["perplexity"])["nll"]
    sources = chunk_sources(nll, store=pool["perplexity"])
    assert [s.start for s in sources] == sorted(STARTS)
    for src in sources:
        assert isinstance(src.nll, StoreSlice) and src.nll.path.is_remote
        assert str(src.nll.path) == pool["perplexity"] and SECRET not in repr(src.nll.path)
        # far below the chunk's decoded bytes: no values travel with the task
        assert len(pickle.dumps(src)) < M * CHUNK * nll.dtype.itemsize / 2


def test_screen_and_select_on_a_local_cluster_read_s3_in_the_workers(pool, s3, monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.delenv("BSIG_STORAGE_OPTIONS", raising=False)  # the workers get no options from the environment
    set_storage_options(None)
    url = pool["url"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        client.register_plugin(CountRemoteChunks(), name="count-remote-chunks")
        screen = subprocess.run(
            [BSIG, "screen", "--perplexity", pool["perplexity"], "--performance", pool["performance"],
             "--out", f"{url}/cluster/screen.zarr", "--scheduler", cluster.scheduler_address,
             "--performance-report", f"{url}/cluster/screen-report.html"],
            env=s3.env(), capture_output=True, text=True, timeout=300,
        )
        assert screen.returncode == 0, screen.stderr
        state = client.run(_worker_state)
        select = subprocess.run(
            [BSIG, "select", "--screen", f"{url}/cluster/screen.zarr", "--performance", pool["performance"],
             "--out", f"{url}/cluster/sig.zarr", "--scheduler", cluster.scheduler_address],
            env=s3.env(), capture_output=True, text=True, timeout=300,
        )
        assert select.returncode == 0, select.stderr
        dashboard = cluster.dashboard_link
    for run in (screen, select):
        lines = [line for line in run.stderr.splitlines() if line.startswith("bsig: dask dashboard at ")]
        assert lines == [f"bsig: dask dashboard at {dashboard}"], run.stderr
    # every chunk was decoded from S3 by a worker, whose environment held no storage options
    assert {start for chunks, _ in state.values() for start in chunks} == STARTS
    assert all(env is None for _, env in state.values())

    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", s3.options_json)
    set_storage_options(None)
    try:
        got = open_screen(f"{url}/cluster/screen.zarr").load()
        assert_same(open_screen(pool["local_screen"]).load(), got)
        assert cluster.scheduler_address.split("://")[1] in got.attrs["scheduler"]
        assert_same(load_signatures(pool["local_sig"]), load_signatures(f"{url}/cluster/sig.zarr"))
        assert b"<html" in s3.fs().cat_file(f"{pool['bucket']}/cluster/screen-report.html")[:2000].lower()
    finally:
        set_storage_options(None)
    assert_no_credentials(s3, pool["bucket"], screen.stdout, screen.stderr, select.stdout, select.stderr)


def test_missing_bucket_is_one_line_before_any_work(pool, s3, s3_options, capsys, tmp_path, monkeypatch):
    import tempfile

    # A private TMPDIR: other test processes (xdist) create their own scratch in the shared one.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = set(s3.fs().find(pool["bucket"]))
    scratch = set(os.listdir(tmp_path))
    code, out, err = run_cli(capsys, "screen", "--perplexity", pool["perplexity"], "--performance",
                             pool["performance"], "--out", "s3://missing-bucket-bsig/x.zarr")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [err.strip()] and err.startswith("bsig: error: ")
    assert "s3://missing-bucket-bsig/x.zarr" in err and "'missing-bucket-bsig' does not exist" in err
    assert set(s3.fs().find(pool["bucket"])) == before
    assert not {n for n in set(os.listdir(tmp_path)) - scratch if n.startswith(".bsig-")}
    assert SECRET not in out + err


def test_a_store_without_its_root_zarr_json_is_named_incomplete(pool, s3, s3_options, capsys):
    fs = s3.fs()
    broken = f"{pool['bucket']}/broken/perplexity.zarr"
    fs.cp(f"{pool['bucket']}/pool/perplexity.zarr", broken, recursive=True)
    fs.rm(f"{broken}/zarr.json")
    code, out, err = run_cli(capsys, "screen", "--perplexity", f"s3://{broken}", "--performance",
                             pool["performance"], "--out", f"{pool['url']}/never.zarr")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [err.strip()]
    assert f"s3://{broken}" in err and "no root zarr.json" in err and "incomplete" in err
    assert not fs.exists(f"{pool['bucket']}/never.zarr")
    fs.rm(f"{pool['bucket']}/broken", recursive=True)


def test_dask_scheduler_address_is_the_default_scheduler():
    from bsig_array.runtime.defaults import Defaults

    assert Defaults.from_env({}).scheduler == "threads"
    assert Defaults.from_env({"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786"}).scheduler == "tcp://10.0.0.1:8786"
    both = {"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786", "BSIG_SCHEDULER": "processes"}
    assert Defaults.from_env(both).scheduler == "processes"  # bsig's own variable wins
