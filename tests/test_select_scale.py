"""Selection at scale: a candidate set larger than ``--memory-limit`` runs within it (docs/DESIGN.md §5).

The screen output is built on synthetic NLLs, one benchmark whose candidates' float32 columns alone
exceed the limit, and ``bsig select`` runs in a subprocess at the tightest limit the memory plan
accepts, so the plan's leanest mode (columns streamed one storage chunk at a time, per-candidate
state spilled) is the one exercised.  Its peak RSS (``VmHWM``) must stay within the limit, and the
selection must still find the planted token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.errors import PlanError
from bsig_array.io.screen_output import CANDIDATE_CHUNK, build_screen, open_screen, write_screen
from bsig_array.stages.select import _read_bytes
from bsig_array.stages.select_cost import plan_selection

M, N = 128, 2_000_000  # 128 models x 2e6 candidates: 1.02 GB of float32 columns


def _block(i: int, width: int) -> np.ndarray:
    """Candidate columns of storage chunk ``i`` (full-precision draws barely compress, so the codec
    stores them nearly raw: several times faster to write and read than quantized values)."""
    rng = np.random.default_rng([7, i])
    return rng.uniform(1.0, 4.0, size=(M, width)).astype(np.float32)


def _write_screen(path: os.PathLike) -> np.ndarray:
    """One benchmark whose two tails hold all N candidates; returns its scores (planted on candidate 0)."""
    widths = [min(CANDIDATE_CHUNK, N - a) for a in range(0, N, CANDIDATE_CHUNK)]
    # lazy, one chunk per task: this process never holds the columns either
    nll = da.concatenate(
        [da.from_delayed(dask.delayed(_block)(i, w), (M, w), np.float32) for i, w in enumerate(widths)], axis=1
    )
    half = N // 2
    token = np.arange(N, dtype=np.int64).reshape(1, 1, 2, half)
    ds = build_screen(
        models=[f"m{i:02d}" for i in range(M)], benchmark_coords={"benchmark": xr.DataArray(["b0"])},
        coefficients=["thrush"], token=token, score=np.zeros(token.shape), threshold=np.zeros((1, 1, 2)),
        histograms={"thrush": (np.zeros(1), np.array([[N]]))}, candidate=np.arange(N, dtype=np.int64),
        candidate_nll=nll,
    )
    ds.attrs["workers"] = 2
    write_screen(ds, path)
    first = _block(0, widths[0])[:, 0].astype(np.float64)
    return np.exp(first) + 0.01 * np.random.default_rng(1).normal(size=M)


CHILD = textwrap.dedent(
    """
    import json, sys
    from bsig_array.cli.main import main
    code = 0
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code or 0
    import xarray as xr
    out = sys.argv[sys.argv.index("--out") + 1]
    sig = xr.open_zarr(out) if code == 0 else None
    from bsig_array.runtime.memory import peak_rss
    print(json.dumps({
        "code": code, "peak": peak_rss(), "plan": sig.attrs["plan"] if sig is not None else "",
        "picked": sig["signature_token"].values[0].tolist() if sig is not None else [],
        "n_candidates": int(sig["n_candidates"].values[0]) if sig is not None else 0,
    }))
    """
)


def _tightest_limit(m: int, n: int, chunk_bytes: int) -> int:
    """The smallest limit (whole MiB) the selection plan accepts for one benchmark without LOO-CV."""
    lo, hi = 1, 1 << 16
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            plan_selection(mid * 2**20, m, n, loocv=False, chunk_bytes=chunk_bytes)
            hi = mid
        except PlanError:
            lo = mid + 1
    return lo * 2**20


def test_select_over_more_candidates_than_the_limit_stays_within_it(tmp_path):
    y = _write_screen(tmp_path / "s.zarr")
    pd.DataFrame({"model": [f"m{i:02d}" for i in range(M)], "b0": y}).to_csv(tmp_path / "y.csv", index=False)
    screen = open_screen(tmp_path / "s.zarr")
    limit = _tightest_limit(M, N, _read_bytes(screen["candidate_nll"]))
    assert 4 * M * N > limit  # the candidates' float32 columns alone do not fit in the limit
    res = subprocess.run(
        [sys.executable, "-c", CHILD, "select", "--screen", str(tmp_path / "s.zarr"), "--performance",
         str(tmp_path / "y.csv"), "--out", str(tmp_path / "g.zarr"), "--memory-limit", str(limit),
         "--no-loocv", "--max-features", "1"],
        capture_output=True, text=True, env={**os.environ, "BSIG_PROGRESS": "0"}, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, res.stderr
    assert "streamed, state spilled to disk" in report["plan"], report["plan"]
    assert report["n_candidates"] == N and report["picked"] == [0]  # the planted token, found at scale
    assert report["peak"] <= limit, (
        f"peak RSS {report['peak'] / 2**20:.0f} MiB > limit {limit / 2**20:.0f} MiB ({report['plan']})"
    )
