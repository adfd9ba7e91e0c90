"""Benchmark ``bsig synth`` (time, peak RSS) against a dask + xarray peer writing the same store.

The peer is the idiomatic out-of-core way to write a random (model, token) array: a dask array
``exp(sigma * normal + offset) * gamma`` with the same chunks, dtype and compressor (the store default, Blosc lz4),
written with ``Dataset.to_zarr`` on the threaded scheduler.  It does less work than synth (no planted
tokens, scores, truth or questions), so a ratio near 1 means synth's extra work is free.

Each run is a subprocess of its own wrapper process, so ``RUSAGE_CHILDREN`` is that run's peak RSS.

    python benchmarks/bench_synth.py                  # the issue's case: 32 models x 1e7 tokens
    python benchmarks/bench_synth.py --tokens 2000000 # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""

_PEER = """
import sys
import dask, dask.array as da, numpy as np, xarray as xr
from zarr.codecs import BloscCodec
out, m, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = da.random.default_rng(0)
offset = da.from_array(np.linspace(-0.1, 0.1, m, dtype=np.float32)[:, None])
noise = rng.standard_normal((m, n), chunks=(m, chunk), dtype=np.float32)
difficulty = rng.standard_gamma(0.8, size=n, chunks=chunk).astype(np.float32) * 2.5
nll = da.exp(0.35 * noise + offset) * difficulty
ds = xr.Dataset({"nll": (("model", "token"), nll)},
                coords={"model": [f"m{i}" for i in range(m)], "token": np.arange(n, dtype=np.int64)})
enc = {"nll": {"chunks": (m, chunk), "compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]}}
with dask.config.set(scheduler="threads"):
    ds.to_zarr(out, mode="w", encoding=enc, zarr_format=3)
"""


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time and peak RSS (bytes) of ``cmd`` run in a fresh wrapper process."""
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--chunk-tokens", type=int, default=1 << 20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--dir", default=None, help="Scratch directory (default: a temporary one).")
    parser.add_argument("--no-peer", action="store_true", help="Skip the dask + xarray peer.")
    args = parser.parse_args()

    import xarray as xr

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        ours = measure(
            [sys.executable, "-m", "bsig_array.cli.main", "synth", str(scratch / "pool"), "--tokens", str(args.tokens),
             "--models", str(args.models), "--chunk-tokens", str(args.chunk_tokens), "--dtype", args.dtype, "--overwrite"]
        )
        store = xr.open_zarr(scratch / "pool" / "perplexity.zarr")
        assert store.sizes["token"] == args.tokens and store.sizes["model"] == args.models
        cells = args.tokens * args.models
        print(f"bsig synth   {args.models} models x {args.tokens:,} tokens ({args.dtype}, chunk {args.chunk_tokens:,})")
        print(f"  time {ours['seconds']:.1f} s  ({cells / ours['seconds'] / 1e6:.1f} M values/s)")
        print(f"  peak RSS {ours['peak_rss'] / 2**20:.0f} MiB  (under 1 GiB: {'yes' if ours['peak_rss'] < 2**30 else 'NO'})")
        if not args.no_peer:
            peer = measure(
                [sys.executable, "-c", _PEER, str(scratch / "peer.zarr"), str(args.models), str(args.tokens), str(args.chunk_tokens)]
            )
            print(f"dask+xarray peer  time {peer['seconds']:.1f} s  peak RSS {peer['peak_rss'] / 2**20:.0f} MiB")
            print(f"ratio synth/peer  time {ours['seconds'] / peer['seconds']:.2f}  peak RSS {ours['peak_rss'] / peer['peak_rss']:.2f}")
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
