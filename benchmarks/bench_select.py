"""Benchmark of ``bsig select`` (AIC forward selection) at the paper's scale, against peers.

Prints:

1. Peer ratio: the vectorized kernel vs a statsmodels refit loop (Algorithm 4 as printed: refit
   every remaining candidate at every step) on a size where the loop finishes, with identical picks.
2. Portable array-API path vs the numba fast path on one paper-scale benchmark.
3. The paper's scale through the real stage: 88 benchmarks × 3.4e5 candidates (top and bottom 1 %
   of 1.69e7) × 32 models, without LOO-CV (target ≤ 2 minutes on this machine), and LOO-CV time per
   benchmark measured on a few benchmarks (extrapolated to 88 and labelled as such).
4. Peak RSS of the process (``VmHWM``, see ``bsig_array.runtime.memory.peak_rss``).
5. Selection at scale: one benchmark with 1e7 candidates x 32 models (1.28 GB of float32 columns)
   streamed from a screen store on disk through the real stage at ``--memory-limit 2GiB``, in a
   fresh process whose peak RSS is reported against the limit: without LOO-CV (the whole path,
   m − 2 steps), then with LOO-CV and a short path (``--max-features 2``: the 33 fits run 16 per
   pass with their state spilled to disk).

Data are random float32 NLLs generated in memory (the benchmarks share one candidate block, each with
its own planted scores), so only selection is timed; the at-scale store is written chunk by chunk.
Usage::

    python benchmarks/bench_select.py            # full run
    python benchmarks/bench_select.py --quick    # 8 benchmarks x 5e4 candidates
    python benchmarks/bench_select.py --at-scale-only [--candidates 1e7 --scale-limit 2GiB]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import statsmodels.api as sm
import xarray as xr
from threadpoolctl import threadpool_limits

from bsig_array.kernels.forward import forward_select
from bsig_array.runtime.memory import peak_rss
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.select import select_benchmark, select_signatures


def peak_rss_mib() -> float:
    return peak_rss() / 2**20


def statsmodels_forward(X: np.ndarray, y: np.ndarray, steps: int) -> list[int]:
    """Literal Algorithm 4: every remaining candidate refit with statsmodels OLS at every step."""
    chosen: list[int] = []
    current = sm.OLS(y, np.ones((y.size, 1))).fit().aic
    for _ in range(steps):
        best, best_aic = -1, np.inf
        for j in range(X.shape[1]):
            if j in chosen:
                continue
            aic = sm.OLS(y, sm.add_constant(X[:, chosen + [j]], has_constant="add")).fit().aic
            if aic < best_aic:
                best, best_aic = j, aic
        if not best_aic < current:
            break
        chosen.append(best)
        current = best_aic
    return chosen


def planted_scores(nll: np.ndarray, rng: np.random.Generator, n_bench: int) -> np.ndarray:
    m, n = nll.shape
    scores = np.empty((m, n_bench))
    for b in range(n_bench):
        cols = rng.choice(n, size=5, replace=False)
        scores[:, b] = planted_scores_from(np.exp(nll[:, cols].astype(np.float64)), rng)
    return scores


def planted_scores_from(ppl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scores = standardized perplexities of the planted columns ``ppl`` (m, 5) x random weights + noise."""
    ppl = (ppl - ppl.mean(axis=0)) / ppl.std(axis=0)
    return ppl @ rng.normal(size=ppl.shape[1]) + 0.5 * rng.normal(size=ppl.shape[0])


