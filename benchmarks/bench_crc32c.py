"""Benchmark the crc32c checksum every ``nll`` chunk carries: the screen's read + value check, and a
whole Thrush screen, with the checksum against the same store without it, in the same run.

One ``bsig synth`` pool per dtype (float32 and float16) is copied twice with ``Dataset.to_zarr``,
identical but for the codec chain of ``nll`` and ``token``: the store codec (Blosc lz4-5, byte
shuffle) followed by zarr's ``crc32c`` codec, as bsig writes every chunk, and the same codec without
it, as stores written before the checksum are.  Both copies go through the same fast path (whole
chunks decoded straight into the output; with the trailer, hardware crc32c of the compressed bytes
first).  Measured:

- **read + check**: every chunk as a screen task reads it (``chunk_sources`` → ``ChunkSource.load``,
  then ``check_block``), one thread (one Blosc and zarr thread), best of ``--repeat`` CPU times of
  this process; tokens/s;
- **screen**: ``screen(coefficients="thrush")`` end to end (one pass, merge, output written), one
  worker, in a fresh subprocess (``bench_screen.py``'s child), best of ``--screen-repeat`` CPU times.

Printed: rates, ratios with/without the checksum (measured in this run) and peak RSS.

    python benchmarks/bench_crc32c.py      # quick (~1 min): 32 models x 2**20 tokens, 2**18-token chunks, 16 benchmarks
    python benchmarks/bench_crc32c.py --tokens 2097152 --chunk-tokens 1048576 --benchmarks 88 --repeat 5 --screen-repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_screen (its child runner), bench_codec (machine)


def build_pool(workdir: Path, dtype: str, models: int, benchmarks: int, tokens: int, chunk: int) -> Path:
    """A ``bsig synth`` pool (written once, cached under ``workdir``)."""
    from bsig_array.pipelines.synth import synthesize

    pool = workdir / f"pool-{dtype}-{models}x{tokens}x{benchmarks}-c{chunk}"
    if not (pool / "performance.csv").exists():
        synthesize(pool, models=models, benchmarks=benchmarks, tokens=tokens, seed=0, dtype=dtype,
                   chunk_tokens=chunk, questions=False, overwrite=True)
    return pool


def copy_store(pool: Path, out: Path, *, checksum: bool) -> Path:
    """``pool``'s store as ``nll``, ``model``, ``token``, the store codec with or without crc32c."""
    import xarray as xr
    from zarr.codecs import Crc32cCodec

    from bsig_array.io.perplexity_store.schema import compressor

    if (out / "zarr.json").exists():
        return out
    src = xr.open_zarr(pool / "perplexity.zarr")
    ds = xr.Dataset({"nll": src["nll"]}, coords={"model": src["model"].values, "token": src["token"].values})
    chain = [compressor(), Crc32cCodec()] if checksum else [compressor()]
    chunk = src["nll"].encoding["chunks"]
    enc = {"nll": {"chunks": chunk, "compressors": chain}, "token": {"chunks": (chunk[1],), "compressors": chain}}
    ds.chunk({"token": chunk[1]}).to_zarr(out, mode="w", zarr_format=3, encoding=enc)
    return out


def best(fn: Callable[[], Any], repeat: int) -> float:
    """Fastest of ``repeat`` calls after a warm-up, in process CPU seconds."""
    fn()
    times = []
    for _ in range(repeat):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return min(times)


def read_and_check(store: Path) -> Callable[[], int]:
    """One call reads and checks every chunk the way a screen task does; returns the token count."""
    from bsig_array.io.perplexity_store.chunks import chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.perplexity_store.schema import check_block

    ds = open_store(store)
    models = [str(m) for m in ds["model"].values]
    sources = chunk_sources(ds["nll"], store=store)

    def run() -> int:
        tokens = 0
        for src in sources:
            block, ids = src.load()
            check_block(block, models, src.start, path=str(store))
            tokens += ids.size
        return tokens

    return run


