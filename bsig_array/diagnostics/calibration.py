"""Calibration: single-worker rates of the stages' kernels on this machine, and the store read probe (``bsig plan``).

:func:`calibrate` times every screening kernel, a forward-selection step and the store's read +
decode path for a few seconds, single-threaded, at the run's own numbers of models and benchmarks;
:func:`~bsig_array.diagnostics.projection.project` scales the rates to a run.  The read probe
(:func:`read_probe`) writes a small synthetic store with the package's own writer and reads it back
through the screen's read path.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from bsig_array import kernels as K
from bsig_array.options import resolve_coefficients
from bsig_array.runtime.defaults import DEFAULTS

#: Candidate columns of the forward-selection calibration.
FORWARD_COLUMNS = 4096
#: Raw bytes of the default read-probe store.
PROBE_BYTES = 32 << 20
#: Items sorted per call in the merge calibration.
SORT_ITEMS = 1 << 20
#: Kernels :func:`calibrate` times (tokens/s, except ``sort``: ids/s).
KERNELS = (
    "read", "ranks", "thrush", "preselect", "both",
    "histogram_thrush", "histogram_preselect", "tails_thrush", "tails_preselect", "sort",
)


@dataclass(frozen=True)
class ReadSample:
    """One timed read of a store: ``tokens`` read and decoded in ``seconds``.

    ``raw_bytes`` / ``stored_bytes`` (the NLL chunk files on disk) give the compression ratio.
    """

    tokens: int
    seconds: float
    raw_bytes: int
    stored_bytes: int


#: ``probe(models, tokens) -> ReadSample``: write a store of that size and time reading it back.
ReadProbe = Callable[[int, int], ReadSample]


@dataclass(frozen=True)
class Calibration:
    """Single-worker rates measured on this machine at the run's models and benchmarks.

    Attributes
    ----------
    models, benchmarks
        The sizes the kernels ran at (their cost per token depends on both).
    block_tokens
        Tokens per kernel call.
    rates
        Items per second of each kernel in :data:`KERNELS` (tokens; ``sort``: token ids).
    forward_setup_s
        Seconds per candidate column to standardize it and start m + 1 fits (LOO-CV).
    forward_step_s
        Seconds per candidate column and forward step, m + 1 fits at once.
    compression
        Raw over stored bytes of the probe store's NLL chunks.
    seconds
        Wall time of the whole calibration.
    machine
        What it ran on.
    """

    models: int
    benchmarks: int
    block_tokens: int
    rates: dict[str, float]
    forward_setup_s: float
    forward_step_s: float
    compression: float
    seconds: float = 0.0
    machine: str = ""



def _rate(fn: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second of ``fn``'s fastest call within ``seconds``, after one warm-up call.

    The fastest call, not the mean: on a shared machine other processes only ever slow a call down
    (numba compiles or loads its cache in the warm-up).
    """
    fn()
    best = math.inf
    t0 = time.perf_counter()
    while True:
        t1 = time.perf_counter()
        fn()
        now = time.perf_counter()
        best = min(best, now - t1)
        if now - t0 >= seconds:
            return items / max(best, 1e-9)


