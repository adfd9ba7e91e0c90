"""Locations (paths and URLs), storage options, and atomic outputs on a real S3 server (moto)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from s3 import KEY, SECRET

from bsig_array.errors import InputError, OptionError
from bsig_array.io.location import (
    as_location,
    is_url,
    parse_storage_options,
    redact_url,
    set_storage_options,
    storage_options,
)


def test_redact_and_is_url():
    assert is_url("s3://b/x.zarr") and is_url("file:///tmp/x") and not is_url("/tmp/x") and not is_url("a:b")
    assert redact_url("s3://user:pw@host:9000/b/x.zarr?X-Amz-Signature=s#f") == "s3://host:9000/b/x.zarr"
    assert redact_url("/local/path") == "/local/path"


def test_storage_options_flat_per_protocol_file_and_errors(tmp_path, monkeypatch):
    try:
        set_storage_options('{"endpoint_url": "http://h", "s3": {"key": "k"}}')
        assert storage_options("s3") == {"key": "k"}  # the per-protocol entry wins
        assert storage_options("gcs") == {"endpoint_url": "http://h"}
        (tmp_path / "opts.json").write_text('{"anon": true}')
        set_storage_options(f"@{tmp_path / 'opts.json'}")
        assert storage_options("s3") == {"anon": True}
        monkeypatch.setenv("BSIG_STORAGE_OPTIONS", '{"anon": false}')
        set_storage_options(None)
        assert storage_options("s3") == {"anon": False}
    finally:
        set_storage_options(None)
    with pytest.raises(OptionError, match="not valid JSON") as err:
        parse_storage_options('{"secret": "' + SECRET + '"')
    assert SECRET not in str(err.value)  # never echoed: it may hold credentials
    with pytest.raises(OptionError, match="must be a JSON object"):
        parse_storage_options("[1, 2]")
    with pytest.raises(OptionError, match="cannot read"):
        parse_storage_options(f"@{tmp_path / 'missing.json'}")


def test_location_on_memory_and_local(tmp_path):
    loc = as_location("memory://bsig-test-loc/dir")
    assert loc.is_remote and loc.name == "dir" and str(loc.child("a", "b.txt")) == "memory://bsig-test-loc/dir/a/b.txt"
    with loc.child("a", "b.txt").open("wb") as fh:
        fh.write(b"hello")
    assert loc.is_dir() and loc.names() == {"a"} and list(loc.walk_files()) == ["a/b.txt"]
    assert loc.child("a", "b.txt").read_text() == "hello"
    loc.remove()
    assert not loc.exists()
    local = as_location(tmp_path / "x")
    assert local.is_local and local.path == tmp_path / "x" and as_location(f"file://{tmp_path}/x").path == tmp_path / "x"


def test_location_hides_credentials_and_pickles(s3, s3_options):
    loc = as_location(f"s3://{s3.bucket()}/pool.zarr")
    assert loc.options["secret"] == SECRET
    for text in (str(loc), repr(loc), loc.key()):
        assert SECRET not in text and KEY not in text
    again = pickle.loads(pickle.dumps(loc))  # a task on a dask.distributed worker reaches the store too
    assert again.options == loc.options and not again.exists()


def test_check_new_output_on_s3(s3, s3_options):
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.screen_output import SCREEN_OUTPUT

    with pytest.raises(InputError, match="bucket 'no-such-bucket' does not exist"):
        check_new_output("s3://no-such-bucket/screen.zarr", overwrite=False, kind=SCREEN_OUTPUT)
    bucket = s3.bucket()
    with pytest.raises(InputError, match="lies inside the input"):
        check_new_output(f"s3://{bucket}/pool.zarr/out.zarr", overwrite=True, kind=SCREEN_OUTPUT,
                         inputs=[f"s3://{bucket}/pool.zarr"])
    with as_location(f"s3://{bucket}/other/file.txt").open("wb") as fh:
        fh.write(b"x")
    with pytest.raises(InputError, match="is a directory, but a screen output|is a directory, not a screen output"):
        check_new_output(f"s3://{bucket}/other", overwrite=True, kind=SCREEN_OUTPUT)


def test_unreachable_endpoint_is_one_line(monkeypatch):
    from s3 import free_port

    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.screen_output import SCREEN_OUTPUT

    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", f'{{"endpoint_url": "http://127.0.0.1:{free_port()}", '
                                               f'"key": "k", "secret": "{SECRET}", "config_kwargs": {{"retries": {{"max_attempts": 1}}}}}}')
    set_storage_options(None)
    try:
        with pytest.raises(InputError, match="refused or cannot be reached") as err:
            check_new_output("s3://bucket/screen.zarr", overwrite=False, kind=SCREEN_OUTPUT)
        assert SECRET not in str(err.value)
    finally:
        set_storage_options(None)


PUBLISH = textwrap.dedent("""
    import sys, numpy as np, xarray as xr
    from bsig_array.io.atomic import atomic_output
    from bsig_array.io.zarr_format import write_zarr
    ds = xr.Dataset({"candidate_token": (("c", "t"), np.arange(12 * int(sys.argv[2])).reshape(12, -1))},
                    coords={"c": np.arange(12)})
    with atomic_output(sys.argv[1]) as tmp:
        write_zarr(ds, tmp, encoding={"candidate_token": {"chunks": (3, 2)}}, all_chunks=True)
