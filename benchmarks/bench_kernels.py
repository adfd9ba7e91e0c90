"""Throughput of the screening kernels on an in-memory block (m = 32, B = 88 by default).

Prints tokens/s per kernel and backend, the ratio against peers measured in the same run, and peak RSS:

* ``paper``: the paper repo's Thrush — pandas ``rank(method="first")`` over models, then a matrix
  product (written faithfully here);
* ``broadcast``: a numpy broadcast Pre-select (per benchmark: reorder models by y, compare all
  pairs with a (m, m, n) broadcast, count the upper triangle);
* ``bincount``: ``np.bincount`` per row for the histogram.

Run: ``python benchmarks/bench_kernels.py [--tokens 262144] [--models 32] [--benchmarks 88]``.
Slow peers and the portable backend run on a slice (``--slice``) and are scaled to tokens/s.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
import pandas as pd

from bsig_array import kernels as K
from bsig_array.kernels import backend_numba
from bsig_array.runtime.memory import peak_rss


def best_time(fn, repeat: int = 3) -> float:
    fn()  # warm-up (numba compilation, caches)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def paper_thrush(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The paper repo's method: ranks with pandas (method="first") on the whole matrix, then C · R."""
    R = pd.DataFrame(P.T).rank(axis=1, method="first").to_numpy().T
    C = np.sign(Y[:, :, None] - Y[:, None, :]).sum(axis=2)
    return C @ R


def broadcast_preselect(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    m = P.shape[0]
    upper = np.triu(np.ones((m, m), bool), 1)[:, :, None]
    out = np.empty((Y.shape[0], P.shape[1]), np.int64)
    for r, y in enumerate(Y):
        q = P[np.argsort(y, kind="stable")]
        out[r] = ((q[:, None, :] > q[None, :, :]) & upper).sum(axis=(0, 1))
    return out


def bincount_histogram(codes: np.ndarray, offset: int, n_bins: int) -> np.ndarray:
    return np.stack([np.bincount(row + offset, minlength=n_bins) for row in codes])


def peak_rss_mib() -> float:
    return peak_rss() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1 << 18)
    ap.add_argument("--slice", type=int, default=1 << 14, help="tokens for the slow peers / portable")
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--benchmarks", type=int, default=88)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    m, n, B = args.models, args.tokens, args.benchmarks
    P = rng.gamma(2.0, 1.0, (m, n)).astype(args.dtype)
    Y = rng.random((B, m))
    Ps = P[:, : args.slice].copy()
    ns = Ps.shape[1]
    ids = np.arange(n, dtype=np.int64)

    rates: dict[str, float] = {}

    def rate(label: str, fn, tokens: int) -> None:
        rates[label] = tokens / best_time(fn)
        print(f"{label:<28s} {rates[label] / 1e6:9.3f} M tokens/s")

    print(f"m={m} B={B} tokens={n} (slow peers on {ns}) dtype={args.dtype}")
    rate("ranks numba", lambda: K.ranks(P, backend="numba"), n)
    rate("ranks numpy-portable", lambda: K.ranks(Ps, backend="numpy"), ns)
    rate("ranks pandas first", lambda: pd.DataFrame(Ps.T).rank(axis=1, method="first"), ns)
    rate("thrush numba", lambda: K.thrush_codes(P, Y, backend="numba"), n)
    rate("thrush numba first", lambda: K.thrush_codes(P, Y, "first", backend="numba"), n)
    rate("thrush numpy-portable", lambda: K.thrush_codes(Ps, Y, backend="numpy"), ns)
    rate("thrush paper (pandas+matmul)", lambda: paper_thrush(Ps, Y), ns)
    rate("preselect numba", lambda: K.preselect_codes(P, Y, backend="numba"), n)
    rate("preselect numpy-portable", lambda: K.preselect_codes(Ps, Y, backend="numpy"), ns)
    rate("preselect numpy broadcast", lambda: broadcast_preselect(Ps, Y), ns)
    rate("both separate numba", lambda: (K.thrush_codes(P, Y), K.preselect_codes(P, Y)), n)
    rate("both screen_codes numba", lambda: K.screen_codes(P, Y), n)
    codes = K.thrush_codes(P, Y)
    offset, n_bins = K.lattice("thrush", m)
    rate("histogram numba", lambda: K.histogram_codes(codes, "thrush", m, backend="numba"), n)
    rate("histogram numpy-portable", lambda: K.histogram_codes(codes[:, :ns], "thrush", m, backend="numpy"), ns)
    rate("histogram bincount", lambda: bincount_histogram(codes[:, :ns], offset, n_bins), ns)
    bounds = K.tail_bounds(K.histogram_codes(codes, "thrush", m), K.tail_size(0.01, n), "thrush", m)
    rate("tail_members numba", lambda: K.tail_members(codes, ids, bounds, backend="numba"), n)
    rate("tail_members numpy-portable", lambda: K.tail_members(codes[:, :ns], ids[:ns], bounds, backend="numpy"), ns)

    print("\nratios (same run)")
    for num, den in [
        ("thrush numba", "thrush paper (pandas+matmul)"),
        ("thrush numba first", "thrush paper (pandas+matmul)"),
        ("thrush numba", "thrush numpy-portable"),
        ("preselect numba", "preselect numpy broadcast"),
        ("preselect numba", "preselect numpy-portable"),
        ("both screen_codes numba", "both separate numba"),
        ("ranks numba", "ranks pandas first"),
        ("histogram numba", "histogram bincount"),
    ]:
        print(f"{num:<20s} / {den:<30s} {rates[num] / rates[den]:8.1f}x")
    load = os.getloadavg()[0]
    print(f"\nnumba threads {numba.get_num_threads()}, VNNI product {backend_numba._USE_VNNI}, load average {load:.1f}")
    mib = 2**20
    print(f"peak RSS {peak_rss_mib():.0f} MiB (P block {P.nbytes / mib:.0f} MiB, codes {codes.nbytes / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
