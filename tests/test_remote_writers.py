"""Writers on object storage: ``bsig synth``, ``ingest``, ``validate``, ``perplexity`` against a real S3 server.

Every store and pool written to ``s3://`` must equal the one written to disk with the same arguments
(array values and attributes; provenance creation times aside), a ``kill -9`` at any point must leave
nothing that opens as complete and be resumed by the same command (only unfinished chunks written),
and the credentials must never reach an object, stdout or stderr.  ``bsig synth`` runs as a
subprocess with the options in ``BSIG_STORAGE_OPTIONS`` (the realistic path, and the only way to
kill it); the others run in-process through the CLI's ``main``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from s3 import KEY, SECRET, free_port

from bsig_array.cli.main import main
from bsig_array.errors import InputError
from bsig_array.io.location import Location
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.provenance import make_record, read_record_file, write_record_file
from bsig_array.pipelines.synth import synthesize

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

SMALL = {"models": 4, "benchmarks": 3, "tokens": 6000, "chunk_tokens": 1000, "planted_per_benchmark": 2}
ARGS = ["--models", "4", "--benchmarks", "3", "--tokens", "6000", "--chunk-tokens", "1000", "--planted", "2"]
#: Attributes (and record keys) that legitimately differ between two runs.
VOLATILE = {"created"}


# ------------------------------------------------------------------------------------- helpers


def bsig(s3, argv: list[str], tmpdir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``bsig ARGV`` in a fresh interpreter that reaches ``s3`` through ``BSIG_STORAGE_OPTIONS``."""
    proc = subprocess.run([sys.executable, "-m", "bsig_array.cli.main", *argv], capture_output=True, text=True,
                          env=s3.env(BSIG_PROGRESS="0", TMPDIR=str(tmpdir), HF_HUB_OFFLINE="1", **env), timeout=120)
    for text in (proc.stdout, proc.stderr):
        assert SECRET not in text and KEY not in text
    return proc


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, str) and value.startswith("{") and '"created"' in value:
        return _clean(json.loads(value))
    return value


def tree(loc: Location) -> dict[str, object]:
    """What a reader sees under ``loc`` (local or remote): Zarr arrays and attributes of every store,
    file bytes elsewhere (JSON parsed, without volatile keys)."""
    out: dict[str, object] = {}
    files = list(loc.walk_files())
    stores = sorted({f.split(".zarr/", 1)[0] + ".zarr" for f in files if ".zarr/" in f})
    if loc.name.endswith(".zarr"):
        stores, files = [""], []
    for name in stores:
        where = loc.child(name) if name else loc
        group = zarr.open_group(where.zarr_store(read_only=True), mode="r")
        out[f"{name}:attrs"] = _clean(dict(group.attrs))
        for key, array in group.arrays():
            values = array[...]
            out[f"{name}/{key}"] = (values.dtype.str, values.shape,
                                    values.tolist() if values.dtype == object else values.tobytes())
    for f in files:
        if ".zarr/" in f:
            continue
        data = loc.child(f).read_bytes()
        out[f] = _clean(json.loads(data)) if f.endswith(".json") else data
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key in got:
        assert got[key] == want[key], key


def assert_no_secret(s3, bucket: str) -> None:
    """No object of ``bucket`` holds the test credentials (every object's bytes are read)."""
    fs = s3.fs()
    for key in fs.find(bucket):
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY.encode() not in data, key


def remote(s3, url: str) -> Location:
    return Location(url, s3.options)


def marks(s3, url: str) -> np.ndarray | None:
    """The progress record of the store at ``url``, or ``None`` before its root metadata exists."""
    loc = remote(s3, url)
    if not loc.child("zarr.json").exists():
        return None
    return np.asarray(zarr.open_group(loc.zarr_store(read_only=True), mode="r")["_complete"][...], dtype=bool)


