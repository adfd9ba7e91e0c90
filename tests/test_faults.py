"""Fault injection: every writer killed with SIGKILL at ten seeded points, then rerun.

A killed run must leave nothing that opens as complete (the readers refuse a partial output with an
``InputError``, the one line the CLI prints), must leave an existing output untouched when it was
replacing it (``--overwrite``), and the rerun must write outputs byte-identical to an uninterrupted
run (array contents and attributes; timings and creation times aside) and leave no debris.

The kill points come from ``BSIG_FAULT_KILL_AT=n`` (:func:`bsig_array.io.faults.fault_point`: every
progress step, every store chunk between its data and its mark, and around every atomic swap).  An
uninterrupted reference run counts its points (``BSIG_FAULT_COUNT``); ten of them are drawn with a
seed.  Runs are forked from one server process that has imported the package once, so a run costs
its work, not an interpreter start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.screen_output import open_screen
from bsig_array.io.signatures import load_signatures

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

KILLS = 10
#: Kill points of the --overwrite variants (the old output must survive each).
OVERWRITE_KILLS = 4
SEED = 11
#: Attributes that legitimately differ between two runs of the same command.
VOLATILE = {"timings", "created", "spill_bytes", "reread_chunks"}

SERVER = r"""
import json, os, sys, traceback
import numpy, pandas, pyarrow.parquet, xarray, zarr, click  # noqa: F401  (imported once, before any fork)
import torch, transformers  # noqa: F401
from bsig_array.cli import main as cli_main
import bsig_array.cli.synth, bsig_array.cli.ingest, bsig_array.cli.screen, bsig_array.cli.select  # noqa: F401
import bsig_array.cli.perplexity, bsig_array.stages.perplexity, bsig_array.stages.screen  # noqa: F401
import bsig_array.models.backends.transformers_backend, bsig_array.stages.select  # noqa: F401
import importlib, pkgutil, bsig_array  # every module a run may import, so a forked run only works
for mod in pkgutil.walk_packages(bsig_array.__path__, "bsig_array."):
    if not any(part in mod.name for part in ("vllm", "cupy", "semantic", "evaluate", "gguf")):
        importlib.import_module(mod.name)
import numba, dask.array, statsmodels.api  # noqa: F401
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.update(job["env"])
            try:
                cli_main.main(job["argv"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps(code), flush=True)
"""


class Runner:
    """A server process that forks one ``bsig`` run per request (see the module docstring)."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "BSIG_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.log = cwd / "run.log"

    def __call__(self, argv: list[str], **env: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "env": env, "log": str(self.log)}) + "\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline()))

    def text(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("faults-server"))
    yield r
    r.close()


# ------------------------------------------------------------------------------------ comparison


def _clean(attrs: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        if key in VOLATILE:
            continue
        if isinstance(value, str) and value.startswith("{") and '"created"' in value:
            value = _clean(json.loads(value))
        elif isinstance(value, dict):
            value = _clean(value)
        out[key] = value
    return out


def tree(path: Path) -> dict[str, object]:
    """Everything a reader sees under ``path``: array values and attributes of Zarr groups, file bytes
    (JSON parsed, without volatile keys) elsewhere; keyed by relative path."""
    out: dict[str, object] = {}
    if (path / "zarr.json").exists():
        group = zarr.open_group(path, mode="r")
        out["."] = _clean(dict(group.attrs))
        for name, array in group.arrays():
            values = array[...]
            out[name] = (values.dtype.str, values.shape, values.tobytes() if values.dtype != object else values.tolist(),
                         _clean(dict(array.attrs)))
        return out
    if path.is_file():
        data = path.read_bytes()
        return {".": _clean(json.loads(data)) if path.suffix == ".json" else data}
    for child in sorted(path.iterdir()):
        for key, value in tree(child).items():
            out[f"{child.name}/{key}"] = value
    return out


def assert_same(got: Path, want: Path) -> None:
    a, b = tree(got), tree(want)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], key