def screen_cpu(store: Path, performance: Path, out: Path, repeat: int, memory_limit: str) -> dict:
    """Best CPU seconds of ``repeat`` Thrush screens, each in a fresh subprocess (bench_screen's child)."""
    from bench_screen import run_child

    runs = [run_child("screen", {"store": str(store), "performance": str(performance), "out": str(out),
                                 "method": "thrush", "memory_limit": memory_limit, "workers": 1},
                      script=str(HERE / "bench_screen.py"))
            for _ in range(repeat)]
    return min(runs, key=lambda r: r["cpu_s"])


def one_thread_reads(workdir: Path) -> None:
    """What both read benchmarks (this one, bench_value_check.py) measure under: one decoder thread
    (the screen reads one chunk per worker thread), one zarr thread, no progress bars; ``workdir`` made."""
    import numcodecs.blosc
    import zarr

    os.environ["BSIG_PROGRESS"] = "0"
    numcodecs.blosc.set_nthreads(1)
    zarr.config.set({"threading.max_workers": 1, "async.concurrency": 1})
    workdir.mkdir(parents=True, exist_ok=True)


def write_json(path: str | None, args: argparse.Namespace, results: dict) -> None:
    """The run's arguments, machine and results as JSON at ``path`` (nothing without one)."""
    from bench_codec import machine

    if path:
        Path(path).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                          "machine": machine(), "results": results}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1 << 20)
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--benchmarks", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=1 << 18, help="tokens per store chunk (the store's default: 2**20)")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--repeat", type=int, default=3, help="read + check: best of this many")
    parser.add_argument("--screen-repeat", type=int, default=1, help="whole screen: best of this many (0: skip)")
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bsig-bench-crc32c")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import numba
    from bench_codec import machine

    from bsig_array.runtime.memory import peak_rss

    one_thread_reads(args.workdir)
    numba.set_num_threads(1)
    print(f"# crc32c benchmark on {machine()}: {args.models} models x {args.tokens:,} tokens, chunks of "
          f"{args.chunk_tokens:,} tokens; read + check one thread, best of {args.repeat} CPU times", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for dtype in args.dtypes.split(","):
        pool = build_pool(args.workdir, dtype, args.models, args.benchmarks, args.tokens, args.chunk_tokens)
        row: dict[str, Any] = {}
        for label, checksum in (("crc32c", True), ("none", False)):
            store = copy_store(pool, args.workdir / f"{pool.name}-{label}.zarr", checksum=checksum)
            run = read_and_check(store)
            tokens = run()
            row[f"read_check_{label}_tok_s"] = tokens / best(run, args.repeat)
            if args.screen_repeat:
                out = args.workdir / f"screen-{dtype}-{label}.zarr"
                r = screen_cpu(store, pool / "performance.csv", out, args.screen_repeat, args.memory_limit)
                row[f"screen_{label}_cpu_s"] = r["cpu_s"]
                row[f"screen_{label}_peak_rss"] = r["peak_rss"]
                shutil.rmtree(out, ignore_errors=True)
        results[dtype] = row
        rate = (row["read_check_crc32c_tok_s"], row["read_check_none_tok_s"])
        print(f"  {dtype}: read + check {rate[0] / 1e6:.1f} M tok/s with crc32c vs {rate[1] / 1e6:.1f} without: "
              f"{rate[0] / rate[1]:.2f}x the rate", flush=True)
        if args.screen_repeat:
            cpu = (row["screen_crc32c_cpu_s"], row["screen_none_cpu_s"])
            print(f"  {dtype}: screen --coefficients thrush {cpu[0]:.2f} CPU s with crc32c vs {cpu[1]:.2f} without: "
                  f"{cpu[0] / cpu[1]:.2f}x the time (peak RSS {row['screen_crc32c_peak_rss'] / 2**20:.0f} vs "
                  f"{row['screen_none_peak_rss'] / 2**20:.0f} MiB)", flush=True)
    print(f"# peak RSS of this process (read + check): {peak_rss() / 2**20:.0f} MiB")
    write_json(args.json, args, results)


if __name__ == "__main__":
    main()
