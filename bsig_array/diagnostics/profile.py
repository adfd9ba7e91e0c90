"""Kernel profile (``bsig profile``): each kernel's rate against this machine's limits.

:func:`profile_kernels` times each step of the screen and of selection on one synthetic chunk:
read + decode of a real Zarr chunk (written to a temporary store with the package's writer), ranks,
Thrush codes, Pre-select codes, both at once, histograms, the tail test against running
boundaries, and one forward-selection step.  Each kernel gets tokens/s, bytes/s and operations/s
from the stages' stated per-token cost models (:data:`COST`: the screen's
:func:`~bsig_array.stages.screen.cost.kernel_token_costs`, selection's
:func:`~bsig_array.stages.select_cost.forward_step_cost`), and its share of this machine's limit: the
larger of bytes/s over the measured memory bandwidth (a multi-threaded numpy copy) and operations/s
over the measured compare-and-add throughput (a vectorized numba loop on L1-resident data, all
threads).  A share near 1 means the kernel runs at the machine's limit; a small one shows where the
next optimisation is.  On the CPU each kernel's wall and CPU time are the fastest of a few calls; on
a GPU (``device="gpu"``) CUDA events time the copy of the chunk from a pinned host buffer and the
fused kernels of :mod:`bsig_array.kernels.cuda_fused` against the measured device copy bandwidth and
the stated H200 FP32 rate (:mod:`.devices`), and the forward step runs on the device (its CPU time
is listed beside it).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numba
import numpy as np

from bsig_array import kernels as K
from bsig_array.diagnostics.devices import H200
from bsig_array.errors import OptionError
from bsig_array.options import check_choice, check_count
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.device import resolve_device
from bsig_array.runtime.run import RunSpec
from bsig_array.schema import TIES
from bsig_array.stages.screen.cost import kernel_token_costs
from bsig_array.stages.select_cost import forward_step_cost

MEMORY_LIMIT_HOW = "memory bandwidth: fastest multi-threaded numpy copy of 128 MiB (bytes read + written)"
OPS_LIMIT_HOW = ("op rate: fastest compare-and-accumulate loop (the ranks kernel's inner loop alone, numba, "
                 "L1-resident float32, all threads)")


def _cost(m: int, B: int, itemsize: int) -> dict[str, tuple[float, float]]:
    """(bytes, operations) per token of each profiled kernel, from the stages' cost models: the
    screen's kernels per token, selection's forward step per candidate column."""
    step = forward_step_cost(m)
    # on a GPU run the CPU step is listed beside the device's, for comparison
    return {**kernel_token_costs(m, B, itemsize), "forward step": step, "forward step (host)": step}


COST = _cost  # the cost model, exported for the docs and tests


@dataclass(frozen=True)
class KernelTiming:
    """One kernel's fastest call and what it achieved against the machine's limits."""

    kernel: str
    tokens: int
    wall_s: float
    cpu_s: float | None  # None on the GPU (CUDA events time the device only)
    bytes_per_token: float
    ops_per_token: float
    memory_bytes_per_s: float
    ops_per_s_limit: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.wall_s, 1e-12)

    @property
    def bytes_per_s(self) -> float:
        return self.tokens_per_s * self.bytes_per_token

    @property
    def ops_per_s(self) -> float:
        return self.tokens_per_s * self.ops_per_token

    @property
    def limit(self) -> str:
        """The resource this kernel is closest to exhausting."""
        return "memory" if self.bytes_per_s / self.memory_bytes_per_s >= self.ops_per_s / self.ops_per_s_limit else "ops"

    @property
    def share(self) -> float:
        """Achieved rate of :attr:`limit` over the machine's rate of it."""
        return max(self.bytes_per_s / self.memory_bytes_per_s, self.ops_per_s / self.ops_per_s_limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel, "tokens": self.tokens, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
            "tokens_per_s": self.tokens_per_s, "bytes_per_s": self.bytes_per_s, "ops_per_s": self.ops_per_s,
            "limit": self.limit, "share_of_limit": self.share,
        }


