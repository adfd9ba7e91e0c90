"""Inputs are sacred: every writer refuses, with one line and before any work, an output that is,
contains or lies inside one of its inputs, an existing artifact of another kind, an existing output
without ``--overwrite`` and an unwritable destination; ``--overwrite`` swaps the new output in only
when it is complete, and debris of killed runs is removed by the next writer, which says so."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli_errors import assert_one_line_error, good_store, run_cli

from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.atomic import (
    HOST,
    atomic_entries,
    atomic_output,
    check_new_output,
    owner,
    remove_stale,
    scratch_dir,
)
from bsig_array.io.kinds import DEMO_OUTPUT, SYNTH_POOL, artifact_kind
from bsig_array.io.perplexity_store.schema import PERPLEXITY_STORE
from bsig_array.io.screen_output import SCREEN_OUTPUT

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")


def snapshot(path: Path) -> dict[str, str]:
    """Digest of every file under ``path`` (or of the file), keyed by relative path."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def refuses(capsys, args, *paths: Path, fragments=()) -> str:
    """``args`` fails with one line and leaves every path in ``paths`` exactly as it was."""
    before = {p: snapshot(p) if p.exists() else None for p in paths}
    line = assert_one_line_error(capsys, args, *fragments)
    for p, snap in before.items():
        assert (snapshot(p) if p.exists() else None) == snap, p
    return line


@pytest.fixture
def pool(tmp_path):
    store = good_store(tmp_path / "p.zarr")
    pd.DataFrame({"model": ["m0", "m1", "m2", "m3"], "a": [0.1, 0.5, 0.3, 0.9], "b": [0.7, 0.2, 0.4, 0.1]}).to_csv(
        tmp_path / "y.csv", index=False)
    return store, tmp_path / "y.csv"


def screen_args(store, perf, out, *extra):
    return ["screen", "--perplexity", store, "--performance", perf, "--out", out, "--alpha", "0.1", *extra]


def test_screen_never_writes_over_its_inputs(pool, tmp_path, capsys):
    store, perf = pool
    refuses(capsys, screen_args(store, perf, store, "--overwrite"), store, fragments=["is the input"])
    refuses(capsys, screen_args(store, perf, perf, "--overwrite"), perf, fragments=["is the input"])
    refuses(capsys, screen_args(store, perf, store / "s.zarr", "--overwrite"), store, fragments=["lies inside the input"])
    refuses(capsys, screen_args(store, perf, tmp_path, "--overwrite"), store, perf, fragments=["contains the input"])
    link = tmp_path / "link.zarr"
    link.symlink_to(store, target_is_directory=True)
    refuses(capsys, screen_args(store, perf, link, "--overwrite"), store, fragments=["is the input"])


def test_outputs_of_another_kind_are_refused_whatever_the_flags(pool, tmp_path, capsys):
    store, perf = pool
    other = good_store(tmp_path / "other.zarr")
    refuses(capsys, screen_args(store, perf, other, "--overwrite"), other,
            fragments=["is a perplexity store, not a screen output"])
    (tmp_path / "file.zarr").write_text("precious")
    refuses(capsys, screen_args(store, perf, tmp_path / "file.zarr", "--overwrite"), tmp_path / "file.zarr",
            fragments=["is a file, but a screen output is a directory"])
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("precious")
    refuses(capsys, screen_args(store, perf, home, "--overwrite"), home, fragments=["is a directory, not a screen output"])
    refuses(capsys, ["performance", "convert", perf, tmp_path / "other.zarr", "--overwrite"], other,
            fragments=["perplexity store, not a performance matrix"])
    refuses(capsys, ["performance", "convert", perf, home, "--overwrite"], home, fragments=["is a directory"])


def test_unwritable_destinations_are_one_line(pool, tmp_path, capsys):
    store, perf = pool
    (tmp_path / "plain").write_text("x")
    refuses(capsys, screen_args(store, perf, tmp_path / "plain" / "s.zarr"), tmp_path / "plain",
            fragments=["is a file, not a directory"])
    refuses(capsys, ["synth", tmp_path / "plain" / "pool", "--models", 4, "--benchmarks", 2, "--tokens", 100],
            tmp_path / "plain", fragments=["is a file, not a directory"])
    refuses(capsys, ["stats", "--overlap", tmp_path / "o.nc", "--out", tmp_path / "plain"], tmp_path / "plain",
            fragments=["is a file"])
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        refuses(capsys, screen_args(store, perf, locked / "s.zarr"), locked, fragments=["is not writable"])


