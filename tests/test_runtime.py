"""The shared runtime: defaults with BSIG_* overrides, the error hierarchy at the stage boundary, the
progress protocol, one task runner for screen and select (every scheduler gives the same result),
and the screen output's ``coefficient`` dimension."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import xarray as xr

from bsig_array.errors import BsigError, InputError, OptionError, PlanError
from bsig_array.io.screen_output import open_screen, write_screen
from bsig_array.runtime.defaults import DEFAULTS, Defaults
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen import screen
from bsig_array.stages.select import select_signatures


def _bsig(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )


def _pool(m: int = 6, d: int = 600, B: int = 3, seed: int = 0) -> tuple[xr.DataArray, xr.DataArray]:
    """A small in-memory pool with ties: nll (model, token) and score (model, benchmark)."""
    rng = np.random.default_rng(seed)
    models = [f"m{i}" for i in range(m)]
    P = rng.integers(0, 5, size=(m, d)).astype(np.float32)  # few distinct values: ties everywhere
    nll = xr.DataArray(P, dims=("model", "token"), coords={"model": models, "token": np.arange(d) * 3 + 1}, name="nll")
    Y = rng.integers(0, 4, size=(m, B)).astype(float)
    Y[0] = 10.0  # no benchmark is constant
    score = xr.DataArray(Y, dims=("model", "benchmark"), coords={"model": models, "benchmark": [f"b{j}" for j in range(B)]})
    return nll, score


# ----------------------------------------------------------------------------- defaults


def test_defaults_table_and_overrides():
    assert DEFAULTS == Defaults.from_env({}) or any(k.startswith("BSIG_") for k in os.environ)
    table = Defaults.from_env({"BSIG_ALPHA": "0.02", "BSIG_MEMORY_LIMIT": "8GiB", "BSIG_CHUNK_TOKENS": "4096"})
    assert (table.alpha, table.memory_limit, table.chunk_tokens) == (0.02, 8 * 2**30, 4096)
    rows = {name: (var, value) for name, var, value, _ in table.rows()}
    assert rows["alpha"] == ("BSIG_ALPHA", "0.02") and rows["memory_limit"] == ("BSIG_MEMORY_LIMIT", "8GiB")
    with pytest.raises(OptionError, match=r"^BSIG_ALPHA must be a finite number, got x; unset it or set e.g. BSIG_ALPHA=0.01$"):
        Defaults.from_env({"BSIG_ALPHA": "x"})


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("BSIG_MEMORY_LIMIT", "lots", "cannot read memory size 'lots'"),
    ("BSIG_MEMORY_LIMIT", "0", "memory size must be positive"),
    ("BSIG_ALPHA", "0.7", r"must be in \(0, 0.5\), got 0.7"),
    ("BSIG_WORKERS", "0", "must be an integer >= 1, got 0"),
    ("BSIG_SEED", "-1", r"must be an integer in \[0, 4294967295\]"),
    ("BSIG_DEVICE", "tpu", "unknown device"),
    ("BSIG_SCHEDULER", "tcp://", "needs a host and a port"),
    ("BSIG_SAMPLE_RATE", "1.5", r"must be in \(0, 1\]"),
    ("BSIG_RESAMPLES", "0", ">= 1"),
    ("BSIG_PROGRESS", "maybe", "auto, 1 or 0"),
])
def test_every_setting_is_checked_where_it_is_read_and_names_its_variable(variable, value, why):
    """A bad override fails when the table is read, naming the variable, not later in a stage."""
    with pytest.raises(OptionError, match=why) as info:
        Defaults.from_env({variable: value})
    message = str(info.value)
    assert variable in message and f"unset it or set e.g. {variable}=" in message and "\n" not in message


def test_a_bad_variable_is_one_line_from_the_command_line():
    for env in ({"BSIG_MEMORY_LIMIT": "lots"}, {"BSIG_ALPHA": "0.7"}):
        res = _bsig("screen", "--help", env=env)
        (variable,) = env
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]
        assert res.stderr.startswith(f"bsig: error: {variable}") and "unset it" in res.stderr


def test_run_spec_is_built_once_from_options_variables_and_the_table():
    table = Defaults.from_env({"BSIG_MEMORY_LIMIT": "3GiB", "BSIG_WORKERS": "2", "BSIG_SEED": "9"})
    run = RunSpec.build(defaults=table)
    assert (run.memory_limit, run.workers, run.seed, run.scheduler, run.device) == (3 * 2**30, 2, 9, "threads", "auto")
    given = RunSpec.build(memory_limit="500MB", workers=1, seed=4, device="cpu", defaults=table)
    assert (given.memory_limit, given.workers, given.seed, given.device) == (500 * 10**6, 1, 4, "cpu")
    assert given.record()["memory_limit"] == 500 * 10**6  # provenance records bytes, as the attributes do
    with pytest.raises(OptionError, match=r"^--memory-limit: cannot read memory size 'lots'"):
        RunSpec.build(memory_limit="lots")
    with pytest.raises(OptionError, match=r"^--workers must be an integer >= 1, got 0$"):
        RunSpec.build(workers=0)
    # dask's own variable goes through the same validator as BSIG_SCHEDULER
    with pytest.raises(OptionError, match=r"^DASK_SCHEDULER_ADDRESS: unknown scheduler address scheme 'foo://'"):
        Defaults.from_env({"DASK_SCHEDULER_ADDRESS": "foo://host:1"})
    assert run.replace(scheduler="processes").scheduler == "processes"
    with pytest.raises(OptionError, match=r"^--scheduler: unknown scheduler 'bad'"):
        run.replace(scheduler="bad")


def test_cli_defaults_follow_the_environment():
    res = _bsig("screen", "--help", env={"BSIG_MEMORY_LIMIT": "7GiB", "BSIG_ALPHA": "0.03"})
    assert res.returncode == 0, res.stderr
    assert "7GiB" in res.stdout and "0.03" in res.stdout
    listed = _bsig("defaults", env={"BSIG_SEED": "5"})
    assert listed.returncode == 0 and "BSIG_MEMORY_LIMIT" in listed.stdout and "BSIG_SEED" in listed.stdout


def test_bad_override_is_one_line():
    res = _bsig("screen", "--help", env={"BSIG_CHUNK_TOKENS": "lots"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "BSIG_CHUNK_TOKENS must be an integer, got 'lots'" in res.stderr and res.stderr.startswith("bsig: error:")


def test_environment_default_reaches_the_stage(tmp_path):
    """BSIG_ALPHA changes what a screen keeps when --alpha is not given."""
    from bsig_array.pipelines.synth import synthesize

    paths = synthesize(tmp_path / "pool", models=5, benchmarks=2, tokens=2000, planted_per_benchmark=2, questions=False)
    args = ["screen", "--perplexity", str(paths.perplexity), "--performance", str(paths.performance), "--coefficients", "thrush"]
    res = _bsig(*args, "--out", str(tmp_path / "s.zarr"), env={"BSIG_ALPHA": "0.05"})
    assert res.returncode == 0, res.stderr
    ds = open_screen(tmp_path / "s.zarr")
    assert ds.attrs["alpha"] == 0.05 and ds.attrs["k"] == 100
    explicit = _bsig(*args, "--out", str(tmp_path / "t.zarr"), "--alpha", "0.01", env={"BSIG_ALPHA": "0.05"})
    assert explicit.returncode == 0 and open_screen(tmp_path / "t.zarr").attrs["k"] == 20


# ----------------------------------------------------------------------------- errors


def test_error_hierarchy():
    for cls in (InputError, OptionError, PlanError):
        assert issubclass(cls, BsigError) and cls.exit_code == 2
        assert str(cls("two\n lines")) == "two lines"


def test_each_kind_of_error_from_a_stage():
    nll, score = _pool()
    with pytest.raises(OptionError, match="unknown ties rule"):
        screen(nll, score, ties="dense")
    with pytest.raises(InputError, match="not in the performance"):
        screen(nll, score.isel(model=slice(1, None)))
    with pytest.raises(PlanError, match="screen needs at least"):
        screen(nll, score, run=RunSpec.build(memory_limit="100MiB"))


def test_too_many_models_is_refused_before_any_work():
    """Past the kernels' exactness bound (200 models) the stage refuses with a user error, not a traceback."""
    m = 201
    rng = np.random.default_rng(1)
    models = [f"m{i}" for i in range(m)]
    nll = xr.DataArray(rng.normal(size=(m, 50)).astype(np.float32), dims=("model", "token"), coords={"model": models})
    score = xr.DataArray(rng.normal(size=(m, 2)), dims=("model", "benchmark"), coords={"model": models, "benchmark": ["a", "b"]})
    with pytest.raises(InputError, match="201 models; the screening kernels are exact for at most 200"):
        screen(nll, score, run=RunSpec.build(memory_limit="64GiB"))