def peer_comparison(m: int, n: int, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    nll = rng.uniform(1.0, 4.0, size=(m, n)).astype(np.float32)
    y = planted_scores(nll, rng, 1)[:, 0]
    X = np.exp(nll.astype(np.float64))
    t0 = time.process_time()  # CPU time: wall clock is noisy on a shared machine
    ref = statsmodels_forward(X, y, steps)
    t_sm = time.process_time() - t0
    forward_select(nll[:, :10], y, max_features=1)  # numba compile outside the timing
    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.process_time()
        for _ in range(10):
            ours = select_benchmark(nll, y, max_features=steps, loocv=False)
        t_ours = (time.process_time() - t0) / 10
    same = list(ours.columns) == ref
    print(f"[peer] {m} models x {n} candidates x {len(ref)} steps (CPU time): statsmodels loop {t_sm:.2f} s, "
          f"bsig {t_ours * 1e3:.1f} ms -> speed-up {t_sm / t_ours:,.0f}x; identical selections: {same}")
    if not same:
        raise SystemExit("selections differ from the statsmodels loop")


def backend_comparison(m: int, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    nll = rng.uniform(1.0, 4.0, size=(m, n)).astype(np.float32)
    y = planted_scores(nll, rng, 1)[:, 0]
    times = {}
    paths = {}
    for backend in ("numpy", "numba"):
        forward_select(nll[:, :10], y, backend=backend)
        with threadpool_limits(limits=1, user_api="blas"):  # as the stage runs it
            t0 = time.process_time()
            paths[backend] = forward_select(nll, y, exponentiate=True, backend=backend)
            times[backend] = time.process_time() - t0
    same = np.array_equal(paths["numpy"].selected, paths["numba"].selected)
    print(f"[backend] 1 benchmark x {n} candidates x {m} models, {int(paths['numba'].n_selected[0])} steps: "
          f"CPU portable {times['numpy']:.2f} s, numba {times['numba']:.2f} s -> numba/portable speed "
          f"{times['numpy'] / times['numba']:.2f}x; identical: {same}")


def paper_scale(m: int, n: int, n_bench: int, loo_bench: int, memory_limit: str, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    nll = rng.uniform(1.0, 4.0, size=(m, n)).astype(np.float32)
    scores = planted_scores(nll, rng, n_bench)
    models = [f"m{i:02d}" for i in range(m)]
    benchmarks = [f"b{i:02d}" for i in range(n_bench)]
    tokens = np.arange(n, dtype=np.int64)
    half = n // 2
    cand = np.broadcast_to(np.stack([tokens[:half], tokens[half : 2 * half]])[None, None],
                           (1, n_bench, 2, half))
    screen = xr.Dataset(
        {"candidate_token": (("coefficient", "benchmark", "tail", "rank"), cand),
         "candidate_nll": (("model", "candidate"), nll)},
        coords={"coefficient": ["thrush"], "benchmark": benchmarks, "tail": ["low", "high"], "model": models,
                "candidate": tokens},
    )
    score = xr.DataArray(scores, dims=("model", "benchmark"), coords={"model": models, "benchmark": benchmarks})
    forward_select(nll[:, :10], scores[:, 0])  # compile outside the timing
    rss0 = peak_rss_mib()
    wall, cpu = time.perf_counter(), time.process_time()
    sig = select_signatures(screen, score, loocv=False, run=RunSpec.build(memory_limit=memory_limit))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"[paper scale] {n_bench} benchmarks x {2 * half} candidates x {m} models, no LOO-CV: wall {wall:.1f} s "
          f"(target <= 120 s: {'met' if wall <= 120 else 'NOT met'}), CPU {cpu:.1f} s = {cpu / n_bench:.2f} s/benchmark "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
          f"signature sizes {int(sig['n_selected'].min())}-{int(sig['n_selected'].max())}; "
          f"plan: {sig.attrs['plan']}; peak RSS {peak_rss_mib():.0f} MiB (before: {rss0:.0f} MiB)")
    if loo_bench:
        sub = screen.isel(benchmark=slice(0, loo_bench))
        wall, cpu = time.perf_counter(), time.process_time()
        sig = select_signatures(sub, score.isel(benchmark=slice(0, loo_bench)), loocv=True, run=RunSpec.build(memory_limit=memory_limit))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"[paper scale] with LOO-CV ({m} extra selections per benchmark), measured on {loo_bench}: "
              f"wall {wall / loo_bench:.2f} s/benchmark, CPU {cpu / loo_bench:.2f} s/benchmark; extrapolated to "
              f"{n_bench}: CPU {cpu / loo_bench * n_bench:.0f} s; median loocv_r2 {float(sig['loocv_r2'].median()):.3f} "
              f"vs r2_adj {float(sig['r2_adj'].median()):.3f}; peak RSS {peak_rss_mib():.0f} MiB")


def _scale_chunk(i: int, m: int, width: int) -> np.ndarray:
    """NLLs of candidate chunk ``i`` of the at-scale store (seeded per chunk: regenerated on demand)."""
    return np.random.default_rng([11, i]).uniform(1.0, 4.0, size=(m, width)).astype(np.float32)


def write_scale_screen(path: str, m: int, n: int) -> np.ndarray:
    """A screen store with one benchmark whose two tails hold ``n`` candidates, written chunk by chunk
    (a lazy dask array, so this process never holds the columns); returns scores planted on five of them."""
    import dask
    import dask.array as da

    from bsig_array.io.screen_output import CANDIDATE_CHUNK, build_screen, write_screen

    widths = [min(CANDIDATE_CHUNK, n - a) for a in range(0, n, CANDIDATE_CHUNK)]
    nll = da.concatenate(
        [da.from_delayed(dask.delayed(_scale_chunk)(i, m, w), (m, w), np.float32) for i, w in enumerate(widths)],
        axis=1,
    )
    half = n // 2
    token = np.arange(2 * half, dtype=np.int64).reshape(1, 1, 2, half)
    ds = build_screen(
        models=[f"m{i:02d}" for i in range(m)], benchmark_coords={"benchmark": xr.DataArray(["b0"])},
        coefficients=["thrush"], token=token, score=np.zeros(token.shape), threshold=np.zeros((1, 1, 2)),
        histograms={"thrush": (np.zeros(1), np.array([[n]]))}, candidate=np.arange(2 * half, dtype=np.int64),
        candidate_nll=nll[:, : 2 * half],
    )
    write_screen(ds, path)
    first = _scale_chunk(0, m, widths[0])
    cols = [0, 1000, 20_000, 40_000, widths[0] - 1]
    return planted_scores_from(np.exp(first[:, cols].astype(np.float64)), np.random.default_rng(5))


SCALE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, xarray as xr
    from bsig_array.io.screen_output import open_screen
    from bsig_array.runtime.memory import peak_rss
    from bsig_array.runtime.run import RunSpec
    from bsig_array.stages.select import select_signatures
    path, limit, loocv, max_features = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
    y = np.load(sys.argv[5])
    screen = open_screen(path)
    models = [str(v) for v in screen["model"].values]
    score = xr.DataArray(y[:, None], dims=("model", "benchmark"), coords={"model": models, "benchmark": ["b0"]})
    wall, cpu = time.perf_counter(), time.process_time()
    sig = select_signatures(screen, score, loocv=loocv, run=RunSpec.build(memory_limit=limit),
                            max_features=max_features if max_features > 0 else None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak_rss(), "plan": sig.attrs["plan"],
                      "n_selected": int(sig["n_selected"].values[0]), "n_candidates": int(sig["n_candidates"].values[0]),
                      "loocv_r2": float(sig["loocv_r2"].values[0])}))
    """
)


def at_scale(n: int, memory_limit: str, m: int = 32) -> None:
    """One benchmark of ``n`` candidates streamed from disk at ``memory_limit``; each run in a fresh process."""
    from bsig_array.options import parse_memory

    limit = parse_memory(memory_limit)
    with tempfile.TemporaryDirectory(prefix="bsig-bench-select-") as tmp:
        t0 = time.perf_counter()
        y = write_scale_screen(os.path.join(tmp, "s.zarr"), m, n)
        np.save(os.path.join(tmp, "y.npy"), y)
        print(f"[at scale] wrote a screen store of 1 benchmark x {n:.2e} candidates x {m} models "
              f"({4 * m * n / 2**30:.2f} GiB of float32 columns) in {time.perf_counter() - t0:.0f} s")
        for loocv, max_features in ((False, 0), (True, 2)):
            done = subprocess.run(
                [sys.executable, "-c", SCALE_CHILD, os.path.join(tmp, "s.zarr"), memory_limit, str(int(loocv)),
                 str(max_features), os.path.join(tmp, "y.npy")],
                capture_output=True, text=True,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            what = "with LOO-CV, --max-features 2" if loocv else "no LOO-CV, full path"
            loo = f", loocv_r2 {r['loocv_r2']:.3f}" if loocv else ""
            within = "within" if r["peak"] <= limit else "OVER"
            print(f"[at scale] {r['n_candidates']:.2e} candidates x {m} models, {what}: wall {r['wall']:.0f} s, "
                  f"CPU {r['cpu']:.0f} s, {r['n_selected']} tokens selected{loo}; peak RSS {r['peak'] / 2**20:.0f} MiB "
                  f"of --memory-limit {memory_limit} ({within}); plan: {r['plan']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 benchmarks x 5e4 candidates")
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--at-scale-only", action="store_true", help="only the at-scale run (5.)")
    parser.add_argument("--candidates", type=float, default=1e7, help="candidates of the at-scale benchmark")
    parser.add_argument("--scale-limit", default="2GiB", help="--memory-limit of the at-scale run")
    args = parser.parse_args()
    m = 32
    if not args.at_scale_only:
        n, n_bench, loo_bench = (50_000, 8, 2) if args.quick else (340_000, 88, 4)
        peer_comparison(m, 2000 if not args.quick else 500, steps=3)
        backend_comparison(m, n)
        paper_scale(m, n, n_bench, loo_bench, args.memory_limit)
    if args.at_scale_only or not args.quick:
        at_scale(int(args.candidates), args.scale_limit, m)


if __name__ == "__main__":
    main()