def debris(directory: Path) -> list[str]:
    """Temporaries, spills and locks a run may leave next to its output."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name.startswith(".") or p.name.endswith(".lock"))


def kill_points(runner: Runner, argv: list[str], work: Path, name: str, kills: int) -> list[int]:
    """Run ``argv`` uninterrupted (the reference), counting its fault points; draw the kill points."""
    count = work / "points.txt"
    count.unlink(missing_ok=True)
    assert runner(argv, BSIG_FAULT_COUNT=str(count)) == 0, runner.text()
    n = int(count.read_text().split()[-1])
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return sorted(int(x) for x in rng.choice(np.arange(1, n + 1), size=min(kills, n), replace=False))


def check_kills(runner: Runner, argv: list[str], work: Path, out: Path, name: str, partial_ok, *,
                rerun: list[str] | None = None, before=None, kills: int = KILLS, resumable: bool = False) -> list[int]:
    """Reference run, then per kill point: kill, check what is left, rerun, compare, check debris.

    A writer whose output was complete when it was killed is rerun only if it is ``resumable``
    (a rerun then does nothing but remove its lock); the others would refuse the existing output.
    """
    ref = work.parent / f"{work.name}-ref"
    if before is not None:
        before()
    points = kill_points(runner, argv, work, name, kills)
    shutil.move(out, ref)
    old = None
    for n in points:
        if before is not None:
            old = before()
        code = runner(argv, BSIG_FAULT_KILL_AT=str(n))
        assert code in (-signal.SIGKILL, 0), runner.text()
        complete = out.exists() and tree(out) == tree(ref)
        if not complete and old is not None:  # an output being replaced is intact after the kill
            assert_same(out, old)
        elif not complete and out.exists():
            partial_ok(out, ref)
        if resumable or not complete:
            assert runner(rerun or argv) == 0, runner.text()
            assert "Traceback" not in runner.text()
            assert debris(out.parent) == [], n
        assert_same(out, ref)
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    # Scratch left by a run killed after its output was complete goes with the next run.
    if before is not None:
        before()
    assert runner(argv) == 0, runner.text()
    assert_same(out, ref)
    assert debris(out.parent) == []
    return points


def refused(reader):
    """A check for a killed run's incomplete output: ``reader`` refuses it with one line."""

    def check(out: Path, ref: Path) -> None:
        with pytest.raises(InputError) as exc:
            reader(out)
        assert "\n" not in str(exc.value)

    return check


# ----------------------------------------------------------------------------------------- tests

SYNTH = ["--models", 6, "--benchmarks", 4, "--tokens", 3000, "--chunk-tokens", 400, "--planted", 3]


def _pool_refused(out: Path, ref: Path) -> None:
    """A killed fresh synth: its store is refused as incomplete, or complete and equal (the small
    files come after it; any that exist are whole)."""
    if (out / "perplexity.zarr").exists() and tree(out / "perplexity.zarr") != tree(ref / "perplexity.zarr"):
        refused(open_store)(out / "perplexity.zarr", ref / "perplexity.zarr")
    for name in ("performance.csv", "metadata.csv", "truth.json"):
        if (out / name).exists():
            assert tree(out / name) == tree(ref / name), name


def test_synth_killed_resumes_identically(runner, tmp_path):
    out = tmp_path / "w" / "pool"
    out.parent.mkdir()
    points = check_kills(runner, ["synth", out, *SYNTH], out.parent, out, "synth", _pool_refused, resumable=True)
    assert len(points) == KILLS


def test_synth_overwrite_killed_keeps_old_pool(runner, tmp_path):
    out = tmp_path / "w" / "pool"
    out.parent.mkdir()
    old = tmp_path / "old"

    def old_pool() -> Path:
        if not old.exists():
            assert runner(["synth", out, *SYNTH, "--seed", 5]) == 0, runner.text()
            shutil.copytree(out, old)
        elif out.exists():
            shutil.rmtree(out)
            shutil.copytree(old, out)
        else:
            shutil.copytree(old, out)
        return old

    argv = ["synth", out, *SYNTH, "--overwrite"]
    check_kills(runner, argv, out.parent, out, "synth-overwrite", _pool_refused, before=old_pool, kills=OVERWRITE_KILLS)


