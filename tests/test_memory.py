"""Memory plan: parsing, projection, refusal before running, and measured peak RSS in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from bsig_array.errors import BsigError
from bsig_array.options import parse_memory
from bsig_array.runtime.memory import PROCESS_OVERHEAD
from bsig_array.stages.screen.cost import plan_screen


@pytest.mark.parametrize(
    "text, expected",
    [("2GiB", 2 * 2**30), ("500MB", 500 * 10**6), ("1.5g", 1_500_000_000), ("  64 MiB ", 64 * 2**20),
     ("1e9", 10**9), (10**6, 10**6), ("3kib", 3072), ("1TB", 10**12)],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "2XB", "-1GiB", "0", "GiB", ""])
def test_parse_memory_rejects(text):
    with pytest.raises(BsigError, match="memory size"):
        parse_memory(text)


PLAN = dict(n_models=32, n_benchmarks=88, null_permutations=0, n_tokens=10**7, chunk_tokens=2**20,
            itemsize=4, coefficients=("thrush", "preselect"), k=10**5, max_workers=8)


def test_plan_fits_and_uses_the_room():
    small = plan_screen(**PLAN, memory_limit=parse_memory("3GiB"))
    big = plan_screen(**PLAN, memory_limit=parse_memory("16GiB"))
    assert small.projected_bytes <= 3 * 2**30 and big.projected_bytes <= 16 * 2**30
    assert big.workers >= small.workers and big.workers == 8
    assert small.overhead_bytes == PROCESS_OVERHEAD


def test_plan_shrinks_block_before_refusing():
    roomy = plan_screen(**{**PLAN, "null_permutations": 20, "passes": 2}, memory_limit=parse_memory("16GiB"))
    tight = plan_screen(**{**PLAN, "null_permutations": 20, "passes": 2}, memory_limit=parse_memory("2500MiB"))
    assert tight.block_tokens < roomy.block_tokens and tight.workers < roomy.workers
    assert tight.projected_bytes <= 2500 * 2**20


def test_plan_does_not_grow_with_the_pool():
    """Tokens and k change nothing but the output's rank chunk (capped): the spill and output take them."""
    small = plan_screen(**PLAN, memory_limit=parse_memory("2GiB"))
    huge = plan_screen(**{**PLAN, "n_tokens": 8_450_000_000, "k": 84_500_000}, memory_limit=parse_memory("2GiB"))
    assert huge.projected_bytes <= 2 * 2**30
    assert (huge.workers, huge.block_tokens, huge.task_bytes) == (small.workers, small.block_tokens, small.task_bytes)


def test_plan_refused_with_numbers():
    with pytest.raises(BsigError, match=r"screen needs at least \d+\.\d\d (MiB|GiB) .* but --memory-limit is 300.00 MiB; raise --memory-limit"):
        plan_screen(**PLAN, memory_limit=parse_memory("300MiB"))


def test_more_null_rows_need_more_memory():
    a = plan_screen(**PLAN, memory_limit=parse_memory("64GiB"))
    b = plan_screen(**{**PLAN, "null_permutations": 10, "passes": 2}, memory_limit=parse_memory("64GiB"))
    assert b.task_bytes > a.task_bytes


# A store bigger than the headroom left by the limit: loading it whole would break the promise.
M, D, CHUNK, LIMIT = 16, 2_000_000, 1 << 17, "480MiB"

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
    plan = xr.open_zarr(sys.argv[sys.argv.index("--out") + 1]).attrs["plan"] if code == 0 else ""
    from bsig_array.runtime.memory import peak_rss
    peak = peak_rss()
    print(json.dumps({"code": code, "peak": peak, "plan": plan}))
    """
)


def test_peak_rss_within_memory_limit(tmp_path):
    from bsig_array.io.perplexity_store.writer import create_store

    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(M)]
    w = create_store(tmp_path / "p.zarr", models, D, chunk_tokens=CHUNK)
    for j in range(w.n_chunks):
        sl = w.chunk_slice(j)
        # one decimal: compresses well, so the store writes fast; ties exercise midranks
        nll = np.round(rng.gamma(2.0, 1.0, size=(M, sl.stop - sl.start)), 1).astype("float32")
        w.write_chunk(j, nll, token=np.arange(sl.start, sl.stop))
    raw = M * D * 4
    frame = pd.DataFrame(rng.random((M, 4)), columns=[f"b{i}" for i in range(4)])
    frame.insert(0, "model", models)
    frame.to_csv(tmp_path / "y.csv", index=False)
    # numba compiles the kernels on first use and caches them on disk; compiling is a one-off
    # transient (LLVM) that a fresh checkout pays once, so warm the cache on a tiny store first.
    small = create_store(tmp_path / "small.zarr", models, 4096)
    small.write_chunk(0, np.round(rng.gamma(2.0, 1.0, size=(M, 4096)), 1).astype("float32"))
    subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "screen", "--perplexity", str(tmp_path / "small.zarr"),
         "--performance", str(tmp_path / "y.csv"), "--out", str(tmp_path / "small-s.zarr")],
        capture_output=True, text=True, check=True,
    )
    out = tmp_path / "s.zarr"
    res = subprocess.run(
        [sys.executable, "-c", CHILD, "screen", "--perplexity", str(tmp_path / "p.zarr"), "--performance",
         str(tmp_path / "y.csv"), "--out", str(out), "--memory-limit", LIMIT],
        capture_output=True, text=True, env={**__import__("os").environ, "BSIG_PROGRESS": "0"},
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, res.stderr
    limit = parse_memory(LIMIT)
    assert raw > limit - PROCESS_OVERHEAD  # the whole store would not fit next to the process
    assert report["peak"] <= limit, f"peak RSS {report['peak'] / 2**20:.0f} MiB > {LIMIT} ({report['plan']})"


def test_too_small_limit_refused_by_cli_before_reading(tmp_path):
    frame = pd.DataFrame({"model": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    frame.to_csv(tmp_path / "y.csv", index=False)
    from bsig_array.io.perplexity_store.writer import create_store

    w = create_store(tmp_path / "p.zarr", ["a", "b", "c"], 1000)
    w.write_chunk(0, np.ones((3, 1000), dtype="float32"))
    res = subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "screen", "--perplexity", str(tmp_path / "p.zarr"),
         "--performance", str(tmp_path / "y.csv"), "--out", str(tmp_path / "s.zarr"), "--memory-limit", "100MiB"],
        capture_output=True, text=True,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "but --memory-limit is 100.00 MiB" in res.stderr
    assert not (tmp_path / "s.zarr").exists()