""")


def test_publish_commits_with_root_metadata_last(s3, s3_options, tmp_path):
    """A writer killed at any point of an upload leaves either the old store or the new one (or, when
    it replaced one, a prefix that readers refuse as incomplete and the next writer replaces)."""
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.screen_output import SCREEN_OUTPUT
    from bsig_array.io.zarr_format import open_artifact

    url = f"s3://{s3.bucket()}/screen.zarr"
    count = tmp_path / "count"
    env = s3.env(BSIG_FAULT_COUNT=str(count))
    subprocess.run([sys.executable, "-c", PUBLISH, url, "2"], env=env, check=True)
    points = len(count.read_text().split())
    assert points >= 3
    for at in range(1, points + 1):
        run = subprocess.run([sys.executable, "-c", PUBLISH, url, "3"], env=s3.env(BSIG_FAULT_KILL_AT=str(at)),
                             capture_output=True, text=True)
        assert run.returncode == -9, run.stderr
        try:
            ds = open_artifact(url, what="screen output", command="bsig screen", load=True)
        except InputError as exc:  # uncommitted: named as incomplete, and replaced without --overwrite
            assert "has no root zarr.json" in str(exc)
            with pytest.warns(Warning, match="incomplete"):
                check_new_output(url, overwrite=False, kind=SCREEN_OUTPUT)
        else:  # the old store (2 columns) whole, or the new one (3 columns) whole
            assert ds.sizes["t"] in (2, 3)
            np.testing.assert_array_equal(ds["candidate_token"].values, np.arange(12 * ds.sizes["t"]).reshape(12, -1))
    subprocess.run([sys.executable, "-c", PUBLISH, url, "3"], env=s3.env(), check=True)
    fs = s3.fs()
    for key in fs.find(url.removeprefix("s3://")):
        assert SECRET.encode() not in fs.cat_file(key)


@pytest.fixture
def pool_on_s3(tmp_path, s3, s3_options):
    from bsig_array.pipelines.synth import synthesize

    paths = synthesize(tmp_path / "pool", models=5, benchmarks=3, tokens=3000, chunk_tokens=1000, questions=False)
    url = f"s3://{s3.bucket()}/perplexity.zarr"
    s3.upload(paths.perplexity, url)
    return paths.perplexity, url


def test_fast_decoder_reads_s3_in_concurrent_ranges(pool_on_s3, monkeypatch):
    import zarr

    from bsig_array.io.perplexity_store import reader
    from bsig_array.io.zarr_format import open_group

    local, url = pool_on_s3
    monkeypatch.setattr(reader, "RANGE_BYTES", 1000)  # several ranged GETs per chunk
    remote_nll = open_group(url)["nll"]
    local_nll = zarr.open_group(local, mode="r")["nll"]
    assert isinstance(remote_nll, zarr.Array)
    for start in (0, 1000, 2000):
        region = (slice(0, 5), slice(start, start + 1000))
        fast = reader.decode_whole_chunk(remote_nll, region)
        assert fast is not None  # the fast path ran on the object store
        np.testing.assert_array_equal(fast, np.asarray(local_nll[region]))
    ds_remote, ds_local = reader.open_store(url), reader.open_store(local)
    np.testing.assert_array_equal(ds_remote["nll"].values, ds_local["nll"].values)


def test_damaged_or_missing_chunk_on_s3_is_named(pool_on_s3, s3):
    from bsig_array.io.perplexity_store.reader import open_store

    _, url = pool_on_s3
    fs = s3.fs()
    key = url.removeprefix("s3://") + "/nll/c/0/1"
    fs.pipe_file(key, fs.cat_file(key)[:-7])
    with pytest.raises(InputError, match=r"chunk file nll/c/0/1 \(tokens 1000\.\.1999\) is unreadable"):
        open_store(url)["nll"].load()
    fs.rm(key)
    with pytest.raises(InputError, match=r"chunk file nll/c/0/1 \(tokens 1000\.\.1999\) is missing"):
        open_store(url)["nll"].load()


def test_cli_storage_option_errors_are_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "screen", "--storage-options", '{"secret": "' + SECRET,
         "--perplexity", "s3://b/p.zarr", "--performance", "s3://b/y.csv", "--out", str(tmp_path / "s.zarr")],
        capture_output=True, text=True, env={**os.environ, "BSIG_STORAGE_OPTIONS": ""},
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.startswith("bsig: error: --storage-options is not valid JSON") and SECRET not in run.stderr


def test_unreachable_endpoint_on_read_is_one_line(monkeypatch):
    from s3 import free_port

    from bsig_array.io.perplexity_store.reader import open_store

    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", f'{{"endpoint_url": "http://127.0.0.1:{free_port()}", '
                                               '"config_kwargs": {"retries": {"max_attempts": 1}}}')
    set_storage_options(None)
    try:
        with pytest.raises(InputError, match="refused or cannot be reached"):
            open_store("s3://bucket/pool.zarr")
    finally:
        set_storage_options(None)


def test_refusal_messages_mask_every_storage_option():
    from bsig_array.io.location import _one_line

    options = {"key": KEY, "secret": SECRET, "client_kwargs": {"region_name": "eu"}, "config": [SECRET]}
    line = _one_line(ValueError(f"signature for {KEY}\n with {SECRET} does not match"), options)
    assert line == "signature for *** with *** does not match"


def test_demo_to_s3_publishes_the_whole_chain(s3, tmp_path):
    """``bsig demo --out s3://…``: every stage writes through local staging and publishes."""
    import json

    url = f"s3://{s3.bucket()}/demo"
    args = [sys.executable, "-m", "bsig_array.cli.main", "demo", "--out", url, "--models", "8",
            "--benchmarks", "6", "--tokens", "20000", "--semantic-bootstrap", "2"]
    run = subprocess.run(args, capture_output=True, text=True, env=s3.env())
    assert run.returncode == 0, run.stderr
    assert f"report: {url}/report/report.html" in run.stdout and SECRET not in run.stdout + run.stderr
    fs = s3.fs()
    root = url.removeprefix("s3://")
    assert {k.rsplit("/", 1)[-1] for k in fs.ls(root)} >= {"pool", "screen.zarr", "signatures.zarr", "overlap.nc",
                                                              "stats", "report", "summary.json"}
    assert json.loads(fs.cat_file(f"{root}/summary.json"))["out"] == url
    again = subprocess.run(args, capture_output=True, text=True, env=s3.env())
    assert again.returncode != 0 and again.stderr.startswith("bsig: error: demo output") and "--overwrite" in again.stderr
    for key in fs.find(root):
        assert SECRET.encode() not in fs.cat_file(key)