def _paper_files(directory: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    directory.mkdir()
    files = []
    for i in range(3):
        n = 1500
        lp = [[-float(x), -float(y)] for x, y in rng.random((n, 2)) * 5]
        order = rng.permutation(n)  # rows in any order
        table = pa.table({"text_id": pa.array(order // 10, pa.int64()), "chunk_id": pa.array(order % 10, pa.int64()),
                          "logprobs": pa.array(lp, pa.list_(pa.float32()))})
        pq.write_table(table, directory / f"m{i}.parquet", row_group_size=200)
        files.append(directory / f"m{i}.parquet")
    return files


def test_ingest_killed_restarts_identically(runner, tmp_path):
    _paper_files(tmp_path / "nll")
    out = tmp_path / "w" / "p.zarr"
    out.parent.mkdir()
    argv = ["ingest", tmp_path / "nll", "--out", out, "--chunk-tokens", 300, "--batch-rows", 250]
    check_kills(runner, argv, out.parent, out, "ingest", refused(open_store))
    # An ingest killed mid-way leaves debris that the next run removes, and says so.
    shutil.rmtree(out)
    code = runner(argv, BSIG_FAULT_KILL_AT="6")
    assert code == -signal.SIGKILL and debris(out.parent)
    assert runner(argv) == 0 and "bsig: warning: removed" in runner.text()
    assert debris(out.parent) == []


@pytest.fixture(scope="module")
def pool(runner, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-pool")
    assert runner(["synth", root / "pool", "--models", 10, "--benchmarks", 5, "--tokens", 6000,
                   "--chunk-tokens", 1000, "--planted", 4, "--no-questions"]) == 0, runner.text()
    return root / "pool"


def _screen_argv(pool: Path, out: Path) -> list:
    return ["screen", "--perplexity", pool / "perplexity.zarr", "--performance", pool / "performance.csv",
            "--out", out, "--alpha", 0.05, "--memory-limit", "1GiB"]


def test_screen_killed_reruns_identically(runner, pool, tmp_path):
    out = tmp_path / "w" / "s.zarr"
    out.parent.mkdir()
    check_kills(runner, _screen_argv(pool, out), out.parent, out, "screen", refused(open_screen))


def test_screen_overwrite_killed_keeps_old_output(runner, pool, tmp_path):
    out = tmp_path / "w" / "s.zarr"
    out.parent.mkdir()
    old = tmp_path / "old.zarr"

    def old_screen() -> Path:
        if not old.exists():
            assert runner([*_screen_argv(pool, out)[:-4], "--alpha", 0.1, "--memory-limit", "1GiB"]) == 0, runner.text()
            shutil.copytree(out, old)
        if not out.exists():
            shutil.copytree(old, out)
        return old

    check_kills(runner, [*_screen_argv(pool, out), "--overwrite"], out.parent, out, "screen-overwrite",
                refused(open_screen), before=old_screen, kills=OVERWRITE_KILLS)


def test_select_killed_reruns_identically(runner, pool, tmp_path):
    screen = tmp_path / "s.zarr"
    assert runner(_screen_argv(pool, screen)) == 0, runner.text()
    out = tmp_path / "w" / "g.zarr"
    out.parent.mkdir()
    argv = ["select", "--screen", screen, "--performance", pool / "performance.csv", "--out", out,
            "--memory-limit", "1GiB"]
    check_kills(runner, argv, out.parent, out, "select", refused(load_signatures))


def test_perplexity_killed_resumes_identically(runner, tmp_path):
    from bsig_array.models.loading import build_tiny_gpt2
    from bsig_array.stages.corpus import build_corpus, stdlib_documents

    tiny = build_tiny_gpt2(tmp_path / "tiny", n_layer=1, n_embd=32)
    docs = [d for _, d in zip(range(4), stdlib_documents())]
    build_corpus(docs, tmp_path / "c.zarr", sample_rate=0.005, seed=0, context_pieces=8)
    out = tmp_path / "w" / "p.zarr"
    out.parent.mkdir()
    argv = ["perplexity", "--corpus", tmp_path / "c.zarr", "--store", out, "--model", tiny, "--chunk-tokens", 16,
            "--batch-size", 8, "--max-tokens", 64, "--threads", 1]
    check_kills(runner, argv, out.parent, out, "perplexity", refused(open_store), resumable=True)


@pytest.mark.parametrize("command", ["screen", "ingest"])
def test_terminated_runs_clean_up_on_the_way_out(runner, pool, tmp_path, command):
    """SIGTERM (at seeded points) unwinds like Ctrl-C: no temporary, spill or lock survives the run
    itself, and an output being replaced is intact."""
    out = tmp_path / "w" / "o.zarr"
    out.parent.mkdir()
    if command == "screen":
        argv = [*_screen_argv(pool, out), "--overwrite"]
    else:
        _paper_files(tmp_path / "nll")
        argv = ["ingest", tmp_path / "nll", "--out", out, "--chunk-tokens", 300, "--batch-rows", 250, "--overwrite"]
    assert runner(argv) == 0, runner.text()
    old = tmp_path / "old.zarr"
    shutil.copytree(out, old)
    codes = []
    for n in kill_points(runner, argv, out.parent, f"term-{command}", OVERWRITE_KILLS):
        shutil.rmtree(out)
        shutil.copytree(old, out)
        code = runner(argv, BSIG_FAULT_KILL_AT=str(n), BSIG_FAULT_SIGNAL="TERM")
        codes.append(code)
        assert code in (130, 0), runner.text()
        assert "Traceback" not in runner.text() and debris(out.parent) == [], n
        if code == 130:
            assert_same(out, old)
    assert 130 in codes


def test_fault_point_counts_and_kills(tmp_path):
    """The hook itself: without the variables it does nothing; BSIG_FAULT_KILL_AT kills at that call."""
    code = "from bsig_array.io.faults import fault_point\nfor _ in range(5): fault_point()\nprint('survived')"
    env = {**os.environ, "BSIG_FAULT_COUNT": str(tmp_path / "n.txt")}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path).stdout == "survived\n"
    assert (tmp_path / "n.txt").read_text().split() == ["1", "2", "3", "4", "5"]
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ, "BSIG_FAULT_KILL_AT": "3"}, capture_output=True,
                            text=True, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL and killed.stdout == ""


def test_tree_sees_a_changed_value(tmp_path):
    """The comparison is not vacuous: one changed NLL is a difference."""
    import xarray as xr

    ds = xr.Dataset({"nll": (("model", "token"), np.ones((3, 4), "f4"))}, coords={"model": ["a", "b", "c"]})
    ds.to_zarr(tmp_path / "a.zarr", zarr_format=3)
    ds["nll"][1, 2] = 2.0
    ds.to_zarr(tmp_path / "b.zarr", zarr_format=3)
    with pytest.raises(AssertionError):
        assert_same(tmp_path / "a.zarr", tmp_path / "b.zarr")
    assert pd.Series(tree(tmp_path / "a.zarr")).index.tolist()  # arrays were read
