"""Scale-out under faults: screen and select on a dask.distributed LocalCluster of two worker
processes give exactly the threaded result, also when a worker process is killed (SIGKILL) while it
runs one of the stage's tasks.

The kill comes from a worker plugin: when a task of the chosen kind starts executing on a worker,
the worker kills its own process at once or, when watching a spill, as soon as spill files exist
while that task is still executing (in the middle of writing its own); once per test (an
``O_EXCL`` marker file makes it once across processes).  The nanny
starts a new worker, the scheduler reschedules the task (``distributed.scheduler.allowed-failures``,
default 3), and the rerun must overwrite whatever the killed attempt had written to the spill.
The scheduler's event log proves that a worker died holding a task of that kind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from distributed.diagnostics.plugin import WorkerPlugin

from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.io.screen_output import open_screen
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen.driver import screen
from bsig_array.stages.select import select_signatures

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

M, B, CHUNK, CHUNKS = 12, 6, 40_000, 6
MODELS = [f"m{i}" for i in range(M)]


class KillDuringTask(WorkerPlugin):
    """Worker plugin: SIGKILL this worker while it runs a task of ``function`` (the task's own
    function, or the one the stage's ``_indexed`` wrapper calls): at once, or with ``spill_parent``
    as soon as a spill under it holds files while the task still runs."""

    def __init__(self, function: str, marker: str, spill_parent: str | None = None) -> None:
        self.function, self.marker, self.spill_parent = function, marker, spill_parent

    def setup(self, worker) -> None:
        self.worker = worker

    def teardown(self, worker) -> None:
        pass

    def transition(self, key, start, finish, **kwargs) -> None:
        from dask.utils import key_split

        if finish != "executing" or os.path.exists(self.marker):
            return
        args = getattr(self.worker.state.tasks[key].run_spec, "args", ()) or (None,)
        if self.function not in (key_split(key), getattr(args[0], "__name__", None)):
            return

        def spilled() -> list[str]:
            return [f for d, _, files in os.walk(self.spill_parent or os.devnull) if "spill" in d for f in files]

        def running() -> bool:
            return key in {ts.key for ts in list(self.worker.state.executing)}

        def kill() -> None:
            while self.spill_parent and running() and not spilled():
                time.sleep(0.001)
            if not running():
                return  # finished already: arm again on the next task
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(len(spilled())).encode())  # spill files present when the worker died
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        if self.spill_parent:
            threading.Thread(target=kill, daemon=True).start()
        else:
            kill()


def died_holding(client, prefix: str) -> list[str]:
    """Keys of ``prefix`` tasks that were processing on a worker when it died (scheduler event log)."""
    from dask.utils import key_split

    keys = []
    for _, events in client.get_events().items():
        for _, event in events:
            if isinstance(event, dict) and event.get("action") == "remove-worker" and not event.get("expected"):
                keys += [str(k) for k in event.get("processing-tasks", ()) if key_split(k) == prefix]
    return keys


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(11)
    ability = rng.normal(size=M)
    P = np.abs(rng.normal(3.0, 1.0, size=(M, CHUNK * CHUNKS)) - 0.3 * ability[:, None]).astype("float32")
    P[:, ::7] = np.round(P[:, ::7], 1)  # ties
    writer = create_store(root / "p.zarr", MODELS, P.shape[1], chunk_tokens=CHUNK, with_doc_piece=False)
    for j in writer.pending():
        writer.write_chunk(j, P[:, writer.chunk_slice(j)])
    Y = np.round(rng.random((M, B)) + ability[:, None], 2)
    score = xr.DataArray(Y, dims=("model", "benchmark"), coords={"model": MODELS, "benchmark": [f"b{b}" for b in range(B)]})
    nll = open_store(root / "p.zarr")["nll"]
    reference = screen(nll, score, alpha=0.005, store=root / "p.zarr", out=root / "ref" / "s.zarr", run=RunSpec.build(scheduler="threads", workers=2))
    return {"root": root, "store": root / "p.zarr", "score": score, "reference": reference}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def assert_same_screen(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    np.testing.assert_array_equal(a["candidate"].values, b["candidate"].values)


def run_screen(pool, client, out: Path) -> xr.Dataset:
    nll = open_store(pool["store"])["nll"]
    return screen(nll, pool["score"], alpha=0.005, store=pool["store"], out=out, run=RunSpec.build(scheduler=client))


def test_screen_on_two_worker_processes_matches_threads(pool, client, tmp_path):
    out = run_screen(pool, client, tmp_path / "s.zarr")
    assert_same_screen(pool["reference"], out)


# the pass (killed while it writes a chunk's spill) and the merge (a segment's kept members)
@pytest.mark.parametrize(("function", "prefix"), [("scan_task", "scan_task"), ("finalize_task", "indexed")])
def test_screen_survives_a_worker_killed_mid_task(pool, client, tmp_path, function, prefix):
    marker = tmp_path / "killed"
    watch = str(tmp_path / "out") if function == "scan_task" else None
    client.register_plugin(KillDuringTask(function, str(marker), watch), name=f"kill-{function}")
    try:
        out = run_screen(pool, client, tmp_path / "out" / "s.zarr")
    finally:
        client.unregister_worker_plugin(f"kill-{function}")
    assert marker.exists(), "no worker was killed"
    assert died_holding(client, prefix), f"the killed worker held no {function} task"
    if watch:
        assert int(marker.read_text()) > 0, "the spill held nothing yet when the worker died"
    assert_same_screen(pool["reference"], out)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s.zarr"]  # no spill or temporary left
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_select_survives_a_worker_killed_mid_task(pool, client, tmp_path):
    screened = open_screen(pool["reference"].encoding.get("source") or pool["root"] / "ref" / "s.zarr")
    kwargs = dict(method="aic", screen_method="thrush", loocv=True)
    expected = select_signatures(screened, pool["score"], **kwargs, run=RunSpec.build(scheduler="threads", seed=3))
    marker = tmp_path / "killed"
    client.register_plugin(KillDuringTask("select_task", str(marker)), name="kill-select")
    try:
        got = select_signatures(screened, pool["score"], **kwargs, run=RunSpec.build(scheduler=client, seed=3))
    finally:
        client.unregister_worker_plugin("kill-select")
    assert marker.exists() and died_holding(client, "select_task")
    for name in expected.data_vars:
        np.testing.assert_array_equal(expected[name].values, got[name].values, err_msg=name)
    client.wait_for_workers(2, timeout=60)