def _forward_costs(m: int, seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    """(setup, step) seconds per candidate column of AIC forward selection with m + 1 fits (LOO-CV).

    Two runs that differ only in their number of steps separate the per-step cost from the
    standardization and start-up every benchmark pays once.
    """
    n = FORWARD_COLUMNS
    X = (rng.gamma(0.8, 2.5, (m, n)) * np.exp(0.3 * rng.standard_normal((m, n)))).astype(np.float32)
    y = rng.integers(0, 500, m) / 500.0
    masks = ~np.eye(m + 1, m, k=-1, dtype=bool)  # row 0: all models; row i: model i - 1 left out

    def run(steps: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        path = K.forward_select(X, y, row_masks=masks, max_features=steps, exponentiate=True)
        return time.perf_counter() - t0, int(path.n_selected.max())

    run(1)  # warm-up: numba cache, BLAS
    few, many = 1, max(1, min(4, m - 2))
    t_few = t_many = math.inf
    s_few = s_many = 0
    t0 = time.perf_counter()
    while math.isinf(t_many) or time.perf_counter() - t0 < seconds:  # fastest of each, as in _rate
        a, s_few = run(few)
        b, s_many = run(many)
        t_few, t_many = min(t_few, a), min(t_many, b)
    if s_many > s_few and t_many > t_few:
        step = (t_many - t_few) / (s_many - s_few)
        setup = max(t_few - s_few * step, 0.0)
    else:  # one step is all m allows, or noise hid the difference: charge everything to the steps
        step, setup = t_many / max(s_many, 1), 0.0
    return setup / n, step / n


def calibrate(
    models: int,
    benchmarks: int,
    coefficients: str | Sequence[str] = "both",
    *,
    read_probe: ReadProbe | None = None,
    alpha: float = DEFAULTS.alpha,
    ties: str = DEFAULTS.ties,
    block_tokens: int = 1 << 12,
    read_tokens: int | None = None,
    seconds: float = 0.1,
    seed: int = DEFAULTS.seed,
) -> Calibration:
    """Measure every kernel's single-worker rate at ``models`` x ``benchmarks``.

    Parameters
    ----------
    models, benchmarks
        The run's sizes: the kernels' cost per token grows with both.
    coefficients
        Accepted for symmetry with :func:`project`; every coefficient's kernels are timed.
    read_probe
        Writes a store of (models, tokens) and times reading it back through the screen's read path
        (default: :func:`read_probe`, the package's writer and ``chunk_sources``).
    alpha, ties
        Tail fraction of the tail-members calibration and the rank ties (defaults: ``DEFAULTS``).
    block_tokens
        Tokens per kernel call.
    read_tokens
        Tokens of the probe store (default: about 32 MiB of float32 NLLs, so per-chunk overheads
        weigh as little as in a real store's 2**20-token chunks).
    seconds
        Timing budget per kernel after its warm-up call.
    seed
        Seed of the synthetic NLLs and scores.

    Returns
    -------
    Calibration
        Rates measured with one numba and one BLAS thread (a single worker).
    """
    import numba
    from threadpoolctl import threadpool_limits

    resolve_coefficients(coefficients)
    m, B, s = int(models), int(benchmarks), int(block_tokens)
    rng = np.random.default_rng(seed)
    # NLL-like values (gamma difficulty x lognormal model noise) and accuracy-like scores with ties
    P = (rng.gamma(0.8, 2.5, (m, s)) * np.exp(0.3 * rng.standard_normal((m, s)))).astype(np.float32)
    Y = rng.integers(0, 500, (B, m)) / 500.0
    ids = np.arange(s, dtype=np.int64)
    k = K.tail_size(alpha, s)
    t_start = time.perf_counter()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # one worker on one core: the projection scales it to N
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            rates = {
                "ranks": _rate(lambda: K.ranks(P, ties), s, seconds),
                "thrush": _rate(lambda: K.thrush_codes(P, Y, ties), s, seconds),
                "preselect": _rate(lambda: K.preselect_codes(P, Y), s, seconds),
                "both": _rate(lambda: K.screen_codes(P, Y, ties), s, seconds),
            }
            codes = K.screen_codes(P, Y, ties)
            for c in ("thrush", "preselect"):
                hist = K.histogram_codes(codes[c], c, m)
                bounds = K.tail_bounds(hist, k, c, m)
                rates[f"histogram_{c}"] = _rate(partial(K.histogram_codes, codes[c], c, m, out=hist), s, seconds)
                rates[f"tails_{c}"] = _rate(partial(K.tail_members, codes[c], ids, bounds), s, seconds)
            members = rng.integers(0, 1 << 40, SORT_ITEMS)
            rates["sort"] = _rate(lambda: K.sorted_unique(members), SORT_ITEMS, seconds)
            setup, step = _forward_costs(m, seconds, rng)
    finally:
        numba.set_num_threads(threads)
    if read_tokens is None:
        read_tokens = max(1 << 12, min(1 << 18, PROBE_BYTES // (4 * m)))
    sample = (read_probe or _store_read_probe)(m, int(read_tokens))
    rates["read"] = sample.tokens / sample.seconds
    return Calibration(
        models=m, benchmarks=B, block_tokens=s, rates={name: float(rates[name]) for name in KERNELS},
        forward_setup_s=float(setup), forward_step_s=float(step),
        compression=sample.raw_bytes / max(sample.stored_bytes, 1), seconds=time.perf_counter() - t_start,
        machine=f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".replace(" ,", ","),
    )



def read_probe(models: int, tokens: int) -> ReadSample:
    """Write a synthetic store (the package's writer) and time reading it back as the screen does.

    Returns the fastest sweep over the chunks, each loaded through ``chunk_sources`` and checked for
    NaN/inf, with Blosc on one thread (one worker).
    """
    import tempfile
    from pathlib import Path

    import numcodecs.blosc

    from bsig_array.io.perplexity_store.chunks import chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.perplexity_store.schema import check_block
    from bsig_array.io.perplexity_store.writer import create_store
    from bsig_array.pipelines.synth import generate_range, make_spec

    with tempfile.TemporaryDirectory(prefix="bsig-plan-") as tmp:
        path = Path(tmp) / "probe.zarr"
        spec = make_spec(models=models, benchmarks=1, tokens=tokens, planted_per_benchmark=0)
        writer = create_store(path, spec.models, tokens, chunk_tokens=max(1, tokens // 2))
        for j in writer.pending():
            sl = writer.chunk_slice(j)
            writer.write_chunk(j, generate_range(spec, sl.start, sl.stop))
        stored = sum(f.stat().st_size for f in (path / "nll").rglob("*") if f.is_file() and f.name != "zarr.json")
        sources = chunk_sources(open_store(path)["nll"], store=path)
        threads = numcodecs.blosc.set_nthreads(1)
        try:
            best, spent, sweeps = float("inf"), 0.0, 0
            while sweeps < 2 or spent < 0.15:  # the first sweep warms the page cache and zarr; keep the fastest
                t0 = time.perf_counter()
                for source in sources:
                    block, _ = source.load()
                    check_block(block, spec.models, source.start, path=str(path))
                elapsed = time.perf_counter() - t0
                if sweeps:
                    best, spent = min(best, elapsed), spent + elapsed
                sweeps += 1
        finally:
            numcodecs.blosc.set_nthreads(threads)
    return ReadSample(tokens=tokens, seconds=best, raw_bytes=models * tokens * 4, stored_bytes=stored)


#: The default probe (:func:`calibrate`'s ``read_probe`` argument shadows the function's name).
_store_read_probe: ReadProbe = read_probe