def test_existing_output_needs_overwrite_on_every_writer(pool, tmp_path, capsys):
    store, perf = pool
    (tmp_path / "o.nc").write_bytes(b"old overlap")
    refuses(capsys, ["overlap", "--performance", perf, "--out", tmp_path / "o.nc"], tmp_path / "o.nc",
            fragments=["already exists; pass --overwrite"])
    (tmp_path / "y2.csv").write_text("old")
    refuses(capsys, ["performance", "convert", perf, tmp_path / "y2.csv"], tmp_path / "y2.csv",
            fragments=["already exists; pass --overwrite"])
    assert run_cli(capsys, "performance", "convert", perf, tmp_path / "y2.csv", "--overwrite")[0] == 0
    assert pd.read_csv(tmp_path / "y2.csv").shape == (4, 3)
    stats = tmp_path / "stats"
    stats.mkdir()
    (stats / "performance_clique.csv").write_text("old")
    refuses(capsys, ["stats", "--overlap", tmp_path / "o.nc", "--out", stats, "--level", "performance"], stats,
            fragments=["already exists; pass --overwrite"])
    report = tmp_path / "rep"
    report.mkdir()
    (report / "report.html").write_text("old")
    refuses(capsys, ["report", "--out", report, "--overlap", tmp_path / "o.nc"], report,
            fragments=["already exists; pass --overwrite"])
    refuses(capsys, ["report", "--out", store / "rep", "--screen", store], store, fragments=["is or lies inside the input"])
    pd.DataFrame({"model": ["m0"], "a": [0.5]}).to_csv(tmp_path / "e.csv", index=False)
    refuses(capsys, ["evaluate", "--model", "m0", "--tasks", "bsig_add", "--out", tmp_path / "e.csv"], tmp_path / "e.csv",
            fragments=["already has a row for model 'm0'; pass --overwrite"])
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text("{}")
    refuses(capsys, ["demo", "--out", demo, "--tokens", 1000], demo, fragments=["already exists; pass --overwrite"])
    refuses(capsys, ["demo", "--out", tmp_path / "rep", "--overwrite"], report, fragments=["not a demo output"])
    for command in ("synth", "corpus", "ingest", "screen", "select", "overlap", "stats", "report", "demo", "evaluate"):
        assert "--overwrite" in run_cli(capsys, command, "--help")[1], command
    for sub in ("convert", "import", "import-lm-eval"):
        assert "--overwrite" in run_cli(capsys, "performance", sub, "--help")[1], sub


def test_ingest_and_corpus_refuse_their_inputs(tmp_path, capsys):
    table = tmp_path / "nll"
    table.mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0], "c": [3.0, 3.5]}).to_parquet(table / "w.parquet")
    refuses(capsys, ["ingest", table, "--out", table, "--overwrite"], table, fragments=["is the input"])
    refuses(capsys, ["ingest", table, "--out", table / "x.zarr"], table, fragments=["lies inside the input"])
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "a b c d e f"}\n')
    refuses(capsys, ["corpus", docs, "--out", docs, "--overwrite"], docs, fragments=["is the input"])


def test_perplexity_store_must_be_a_store_and_not_an_input(tmp_path, capsys):
    from bsig_array.stages.corpus import build_corpus

    build_corpus(["a b c d e f g h"], tmp_path / "c.zarr", sample_rate=1.0)
    common = ["--model", tmp_path / "no-model"]
    refuses(capsys, ["perplexity", "--corpus", tmp_path / "c.zarr", "--store", tmp_path / "c.zarr" / "p.zarr", *common],
            tmp_path / "c.zarr", fragments=["lies inside the input"])
    refuses(capsys, ["perplexity", "--corpus", tmp_path / "c.zarr", "--store", tmp_path / "c.zarr", *common],
            tmp_path / "c.zarr", fragments=["is the input"])
    # A failed run (no such model) leaves neither a store nor its lock file.
    code, _, _ = run_cli(capsys, "perplexity", "--corpus", tmp_path / "c.zarr", "--store", tmp_path / "p.zarr", *common)
    assert code != 0 and sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]