def test_kernel_errors_become_user_errors_at_the_boundary():
    """A kernel's KernelInputError raised inside a task reaches the caller as one InputError line."""
    nll, score = _pool()
    with pytest.raises(InputError, match="screening kernels refused the input: unknown kernel backend 'nope'") as info:
        screen(nll, score, backend="nope", run=RunSpec.build(scheduler="threads"))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- progress protocol


class Recorder:
    """A Progress that records every bar: description -> (total, advanced)."""

    def __init__(self) -> None:
        self.bars: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    @contextmanager
    def __call__(self, description: str, total: float | None, unit: str = "") -> Iterator[Recorder]:
        self._current = description
        self.bars[description][0] = total or 0.0
        yield self

    def advance(self, n: float = 1) -> None:
        self.bars[self._current][1] += n


def test_stages_report_progress_through_the_protocol(tmp_path):
    nll, score = _pool(d=900)
    rec = Recorder()
    screen(nll.chunk({"token": 300}), score, out=tmp_path / "s.zarr", run=RunSpec.build(progress=rec, memory_limit="1GiB"))
    assert rec.bars["screen (one pass: histograms + tails)"] == [900, 900]
    assert rec.bars["screen merge (count, finalize, write)"] == [7, 7]  # 3 segments x (count, finalize) + write
    screen(nll.chunk({"token": 300}), score, passes=2, run=RunSpec.build(progress=rec, memory_limit="1GiB"))
    assert rec.bars["screen pass 1/2 (histograms)"] == [900, 900]
    assert rec.bars["screen pass 2/2 (tails)"] == [900, 900]
    select_signatures(open_screen(tmp_path / "s.zarr"), score, loocv=False, run=RunSpec.build(progress=rec))
    assert rec.bars["select (aic)"] == [3, 3]


