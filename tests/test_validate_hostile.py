"""The last hostile-input gaps of ``bsig validate`` and resume (issue 27).

A damaged progress record of an interrupted ``bsig synth`` is one line naming the record and the
recovery (``bsig validate --repair-progress`` rebuilds it from the chunks that verify, or start over
with ``--overwrite``); both recoveries work.  ``bsig validate [--deep]`` checks every Zarr artifact
kind bsig writes: every metadata document against the consolidated copy, and (deep) every chunk's
checksum, naming the first damaged document or chunk file.  Artifacts are real, written by the
package's own CLI; damage is done to copies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_cli_errors import run_cli
from test_damage import flip_inside, snapshot, write_performance, write_store
from test_damage import one_error as one_line

from bsig_array.pipelines.synth import simulate
from bsig_array.stages.corpus import build_corpus

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

SYNTH = ["--models", "4", "--benchmarks", "3", "--tokens", "600", "--chunk-tokens", "200", "--planted", "2", "--no-questions"]


def ok(capsys, *args) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code in (0, None), err
    return out


def flip(path: Path) -> None:
    data = path.read_bytes()
    if len(data) > 420:
        path.write_bytes(flip_inside(data))
    else:
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        path.write_bytes(bytes(b))


# ----------------------------------------------------------------------------- damaged progress record


def interrupted_pool(capsys, out: Path) -> Path:
    """A pool whose synth was interrupted after chunk 0 (chunks 1, 2 unmarked, chunk 2's data gone)."""
    ok(capsys, "synth", out, *SYNTH)
    store = out / "perplexity.zarr"
    for j in (1, 2):
        (store / "_complete" / "c" / "0" / str(j)).unlink()
    (store / "nll" / "c" / "0" / "2").unlink()
    return store


@pytest.mark.parametrize("damage", ["flipped", "truncated", "value"])
def test_damaged_progress_record_of_interrupted_synth(tmp_path, capsys, damage):
    out = tmp_path / "pool"
    store = interrupted_pool(capsys, out)
    record = store / "_complete" / "c" / "0" / "0"
    if damage == "flipped":
        flip(record)
    elif damage == "truncated":
        record.write_bytes(record.read_bytes()[:5])
    else:  # decodes fine, but holds a mark other than 0/1
        import zarr

        zarr.open_group(store, mode="r+")["_complete"][:, 0] = 7
    before = snapshot(out)
    line = one_line(capsys, "synth", out, *SYNTH, names=("_complete", "--repair-progress", "--overwrite"))
    if damage != "value":
        assert "_complete/c/0/0" in line
    assert snapshot(out) == before  # nothing lost, nothing changed
    one_line(capsys, "validate", store, names=("_complete", "--repair-progress"))
    assert snapshot(out) == before

    # The suggested recovery: rebuild the record, then the same command finishes the pool.
    said = ok(capsys, "validate", "--repair-progress", store)
    assert "8 of 12" in said  # chunks 0 and 1 verify (1: written, its mark lost); chunk 2's data is gone
    ok(capsys, "synth", out, *SYNTH)
    expect = simulate(models=4, benchmarks=3, tokens=600, planted_per_benchmark=2).nll
    np.testing.assert_array_equal(xr.open_zarr(store)["nll"].values, expect)
    assert "12/12" in ok(capsys, "validate", "--deep", store)


def test_overwrite_recovers_a_damaged_progress_record(tmp_path, capsys):
    out = tmp_path / "pool"
    store = interrupted_pool(capsys, out)
    flip(store / "_complete" / "c" / "0" / "0")
    ok(capsys, "synth", out, *SYNTH, "--overwrite")
    assert "12/12" in ok(capsys, "validate", "--deep", store)


def test_damaged_record_metadata_is_one_line_and_repairable(tmp_path, capsys):
    out = tmp_path / "pool"
    ok(capsys, "synth", out, *SYNTH)
    store = out / "perplexity.zarr"
    root = json.loads((store / "zarr.json").read_text())
    root["consolidated_metadata"]["metadata"]["_complete"]["shape"] = [4, 2]  # wrong shape, everywhere
    (store / "zarr.json").write_text(json.dumps(root))
    meta = json.loads((store / "_complete" / "zarr.json").read_text())
    meta["shape"] = [4, 2]
    (store / "_complete" / "zarr.json").write_text(json.dumps(meta))
    one_line(capsys, "synth", out, *SYNTH, names=("_complete", "shape", "--repair-progress"))
    assert "12 of 12" in ok(capsys, "validate", "--repair-progress", store)
    assert "12/12" in ok(capsys, "validate", "--deep", store)


# --------------------------------------------------------------------------- every artifact kind


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """One of every Zarr artifact kind bsig writes (and the non-Zarr ones), made by the CLI."""
    from bsig_array.cli.main import main

    def cli(*args) -> None:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
            raise SystemExit(0)
        assert exc.value.code in (0, None)

    root = tmp_path_factory.mktemp("artifacts")
    store = write_store(root / "s.zarr")
    perf = write_performance(root / "y.csv")
    cli("screen", "--perplexity", store, "--performance", perf, "--out", root / "screen.zarr", "--alpha", "0.2")
    cli("select", "--screen", root / "screen.zarr", "--performance", perf, "--out", root / "sig.zarr")
    cli("overlap", "--signatures", root / "sig.zarr", "--perplexity", store, "--performance", perf,
        "--out", root / "overlap.zarr")
    cli("overlap", "--signatures", root / "sig.zarr", "--perplexity", store, "--performance", perf,
        "--out", root / "overlap.nc")
    cli("stats", "--overlap", root / "overlap.nc", "--out", root / "stats")
    build_corpus([" ".join(f"w{i}x{j}" for j in range(60)) for i in range(20)], root / "c.zarr", sample_rate=1.0)
    cli("synth", root / "pool", *SYNTH)
    return {"perplexity store": store, "screen output": root / "screen.zarr", "signatures store": root / "sig.zarr",
            "overlap file": root / "overlap.zarr", "corpus store": root / "c.zarr", "synth": root / "pool",
            "nc": root / "overlap.nc", "csv": perf, "stats": root / "stats"}


ZARR_KINDS = ["perplexity store", "screen output", "signatures store", "overlap file", "corpus store"]


@pytest.mark.parametrize("kind", [*ZARR_KINDS, "synth", "nc", "csv", "stats"])
def test_every_artifact_validates_clean(capsys, artifacts, kind):
    out = ok(capsys, "validate", artifacts[kind])
    deep = ok(capsys, "validate", "--deep", artifacts[kind])
    if kind in ZARR_KINDS:
        assert "documents parse and agree" in out and "documents parse and agree" in deep
    if kind in ZARR_KINDS[1:]:
        assert kind in deep and "checksums verified" in deep
    if kind in ("nc", "csv", "stats"):
        assert "none" in deep  # says what was (and was not) checked


def chunk_of(path: Path) -> str:
    """The first chunk file of the largest array (a file, relative key)."""
    files = [p for p in path.rglob("*") if p.is_file() and "c" in p.relative_to(path).parts[:-1]]
    best = max(files, key=lambda p: (p.stat().st_size, p.as_posix()))
    return best.relative_to(path).as_posix()


@pytest.mark.parametrize("kind", ZARR_KINDS)
def test_flipped_byte_in_a_chunk_is_named_by_deep_validation(tmp_path, capsys, artifacts, kind):
    copy = tmp_path / artifacts[kind].name
    shutil.copytree(artifacts[kind], copy)
    key = chunk_of(copy)
    flip(copy / key)
    before = snapshot(copy)
    one_line(capsys, "validate", "--deep", copy, names=(key,))
    assert snapshot(copy) == before


@pytest.mark.parametrize("kind", ZARR_KINDS)
def test_broken_array_metadata_with_intact_consolidated_copy_is_named(tmp_path, capsys, artifacts, kind):
    copy = tmp_path / artifacts[kind].name
    shutil.copytree(artifacts[kind], copy)
    doc = sorted(p for p in copy.glob("*/zarr.json"))[0]
    doc.write_text(doc.read_text()[:40])  # truncated JSON; zarr.json at the root still holds a good copy
    name = doc.relative_to(copy).as_posix()
    one_line(capsys, "validate", copy, names=(name, "JSON"))
    one_line(capsys, "validate", "--deep", copy, names=(name,))


def test_broken_nll_metadata_is_named_though_screen_passes(tmp_path, capsys, artifacts):
    store = tmp_path / "s.zarr"
    shutil.copytree(artifacts["perplexity store"], store)
    doc = store / "nll" / "zarr.json"
    meta = json.loads(doc.read_text())
    meta["shape"] = [1, 1]  # parses, but disagrees with the consolidated copy
    doc.write_text(json.dumps(meta))
    one_line(capsys, "validate", "--deep", store, names=("nll/zarr.json", "shape"))
    doc.write_bytes(b"\x00\xff" * 10)
    one_line(capsys, "validate", "--deep", store, names=("nll/zarr.json",))
    doc.unlink()
    one_line(capsys, "validate", "--deep", store, names=("nll/zarr.json", "missing"))


def test_unknown_inputs_are_one_line(tmp_path, capsys, artifacts):
    one_line(capsys, "validate", tmp_path / "nope", names=("does not exist",))
    (tmp_path / "x.bin").write_bytes(b"1")
    one_line(capsys, "validate", tmp_path / "x.bin", names=("x.bin",))
    (tmp_path / "d").mkdir()
    one_line(capsys, "validate", tmp_path / "d", names=("no artifact",))
    one_line(capsys, "validate", "--repair-progress", artifacts["screen output"], names=("perplexity store",))