def test_synth_overwrite_keeps_the_old_pool_until_the_new_one_is_complete(tmp_path, capsys):
    out = tmp_path / "pool"
    args = ["synth", out, "--models", 4, "--benchmarks", 2, "--tokens", 300, "--planted", 2, "--no-questions"]
    assert run_cli(capsys, *args)[0] == 0
    old = snapshot(out)
    refuses(capsys, [*args[:2], "--models", 2, "--overwrite"], out, fragments=["at least 3 models"])
    refuses(capsys, [*args, "--seed", 3], out, fragments=["other contents; pass --overwrite"])
    (out / "mine.txt").write_text("precious")
    refuses(capsys, [*args, "--seed", 3, "--overwrite"], out, fragments=["not part of a pool"])
    (out / "mine.txt").unlink()
    assert run_cli(capsys, *args, "--seed", 3, "--overwrite")[0] == 0
    new = snapshot(out)
    assert new.keys() == old.keys() and new != old
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]  # nothing left aside


def test_atomic_output_swaps_only_a_complete_output(tmp_path):
    target = tmp_path / "s.zarr"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("half")
        raise RuntimeError("writer failed")
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"] and (target / "old").read_text() == "old"
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_entries_of_a_shared_directory_swap_together(tmp_path):
    (tmp_path / "report.html").write_text("old")
    (tmp_path / "tables.csv").write_text("mine")
    with pytest.raises(RuntimeError), atomic_entries(tmp_path, ["report.html", "figures"]) as scratch:
        (scratch / "report.html").write_text("half")
        raise RuntimeError("figure failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "tables.csv"]
    assert (tmp_path / "report.html").read_text() == "old"
    with atomic_entries(tmp_path, ["report.html", "figures"]) as scratch:
        (scratch / "report.html").write_text("new")
        (scratch / "figures").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.html", "tables.csv"]
    assert (tmp_path / "report.html").read_text() == "new"


def test_debris_of_dead_writers_is_removed_and_said(tmp_path, capsys):
    dead = f"{2**22 + 12345}-{HOST}"  # a pid above the default pid_max: never a running process
    (tmp_path / f".s.zarr.tmp-{dead}-0123abcd").mkdir()
    (tmp_path / f".bsig-screen-spill-{dead}-xyz").mkdir()
    (tmp_path / f".p.zarr.tmp-{owner()}-0123abcd").mkdir()  # a live writer's: kept
    (tmp_path / f".q.zarr.tmp-{2**22 + 12345}-0000beef-0123abcd").mkdir()  # another machine's: kept
    (tmp_path / "keep.txt").write_text("x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spill = scratch_dir(tmp_path, ".bsig-screen-spill-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".p.zarr.tmp-{owner()}-0123abcd", f".q.zarr.tmp-{2**22 + 12345}-0000beef-0123abcd", "keep.txt", spill.name])
    assert spill.name.startswith(f".bsig-screen-spill-{owner()}-")
    messages = [str(w.message) for w in caught if issubclass(w.category, BsigWarning)]
    assert len(messages) == 2 and all("left by an interrupted bsig run" in m for m in messages)
    # A directory moved aside by a swap that was killed half-way is put back.
    (tmp_path / f".g.zarr.old-{dead}-0123abcd").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        remove_stale(tmp_path)
    assert (tmp_path / "g.zarr").is_dir()
    # The CLI prints the notice as one line.
    (tmp_path / f".y.csv.tmp-{dead}-0123abcd").write_text("half")
    pd.DataFrame({"model": ["a", "b", "c"], "x": [0.1, 0.2, 0.3]}).to_csv(tmp_path / "in.csv", index=False)
    code, _, err = run_cli(capsys, "performance", "convert", tmp_path / "in.csv", tmp_path / "y.csv")
    assert code == 0 and f"bsig: warning: removed {tmp_path}/.y.csv.tmp-{dead}-0123abcd" in err


def test_artifact_kinds(pool, tmp_path):
    store, perf = pool
    assert artifact_kind(store) == PERPLEXITY_STORE and artifact_kind(perf) == "file"
    assert artifact_kind(tmp_path / "none") is None
    (tmp_path / "e").mkdir()
    assert artifact_kind(tmp_path / "e") == "empty directory"
    check_new_output(tmp_path / "e", overwrite=False, kind=SCREEN_OUTPUT)  # nothing to lose
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "perplexity.zarr").mkdir()
    assert artifact_kind(tmp_path / "pool") == SYNTH_POOL
    (tmp_path / "pool" / "summary.json").write_text("{}")
    assert artifact_kind(tmp_path / "pool") == DEMO_OUTPUT
    with pytest.raises(InputError, match="already exists"):
        check_new_output(store, overwrite=False, kind=PERPLEXITY_STORE)
    assert check_new_output(store, overwrite=True, kind=PERPLEXITY_STORE) == store
    assert np.isfinite(len(snapshot(store)))