def stage_debris(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith(".bsig-"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The pool written to local disk in-process: what every S3 pool must equal."""
    out = tmp_path_factory.mktemp("ref") / "pool"
    synthesize(out, **SMALL)
    return tree(Location(str(out)))


# ----------------------------------------------------------------------------------------- synth


def test_synth_to_s3_equals_local_and_resumes_after_kill_9(s3, s3_options, reference, tmp_path, monkeypatch):
    bucket = s3.bucket()
    count = tmp_path / "points.txt"
    url = f"s3://{bucket}/pool"
    proc = bsig(s3, ["synth", url, *ARGS], tmp_path, BSIG_FAULT_COUNT=str(count))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {url}/perplexity.zarr" in proc.stdout
    assert_same(tree(remote(s3, url)), reference)
    assert stage_debris(tmp_path) == []
    n = int(count.read_text().split()[-1])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # in-process runs stage where the subprocesses do

    # Kill points: while the new store's metadata is being published (no root zarr.json yet), between
    # a chunk's data and its mark (two chunks marked), and while the small files are published.
    for point in (2, 8, n - 2):
        url = f"s3://{bucket}/killed-{point}"
        killed = bsig(s3, ["synth", url, *ARGS], tmp_path, BSIG_FAULT_KILL_AT=str(point))
        assert killed.returncode == -9, killed.stderr
        done = marks(s3, f"{url}/perplexity.zarr")
        if done is None or not done.all():  # nothing of it opens as complete
            with pytest.raises(InputError, match="incomplete|does not exist") as exc:
                open_store(remote(s3, f"{url}/perplexity.zarr"))
            assert "\n" not in str(exc.value)
        written = {}
        if point == 8:
            assert done is not None and 0 < done.all(axis=0).sum() < done.shape[1]
            fs = s3.fs()
            written = {j: fs.info(f"{bucket}/killed-{point}/perplexity.zarr/nll/c/0/{j}")["LastModified"]
                       for j in np.flatnonzero(done.all(axis=0))}
            time.sleep(1.1)  # object times have whole seconds: a rewrite would show
        # The same command again, in-process (saves an interpreter start; staging in the same TMPDIR).
        synthesize(url, **SMALL)
        assert_same(tree(remote(s3, url)), reference)
        fs = s3.fs()
        for j, stamp in written.items():  # resumed: the chunks marked before the kill were not written again
            assert fs.info(f"{bucket}/killed-{point}/perplexity.zarr/nll/c/0/{j}")["LastModified"] == stamp
        assert stage_debris(tmp_path) == []  # the rerun removed the killed run's staging directory

    # Other parameters are refused; --overwrite replaces the pool whole.
    url = f"s3://{bucket}/pool"
    with pytest.raises(InputError, match="already exists with other contents"):
        synthesize(url, **(SMALL | {"seed": 5}))
    synthesize(url, overwrite=True, **(SMALL | {"seed": 5}))
    assert tree(remote(s3, url))["truth.json"]["seed"] == 5
    assert_no_secret(s3, bucket)


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "bad options JSON"])
def test_synth_hostile_storage_is_one_line(s3, tmp_path, case):
    url, extra, env = f"s3://{s3.bucket()}/pool", [], {}
    if case == "missing bucket":
        url = "s3://no-such-bucket-bsig/pool"
    elif case == "unreachable endpoint":  # a closed port; one attempt, so the test stays quick
        env["BSIG_STORAGE_OPTIONS"] = json.dumps({
            "endpoint_url": f"http://127.0.0.1:{free_port()}", "key": KEY, "secret": SECRET,
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}})
    else:
        extra = ["--storage-options", '{"secret": "' + SECRET + '", oops']
    proc = bsig(s3, ["synth", url, *ARGS, *extra], tmp_path, **env)
    assert proc.returncode != 0
    assert proc.stderr.startswith("bsig: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- ingest, validate


def _paper_files(directory: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    keys = [(t, c) for t in range(5) for c in range(4)]
    directory.mkdir(parents=True)
    files = []
    for name in ("ma", "mb", "mc"):
        rows = [keys[i] for i in rng.permutation(len(keys))]
        table = pa.table({"text_id": pa.array([r[0] for r in rows], pa.int64()),
                          "chunk_id": pa.array([r[1] for r in rows], pa.int32()),
                          "logprobs": pa.array([list(-rng.gamma(2.0, 1.0, 3)) for _ in rows], pa.list_(pa.float32()))})
        files.append(directory / f"{name}.parquet")
        pq.write_table(table, files[-1], row_group_size=7)
    return files


def said(capsys):
    """What the in-process command printed, checked for the credentials."""
    got = capsys.readouterr()
    assert SECRET not in got.out + got.err and KEY not in got.out + got.err
    return got


def _arrays(loc: Location) -> dict[str, object]:
    return {k: v for k, v in tree(loc).items() if not k.endswith(":attrs")}


def test_ingest_and_validate_on_s3(s3, s3_options, tmp_path, capsys):
    bucket = s3.bucket()
    _paper_files(tmp_path / "in")
    s3.upload(tmp_path / "in", f"s3://{bucket}/in")
    main(["ingest", str(tmp_path / "in"), "--out", str(tmp_path / "local.zarr"), "--chunk-tokens", "6"])
    # Inputs on S3 (a prefix of per-model Parquet files), output on S3.
    main(["ingest", f"s3://{bucket}/in", "--out", f"s3://{bucket}/s.zarr", "--chunk-tokens", "6"])
    assert f"wrote s3://{bucket}/s.zarr" in said(capsys).out
    store = remote(s3, f"s3://{bucket}/s.zarr")
    assert _arrays(store) == _arrays(Location(str(tmp_path / "local.zarr")))
    record = json.loads(open_store(store).attrs["bsig_provenance"])
    assert record["inputs"]["nll:ma"] == f"s3://{bucket}/in/ma.parquet"
    # A local input to an S3 output, and an existing output refused without --overwrite.
    with pytest.raises(SystemExit):
        main(["ingest", str(tmp_path / "in"), "--out", f"s3://{bucket}/s.zarr"])
    assert said(capsys).err.startswith("bsig: error:")

    # What an ingest killed while publishing leaves (array objects, no root zarr.json) is replaced.
    fs = s3.fs()
    for key in ("_complete/c/0/0", "token/c/1"):
        fs.copy(f"{bucket}/s.zarr/{key}", f"{bucket}/left.zarr/{key}")
    main(["ingest", f"s3://{bucket}/in", "--out", f"s3://{bucket}/left.zarr", "--chunk-tokens", "6"])
    assert "replacing" in said(capsys).err
    assert _arrays(remote(s3, f"s3://{bucket}/left.zarr")) == _arrays(store)

    main(["validate", f"s3://{bucket}/s.zarr", "--deep"])
    assert "all chunks readable" in said(capsys).out
    s3.fs().rm(f"{bucket}/s.zarr/nll/c/0/1")  # a lost chunk object
    with pytest.raises(SystemExit):
        main(["validate", f"s3://{bucket}/s.zarr", "--deep"])
    err = said(capsys).err
    assert err.startswith("bsig: error:") and "nll/c/0/1" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["validate", f"s3://{bucket}/s.zarr", "--deep", "--mark-pending"])
    assert "now marked pending" in said(capsys).err
    done = marks(s3, f"s3://{bucket}/s.zarr")
    assert done is not None and not done[:, 1].any() and done[:, [0, 2, 3]].all()
    assert_no_secret(s3, bucket)


def test_record_files_on_s3(s3, s3_options):
    bucket = s3.bucket()
    url = f"s3://{KEY}:{SECRET}@{bucket}/stats?token={SECRET}"
    record = make_record("stats", inputs={"screen": url, "local": "x.zarr"}, options={"scheduler": url})
    assert SECRET not in json.dumps(record) and KEY not in json.dumps(record)
    assert record["inputs"]["screen"] == f"s3://{bucket}/stats"
    where = f"s3://{bucket}/stats"
    assert read_record_file(where) is None
    write_record_file(where, record)
    assert read_record_file(where) == record
    assert_no_secret(s3, bucket)


# ------------------------------------------------------------------------------------ perplexity


def test_perplexity_store_on_s3_resumes(s3, s3_options, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from bsig_array.io.perplexity_store.writer import StoreWriter
    from bsig_array.models.loading import build_tiny_gpt2
    from bsig_array.stages.corpus import build_corpus, stdlib_documents
    from bsig_array.stages.perplexity import extract_perplexity, lock_path

    torch.set_num_threads(1)
    tiny = build_tiny_gpt2(tmp_path / "tiny", n_layer=1, n_embd=32)
    build_corpus([d for _, d in zip(range(4), stdlib_documents())], tmp_path / "c.zarr", sample_rate=0.03, seed=0,
                 context_pieces=8)
    kwargs = dict(chunk_tokens=8, batch_size=8, max_tokens=64)
    extract_perplexity(tmp_path / "c.zarr", tmp_path / "p.zarr", str(tiny), name="tiny", **kwargs)
    bucket = s3.bucket()
    url = f"s3://{bucket}/p.zarr"
    first = extract_perplexity(tmp_path / "c.zarr", url, str(tiny), name="tiny", **kwargs)
    assert first.chunks_done == first.chunks_total > 2
    assert _arrays(remote(s3, url)) == _arrays(Location(str(tmp_path / "p.zarr")))
    # A lost chunk: validate marks it pending, the same command rewrites exactly that chunk.
    s3.fs().rm(f"{bucket}/p.zarr/nll/c/0/1")
    StoreWriter(url).invalidate([1])  # what validate --mark-pending does (it wants >= 3 models)
    again = extract_perplexity(tmp_path / "c.zarr", url, str(tiny), name="tiny", **kwargs)
    assert again.chunks_done == 1
    assert _arrays(remote(s3, url)) == _arrays(Location(str(tmp_path / "p.zarr")))
    assert not lock_path(url).exists()  # the local lock of a remote store goes with the run

    # The CLI on what a creation killed while publishing leaves (array objects, no root zarr.json):
    # replaced without --overwrite.
    fs = s3.fs()
    for key in ("_complete/c/0/0", "model/zarr.json"):
        fs.copy(f"{bucket}/p.zarr/{key}", f"{bucket}/left.zarr/{key}")
    s3.upload(tmp_path / "c.zarr", f"s3://{bucket}/c.zarr")  # and the corpus read from the bucket too
    main(["perplexity", "--corpus", f"s3://{bucket}/c.zarr", "--store", f"s3://{bucket}/left.zarr",
          "--model", str(tiny), "--name", "tiny", "--chunk-tokens", "8", "--batch-size", "8", "--max-tokens", "64"])
    out, err = capsys.readouterr()
    assert f"s3://{bucket}/left.zarr: model 'tiny'" in out and SECRET not in out + err and KEY not in out + err
    assert "replacing" in err
    assert _arrays(remote(s3, f"s3://{bucket}/left.zarr")) == _arrays(Location(str(tmp_path / "p.zarr")))
    assert_no_secret(s3, bucket)


def test_credentials_in_the_url_are_never_echoed(s3, s3_options, capsys):
    bucket = s3.bucket()
    with pytest.raises(SystemExit):
        main(["synth", f"s3://{KEY}:{SECRET}@{bucket}/pool", *ARGS])
    out, err = capsys.readouterr()
    assert err.startswith("bsig: error:") and err.count("\n") == 1 and "not in the URL" in err
    assert SECRET not in out + err and KEY not in out + err
    assert_no_secret(s3, bucket)