@dataclass(frozen=True)
class KernelProfile:
    """:func:`profile_kernels`' result."""

    device: str
    machine: str
    models: int
    benchmarks: int
    tokens: int
    ties: str
    threads: int
    memory_bytes_per_s: float
    ops_per_s: float
    limits: tuple[str, str]
    kernels: tuple[KernelTiming, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["limits"] = {"memory_bytes_per_s": self.memory_bytes_per_s, "ops_per_s": self.ops_per_s,
                         "how": list(self.limits)}
        del out["memory_bytes_per_s"], out["ops_per_s"]
        out["kernels"] = [k.to_dict() for k in self.kernels]
        return out


# ----------------------------------------------------------------------------- machine limits


_T = 128  # tokens per inner loop, as in the numba kernels


@numba.njit(cache=True, inline="always")
def _compare_block(key, acc, reps):  # pragma: no cover - compiled
    m = key.shape[0]
    for _ in range(reps):
        for a in range(m):
            for b in range(m):
                for t in range(_T):
                    acc[t] += np.int32(key[b, t] < key[a, t])


@numba.njit(parallel=True, cache=True)
def _op_loop(x, reps):  # pragma: no cover - compiled
    """The ranks kernel's inner loop alone: ``acc[t] += key[b, t] < key[a, t]`` over an L1-resident
    (m, _T) block per thread (a 2-D local copy, so LLVM vectorizes it); 2 operations per element."""
    total = np.zeros(x.shape[0], np.int64)
    for p in numba.prange(x.shape[0]):
        acc = np.zeros(_T, np.int32)
        _compare_block(x[p].copy(), acc, reps)
        total[p] = acc.sum()
    return total


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn``'s fastest call after one warm-up (others only slow a call down)."""
    fn()
    best, cpu = math.inf, 0.0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best:
            best, cpu = w, c
    return best, cpu


def cpu_limits(threads: int, repeat: int = 3) -> tuple[float, float]:
    """(memory bytes/s, ops/s) of this machine on ``threads`` threads, measured (see the module doc)."""
    src = np.ones(32 * 2**20, dtype=np.float32)  # 128 MiB: far beyond the caches
    dst = np.empty_like(src)
    parts = np.linspace(0, src.size, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        def copy() -> None:  # numpy releases the GIL while copying
            list(pool.map(lambda i: np.copyto(dst[parts[i]:parts[i + 1]], src[parts[i]:parts[i + 1]]), range(threads)))

        wall, _ = _best(copy, repeat)
    bandwidth = 2 * src.nbytes / wall
    m, reps = 16, 2000
    x = np.random.default_rng(0).random((threads, m, _T), dtype=np.float32)
    wall, _ = _best(lambda: _op_loop(x, reps), repeat)
    return bandwidth, 2.0 * threads * reps * m * m * _T / wall


# ----------------------------------------------------------------------------- the profile


def synthetic_chunk(m: int, n: int, B: int, seed: int = DEFAULTS.seed) -> tuple[np.ndarray, np.ndarray]:
    """NLL-like float16 ``P`` (m, n) (gamma difficulty x lognormal model noise) and scores ``Y`` (B, m) with ties."""
    rng = np.random.default_rng(seed)
    P = (rng.gamma(0.8, 2.5, (m, n)) * np.exp(0.3 * rng.standard_normal((m, n)))).astype(np.float16)
    return P, rng.integers(0, 500, (B, m)) / 500.0


def _read_decode(P: np.ndarray, tmp: str) -> Callable[[], object]:
    """Write ``P`` as one chunk of a real store; a call reads and decodes it as the screen does."""
    from bsig_array.io.perplexity_store.chunks import chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.perplexity_store.schema import check_block
    from bsig_array.io.perplexity_store.writer import create_store

    models = [f"m{i}" for i in range(P.shape[0])]
    path = Path(tmp) / "profile.zarr"
    writer = create_store(path, models, P.shape[1], chunk_tokens=P.shape[1], dtype=str(P.dtype))
    writer.write_chunk(0, P)
    source = chunk_sources(open_store(path)["nll"], store=path)[0]

    def read() -> None:
        block, _ = source.load()
        check_block(block, models, source.start, path=str(path))

    return read


def profile_kernels(
    *, tokens: int = 1 << 16, models: int = 32, benchmarks: int = 88,
    ties: str = DEFAULTS.ties, alpha: float = DEFAULTS.alpha, repeat: int = 3, run: RunSpec | None = None,
) -> KernelProfile:
    """Time every screening kernel and one forward-selection step on a synthetic chunk.

    Parameters
    ----------
    tokens, models, benchmarks
        Size of the chunk (m models x tokens) and of the score table (B x m).
    ties
        Rank ties of the Thrush kernels.
    alpha
        Tail fraction of the tail test's boundaries.
    repeat
        Timed calls per kernel after a warm-up; the fastest counts.
    run
        The run's settings (:class:`~bsig_array.runtime.run.RunSpec`): its ``device`` (``gpu`` needs
        CuPy and a CUDA GPU, :func:`~bsig_array.runtime.device.resolve_device`) and the ``seed`` of the
        synthetic NLLs and scores.

    Returns
    -------
    KernelProfile
    """
    run = RunSpec.build() if run is None else run
    device, seed = resolve_device(run.device), run.seed
    n = check_count(tokens, "--tokens", minimum=64)
    m = check_count(models, "--models", minimum=2)
    B = check_count(benchmarks, "--benchmarks", minimum=1)
    check_choice(ties, TIES, "ties rule")
    if m > K.MAX_MODELS:
        raise OptionError(f"--models must be at most {K.MAX_MODELS} (the kernels' exact range), got {m}")
    P, Y = synthetic_chunk(m, n, B, seed)
    threads = numba.get_num_threads()
    cost = _cost(m, B, P.dtype.itemsize)
    with tempfile.TemporaryDirectory(prefix="bsig-profile-") as tmp:
        read = _read_decode(P, tmp)
        if device == "gpu":  # pragma: no cover - needs a GPU
            times, memory, ops, limits = _gpu_times(P, Y, ties, alpha, repeat, read)
        else:
            memory, ops = cpu_limits(threads, repeat)
            times, limits = _cpu_times(P, Y, ties, alpha, repeat, read), (MEMORY_LIMIT_HOW, OPS_LIMIT_HOW)
    link = {"host to device": H200.link_bytes_per_s}  # bound by the host link (stated), not device memory
    rows = tuple(
        KernelTiming(name, count, wall, cpu, cost[name][0], cost[name][1], link.get(name, memory), ops)
        for name, (count, wall, cpu) in times.items()
    )
    machine = f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".replace(" ,", ",")
    return KernelProfile(device=device, machine=machine, models=m, benchmarks=B, tokens=n, ties=ties, threads=threads,
                         memory_bytes_per_s=memory, ops_per_s=ops, limits=limits, kernels=rows)


def _codes_and_bounds(P: Any, Y: np.ndarray, ties: str, alpha: float, backend: str) -> tuple[dict, dict, dict]:
    m, n = P.shape
    codes = K.screen_codes(P, Y, ties, backend=backend)
    hist = {c: K.histogram_codes(codes[c], c, m, backend=backend) for c in codes}
    bounds = {c: K.tail_bounds(hist[c], K.tail_size(alpha, n), c, m) for c in codes}
    return codes, hist, bounds


def _forward_step(m: int, n: int, seed: int, xp: Any = None) -> tuple[int, Callable[[], object]]:
    """One AIC forward-selection step with leave-one-out fits on ``n`` candidate columns.

    With ``xp`` (CuPy) the arrays live on the device and the step's candidate update runs as the
    CUDA kernels of :mod:`bsig_array.kernels.cuda_forward`, as ``bsig select --device gpu`` runs it.
    """
    rng = np.random.default_rng(seed)
    X = (rng.gamma(0.8, 2.5, (m, n)) * np.exp(0.3 * rng.standard_normal((m, n)))).astype(np.float32)
    y = rng.integers(0, 500, m) / 500.0
    masks = ~np.eye(m + 1, m, k=-1, dtype=bool)  # row 0: all models; row i: model i - 1 left out
    kwargs: dict[str, Any] = {}
    if xp is not None:
        X, y, masks = xp.asarray(X), xp.asarray(y), xp.asarray(masks)
        kwargs = dict(priority=xp.asarray(np.arange(n, dtype=np.int64)), backend="cuda")
    return n, lambda: K.forward_select(X, y, row_masks=masks, max_features=1, exponentiate=True, **kwargs)


def _cpu_times(
    P: np.ndarray, Y: np.ndarray, ties: str, alpha: float, repeat: int, read: Callable[[], object],
) -> dict[str, tuple[int, float, float | None]]:
    """(tokens, wall, CPU) of each kernel on the numba backend (all numba threads)."""
    impl = K.get_backend("numba")
    m, n = P.shape
    C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
    codes, hist, bounds = _codes_and_bounds(P, Y, ties, alpha, "numba")
    ids = np.arange(n, dtype=np.int64)
    calls: dict[str, tuple[int, Callable[[], object]]] = {
        "read + decode": (n, read),
        "ranks": (n, lambda: impl.doubled_ranks(P, ties)),
        "thrush codes": (n, lambda: impl.thrush_codes(P, C, ties)),
        "preselect codes": (n, lambda: impl.preselect_codes(P, pos)),
        "both codes": (n, lambda: impl.screen_codes(P, C, pos, ties)),
    }
    for c in ("thrush", "preselect"):
        off, n_bins = K.lattice(c, m)
        calls[f"histogram {c}"] = (n, partial(impl.histogram_codes, codes[c], off, n_bins, hist[c]))
        calls[f"tail test {c}"] = (n, partial(impl.tail_members, codes[c], ids, bounds[c]))
    calls["forward step"] = _forward_step(m, min(n, 1 << 14), 1)
    out: dict[str, tuple[int, float, float | None]] = {}
    for name, (count, fn) in calls.items():
        wall, cpu = _best(fn, repeat)
        out[name] = (count, wall, cpu)
    return out


def _gpu_times(
    P: np.ndarray, Y: np.ndarray, ties: str, alpha: float, repeat: int, read: Callable[[], object],
) -> tuple[dict[str, tuple[int, float, float | None]], float, float, tuple[str, str]]:  # pragma: no cover - needs a GPU
    """CUDA-event times of the pinned host-to-device copy and the fused kernels on CuPy arrays; wall
    times of read + decode and of the forward step (on the device, and on the host for comparison)."""
    import cupy

    from bsig_array.kernels import backend_cupy as G

    def events(fn: Callable[[], object]) -> float:
        fn()
        cupy.cuda.get_current_stream().synchronize()
        start, end, best = cupy.cuda.Event(), cupy.cuda.Event(), math.inf
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, end) / 1e3)
        return best

    m, n = P.shape
    Pd = G.to_device(P)
    C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
    codes, hist, bounds = _codes_and_bounds(Pd, Y, ties, alpha, "cupy")
    offsets = (K.lattice("thrush", m)[0], K.lattice("preselect", m)[0])
    calls: dict[str, Callable[[], object]] = {
        "host to device": lambda: G.to_device(P),
        "ranks": lambda: G.doubled_ranks(Pd, ties),
        "thrush codes": lambda: G.thrush_codes(Pd, C, ties),
        "preselect codes": lambda: G.preselect_codes(Pd, pos),
        "both codes": lambda: G.screen_codes(Pd, C, pos, ties),
        "fused chunk": lambda: G.screen_chunk(Pd, C, pos, ties, hist=(hist["thrush"], hist["preselect"]),
                                              offsets=offsets, n_hist=Y.shape[0]),
    }
    for c in ("thrush", "preselect"):
        off, n_bins = K.lattice(c, m)
        calls[f"histogram {c}"] = partial(G.histogram_codes, codes[c], off, n_bins, hist[c])
        calls[f"tail test {c}"] = partial(G.tail_counts, codes[c], bounds[c].low_code, bounds[c].high_code)
    out: dict[str, tuple[int, float, float | None]] = {"read + decode": (n, *_best(read, repeat))}
    out.update({name: (n, events(fn), None) for name, fn in calls.items()})
    count, step = _forward_step(m, min(n, 1 << 14), 1, cupy)
    out["forward step"] = (count, *_best(step, repeat))  # its results come back to the host: synchronized
    count, step = _forward_step(m, min(n, 1 << 14), 1)
    out["forward step (host)"] = (count, *_best(step, repeat))
    src = cupy.ones(64 * 2**20, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    memory = 2 * src.nbytes / events(lambda: cupy.copyto(dst, src))
    how = ("device memory bandwidth: fastest CuPy copy of 256 MiB (bytes read + written), CUDA events",
           f"op rate: STATED, {H200.fp32_ops:.3g}/s FP32 of the {H200.name} ({H200.source})")
    return out, memory, H200.fp32_ops, how
