"""In-process histogram sums of a screen pass (bsig_array/stages/screen/accumulate.py)."""

from __future__ import annotations

import pickle
import sys
import threading

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from test_screen import make_nll

from bsig_array import kernels as K
from bsig_array.io.perplexity_store.chunks import chunk_sources
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen import accumulate
from bsig_array.stages.screen.driver import permuted_scores
from bsig_array.stages.screen.tasks import ScreenJob, scan_task


def test_concurrent_adds_are_whole_chunks_to_every_reader() -> None:
    """Threads add chunks of two coefficients while a reader reads: each read holds the same whole
    chunks in every row of both, and the final sums are the exact total."""
    rng = np.random.default_rng(0)
    B, bins, width, n_chunks = 6, 50, 40, 200
    chunks = [np.stack([np.bincount(rng.integers(0, bins, width), minlength=bins) for _ in range(B)])
              for _ in range(n_chunks)]
    seen: list[list[np.ndarray]] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, between the per-coefficient adds too
    try:
        with accumulate.PassHistograms() as sums:
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set():
                    seen.append(list(sums.read(lambda _, h: h.sum(axis=1).copy()).values()))

            def writer(part: list[np.ndarray]) -> None:
                for h in part:
                    sums.add({"thrush": h.astype(np.int64), "preselect": h[::-1].astype(np.int64)})

            r = threading.Thread(target=reader)
            r.start()
            ws = [threading.Thread(target=writer, args=(chunks[i::4],)) for i in range(4)]
            for w in ws:
                w.start()
            for w in ws:
                w.join()
            stop.set()
            r.join()
            total = sums.host()
            assert sums.chunks == n_chunks
    finally:
        sys.setswitchinterval(interval)
    np.testing.assert_array_equal(total["thrush"], np.sum(chunks, axis=0))
    np.testing.assert_array_equal(total["preselect"], np.sum(chunks, axis=0)[::-1])
    assert seen
    for read in seen:
        assert len(read) in (0, 2)
        if read:
            rows = np.concatenate(read)
            assert (rows == rows[0]).all() and rows[0] % width == 0
    with pytest.raises(RuntimeError, match="closed pass"):  # closed with the pass
        sums.add({"thrush": chunks[0]})
    with pytest.raises(TypeError, match="cannot leave this process"):  # never shipped to another process
        pickle.dumps(sums)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 6), st.integers(2, 90), st.integers(1, 3), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_scan_task_adds_in_process_exactly_what_it_would_return(m: int, d: int, B: int, chunk: int, seed: int) -> None:
    """A task given the pass's sums adds (and does not return) exactly the histograms it would return;
    its job and result pickle (process pools, dask.distributed)."""
    rng = np.random.default_rng(seed)
    P = rng.integers(0, 4, size=(m, d)).astype("float32")  # heavy ties
    Y = rng.integers(0, 3, size=(B, m)).astype(float)
    Y[:, 0] = 3.0
    nll = make_nll(P).chunk({"token": chunk})
    job = ScreenJob(coefficients=("thrush", "preselect"), Y=Y, Y_null=permuted_scores(Y, 0, 0), ties="average",
                    block_tokens=7, backend="numba", models=tuple(nll["model"].values), path="p",
                    k=K.tail_size(0.1, d), n_tokens=d, collect=False)
    sources = chunk_sources(nll)
    results = [scan_task(src, job) for src in sources]
    job_back, results_back = pickle.loads(pickle.dumps((job, results)))
    assert job_back.k == job.k and [r.span for r in results_back] == [r.span for r in results]
    returned = [r.hist for r in results]
    with accumulate.PassHistograms() as sums:
        for src in sources:
            assert not scan_task(src, job, sums).hist
        added = sums.host()
        assert sums.chunks == len(sources)
    for coef in job.coefficients:
        np.testing.assert_array_equal(added[coef], np.sum([r[coef] for r in returned], axis=0))
        assert added[coef].sum(axis=1).tolist() == [d] * B


def test_the_driver_sums_in_process_and_folds_what_other_schedulers_return(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads add every chunk once to the pass's sums; a dask.distributed client (whose workers
    here share this process) gets the histograms returned; both screens are identical."""
    from distributed import Client, LocalCluster
    from test_screen import make_score

    from bsig_array.stages.screen.driver import screen

    rng = np.random.default_rng(4)
    m, d, B = 5, 300, 3
    P = rng.integers(0, 4, size=(m, d)).astype("float32")
    Y = rng.integers(0, 3, size=(B, m)).astype(float)
    Y[:, 0] = 3.0
    nll, score = make_nll(P).chunk({"token": 64}), make_score(Y, [f"m{i}" for i in range(m)])
    added: list[int] = []
    real_add = accumulate.PassHistograms.add
    monkeypatch.setattr(accumulate.PassHistograms, "add", lambda sums, hist: (added.append(1), real_add(sums, hist))[1])
    threads = screen(nll, score, alpha=0.05, passes=2, run=RunSpec.build(scheduler="threads", workers=2))
    assert len(added) == 5  # pass 1 counts every chunk once; pass 2 does not count
    added.clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        returned = screen(nll, score, alpha=0.05, passes=2, run=RunSpec.build(scheduler=client))
    assert not added
    xr.testing.assert_identical(threads.drop_attrs(), returned.drop_attrs())
