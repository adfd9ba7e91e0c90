"""Benchmark the value check every screen task applies to its chunk (``check_block``: NaN, inf and
NLL < 0 from two row reductions, float16 through its integer bit view) against the ``isfinite``
check it replaced, in the same run.

Peers, on the same chunks:

(a) ``np.isfinite(block).all()``: the check it replaced (NaN and inf only);
(b) ``np.isfinite(block).all() and (block >= -NLL_TOLERANCE).all()``: the same coverage as
    ``check_block`` done the plain way.

One ``bsig synth`` pool per dtype (float16 and float32), written by the package's writer (Blosc lz4,
crc32c).  Measured, one thread (one Blosc and zarr thread), best of ``--repeat`` CPU times of this
process: **read + check** (every chunk as a screen task reads it: ``chunk_sources`` →
``ChunkSource.load``, then the check) and **check alone** (the same chunks already in memory);
tokens/s, ratios against the peers, peak RSS.

    python benchmarks/bench_value_check.py      # quick (~30 s): 32 models x 2**20 tokens, 2**18-token chunks
    python benchmarks/bench_value_check.py --tokens 2097152 --chunk-tokens 1048576 --repeat 5   # store-sized chunks
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_crc32c (pool, timing), bench_codec (machine)


def checks() -> dict[str, Callable[[np.ndarray, list[str], int], Any]]:
    """Check name -> ``check(block, models, token_start)``."""
    from bsig_array.io.perplexity_store.schema import NLL_TOLERANCE, check_block

    def isfinite(block: np.ndarray, models: list[str], start: int) -> Any:
        if not np.isfinite(block).all():
            raise ValueError("NaN or inf")

    def isfinite_and_sign(block: np.ndarray, models: list[str], start: int) -> Any:
        if not (np.isfinite(block).all() and (block >= -NLL_TOLERANCE).all()):
            raise ValueError("NaN, inf or negative")

    return {"check_block": check_block, "isfinite": isfinite, "isfinite+sign": isfinite_and_sign}


def timed(check: Any, sources: list[Any], blocks: list[tuple[np.ndarray, int]], models: list[str],
          repeat: int) -> tuple[float, float]:
    """CPU seconds of (read + check of every chunk, check alone of the chunks in memory)."""
    from bench_crc32c import best

    def read_check() -> None:
        for src in sources:
            block, _ = src.load()
            check(block, models, src.start)

    def check_only() -> None:
        for block, start in blocks:
            check(block, models, start)

    return best(read_check, repeat), best(check_only, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1 << 20)
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--benchmarks", type=int, default=8, help="pool benchmarks (scores only; not read here)")
    parser.add_argument("--chunk-tokens", type=int, default=1 << 18, help="tokens per store chunk (the store's default: 2**20)")
    parser.add_argument("--dtypes", default="float16,float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bsig-bench-value-check")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from bench_codec import machine
    from bench_crc32c import build_pool, one_thread_reads, write_json

    from bsig_array.io.perplexity_store.chunks import chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.runtime.memory import peak_rss

    one_thread_reads(args.workdir)
    print(f"# value-check benchmark on {machine()}: {args.models} models x {args.tokens:,} tokens, chunks of "
          f"{args.chunk_tokens:,} tokens; one thread, best of {args.repeat} CPU times", flush=True)

    results: dict[str, dict[str, float]] = {}
    for dtype in args.dtypes.split(","):
        pool = build_pool(args.workdir, dtype, args.models, args.benchmarks, args.tokens, args.chunk_tokens)
        store = pool / "perplexity.zarr"
        ds = open_store(store)
        models = [str(m) for m in ds["model"].values]
        sources = chunk_sources(ds["nll"], store=store)
        blocks = [(src.load()[0], src.start) for src in sources]
        row: dict[str, float] = {}
        for name, check in checks().items():
            read_s, only_s = timed(check, sources, blocks, models, args.repeat)
            row[f"read+{name}"], row[f"only {name}"] = args.tokens / read_s, args.tokens / only_s
        results[dtype] = row
        for kind in ("read+", "only "):
            new = row[f"{kind}check_block"]
            peers = ", ".join(f"{peer} {row[kind + peer] / 1e6:.1f} ({new / row[kind + peer]:.1f}x)"
                              for peer in ("isfinite", "isfinite+sign"))
            label = "read + check" if kind == "read+" else "check alone "
            print(f"  {dtype} {label}: check_block {new / 1e6:.1f} M tok/s; peers {peers}", flush=True)
    print(f"# peak RSS: {peak_rss() / 2**20:.0f} MiB")
    write_json(args.json, args, results)


if __name__ == "__main__":
    main()