@pytest.mark.parametrize(("where", "options", "message"), [
    ("foo://b/p.zarr", None, "unknown URL protocol foo://"),
    ("s3:///p.zarr", None, "names no bucket; write s3://BUCKET/PATH"),
    ("s3://b/p.zarr", {"endpoint_url": 5}, "storage options for s3:// are not accepted by the storage client"),
    ("s3://b/p.zarr", {"bogus_option": 1}, "unexpected keyword argument 'bogus_option'"),
    ("s3://no-such-bucket/p.zarr", {}, "perplexity store s3://no-such-bucket/p.zarr does not exist"),
    (f"s3://{KEY}:{SECRET}@b/p.zarr", {}, "put credentials in --storage-options"),
])
def test_hostile_urls_and_options_are_one_line(s3, tmp_path, capsys, where, options, message):
    from bsig_array.cli.main import main

    given = {**s3.options, **options} if options is not None else s3.options
    perf = tmp_path / "y.csv"
    perf.write_text("model,a\nm1,0.1\nm2,0.2\nm3,0.3\n")
    with pytest.raises(SystemExit) as exit_:
        main(["screen", "--perplexity", where, "--performance", str(perf), "--out", str(tmp_path / "s.zarr"),
              "--storage-options", json.dumps(given)])
    _, err = capsys.readouterr()
    assert exit_.value.code != 0 and err.startswith("bsig: error:") and err.count("\n") == 1, err
    assert message in err and SECRET not in err and "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists()
    set_storage_options(None)


def test_lm_eval_task_folder_from_s3_equals_the_local_copy(s3, s3_options):
    from pathlib import Path

    from bsig_array.stages.evaluate import TASKS_DIR, prepared_include_path

    url = f"s3://{s3.bucket()}/tasks"
    s3.upload(Path(TASKS_DIR), url)
    with prepared_include_path([TASKS_DIR]) as (here,), prepared_include_path([url]) as (there,):
        files = sorted(p.relative_to(here).as_posix() for p in Path(here).rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(there).as_posix() for p in Path(there).rglob("*") if p.is_file())
        for name in files:  # YAMLs name their data files by absolute path: compare relative to each copy
            assert (Path(here) / name).read_text().replace(here, "D") == (Path(there) / name).read_text().replace(there, "D")