# ----------------------------------------------------------------------------- one runner for every stage


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    nll, score = _pool(m=8, d=1200, B=4, seed=3)
    path = tmp_path_factory.mktemp("runtime") / "s.zarr"
    write_screen(screen(nll.chunk({"token": 400}), score, alpha=0.02), path)
    return open_screen(path), score


def test_select_runs_on_every_scheduler(screened):
    screen_ds, score = screened
    reference = select_signatures(screen_ds, score, run=RunSpec.build(scheduler="threads")).load()
    for scheduler in ("synchronous", "processes"):
        got = select_signatures(screen_ds, score, run=RunSpec.build(scheduler=scheduler)).load()
        xr.testing.assert_identical(got.drop_attrs(), reference.drop_attrs())
        assert got.attrs["scheduler"] == scheduler


def test_select_runs_on_a_local_cluster(screened):
    from distributed import Client, LocalCluster

    screen_ds, score = screened
    reference = select_signatures(screen_ds, score, run=RunSpec.build(scheduler="synchronous", workers=1)).load()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        got = select_signatures(screen_ds, score, run=RunSpec.build(scheduler=client)).load()
    xr.testing.assert_identical(got.drop_attrs(), reference.drop_attrs())


def test_select_refuses_an_unknown_scheduler(screened):
    screen_ds, score = screened
    with pytest.raises(OptionError, match="unknown scheduler"):
        select_signatures(screen_ds, score, run=RunSpec.build(scheduler="xyz"))


# ----------------------------------------------------------------------------- the coefficient dimension


def test_sel_by_coefficient_works_on_the_written_output(screened):
    screen_ds, _ = screened
    b = str(screen_ds["benchmark"].values[1])
    for coef in ("thrush", "preselect"):
        picked = screen_ds.sel(coefficient=coef, benchmark=b)
        assert picked["candidate_token"].dims == ("tail", "rank")
        np.testing.assert_array_equal(
            picked["candidate_token"].values,
            screen_ds["candidate_token"].values[list(screen_ds["coefficient"].values).index(coef), 1],
        )
        assert screen_ds["threshold"].sel(coefficient=coef, benchmark=b, tail="low").size == 1
    assert "method" not in screen_ds.dims and screen_ds.attrs["coefficients"] == ["thrush", "preselect"]


def test_sel_by_coefficient_works_on_null_estimates():
    nll, score = _pool()
    out = screen(nll, score, null_permutations=2)
    fdr = out["null_fdr"].sel(coefficient="preselect", benchmark="b0")
    assert fdr.ndim == 0 and 0.0 <= float(fdr) <= 1.0


def test_selection_kernel_errors_become_user_errors(screened, monkeypatch):
    """The select stage has the same boundary: a kernel refusal inside a task is one InputError line."""
    import bsig_array.stages.select as select_stage
    from bsig_array.kernels.errors import KernelInputError

    def refuse(*args, **kwargs):
        raise KernelInputError("y has shape (3,), expected (8,)")

    monkeypatch.setattr(select_stage, "forward_select", refuse)
    screen_ds, score = screened
    with pytest.raises(InputError, match=r"the selection kernels refused the input: y has shape"):
        select_signatures(screen_ds, score, run=RunSpec.build(scheduler="threads"))


def test_a_dead_worker_process_is_one_line():
    """A worker process killed mid-task (here: it aborts) ends the run with a PlanError, not a traceback."""
    from bsig_array.runtime.tasks import task_runner

    with pytest.raises(PlanError, match="worker process died"), task_runner("processes", 1) as runner:
        list(runner.imap_unordered(os.abort, [()]))


def test_a_task_whose_workers_keep_dying_is_one_line():
    """On dask.distributed, a task that kills every worker it lands on ends as a PlanError (KilledWorker)."""
    import dask
    from distributed import Client, LocalCluster

    from bsig_array.runtime.tasks import task_runner

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        with pytest.raises(PlanError, match="allowed-failures"), task_runner(client, 1) as runner:
            list(runner.imap_unordered(os.abort, [()]))
