"""Benchmark: screen throughput from a local S3 server vs the local disk, same pool, same run.

One ``bsig synth`` pool (float16 by default) is written to local disk, a ``moto_server`` (moto's S3
server mode, the one the tests use: ``tests/s3.py``) is started on 127.0.0.1 and the pool is
uploaded to a bucket.  Then, each in a fresh subprocess (so peak RSS is its own):

* the bare read + decode rate of the store (the screen's read path, whole chunks; from S3 as
  concurrent byte ranges), on ``--workers`` threads;
* ``screen`` end to end (one pass + merge + streamed output), local store → local output and
  S3 store → S3 output (after one warm-up screen that compiles the numba kernels into their cache).

Printed: tokens/s per pass (the pass wall time, read + compute + spill), the whole screen, the
ratio S3/local, and each run's peak RSS.  moto's server is a single Python process, so the S3
numbers are a lower bound for a real object store; the read rows show how far the store's transport
is from the local disk.

Usage::

    python benchmarks/remote_screen.py                        # 32 models x 2e6 tokens, float16
    python benchmarks/remote_screen.py --tokens 5e5 --benchmarks 8 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bsig_array.runtime.run import RunSpec

HERE = Path(__file__).resolve().parent


def _s3_helpers() -> Any:
    """``tests/s3.py`` (start_server, stop_server, S3), loaded by path."""
    spec = importlib.util.spec_from_file_location("bsig_tests_s3", HERE.parent / "tests" / "s3.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- children


def child_read(cfg: dict) -> dict:
    """bench_screen's bare read + decode of the store (the screen's read path), plus peak RSS."""
    from bench_screen import child_read as read  # this directory is on sys.path when run as a script

    from bsig_array.runtime.memory import peak_rss

    return {**read(cfg), "peak_rss": peak_rss()}


def child_screen(cfg: dict) -> dict:
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance
    from bsig_array.runtime.memory import peak_rss
    from bsig_array.stages.screen.driver import screen

    t0 = time.perf_counter()
    ds = open_store(cfg["store"])
    score = load_performance(cfg["performance"])
    result = screen(ds["nll"], score, coefficients=cfg["method"], alpha=0.01, store=cfg["store"], out=cfg["out"], overwrite=True, run=RunSpec.build(memory_limit=cfg["memory_limit"], scheduler="threads", workers=cfg["workers"]))
    return {"timings": result.attrs["timings"], "total_s": time.perf_counter() - t0, "peak_rss": peak_rss(),
            "n_tokens": int(result.attrs["n_tokens"]), "plan": result.attrs["plan"]}


def _child(kind: str, cfg: dict, env: dict[str, str]) -> dict:
    from bench_screen import run_child

    return run_child(kind, cfg, script=__file__, env=env)


# ----------------------------------------------------------------------------- parent


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--tokens", type=float, default=2e6)
    ap.add_argument("--benchmarks", type=int, default=16)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--chunk-tokens", type=int, default=1 << 18)
    ap.add_argument("--method", default="both", choices=["thrush", "preselect", "both"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, cfg = args.child
        print(json.dumps({"read": child_read, "screen": child_screen}[kind](json.loads(cfg))))
        return

    from bsig_array.pipelines.synth import synthesize

    s3mod = _s3_helpers()
    tokens = int(args.tokens)
    with tempfile.TemporaryDirectory(prefix="bsig-remote-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = synthesize(root / "pool", models=args.models, benchmarks=args.benchmarks, tokens=tokens,
                           dtype=args.dtype, chunk_tokens=args.chunk_tokens, questions=False)
        print(f"pool: {args.models} models x {tokens:,} tokens {args.dtype}, {args.benchmarks} benchmarks, "
              f"chunks of {args.chunk_tokens:,} tokens ({time.perf_counter() - t0:.1f} s to synthesize)")
        server = s3mod.start_server()
        try:
            bucket = server.bucket("bench")
            t0 = time.perf_counter()
            server.upload(root / "pool", f"s3://{bucket}/pool")
            print(f"uploaded to moto_server at {server.endpoint} in {time.perf_counter() - t0:.1f} s")
            local_env = {k: v for k, v in os.environ.items() if k != "BSIG_STORAGE_OPTIONS"}
            where = {
                "local": ({"store": str(paths.perplexity), "performance": str(paths.performance),
                           "out": str(root / "screen.zarr")}, local_env),
                "s3": ({"store": f"s3://{bucket}/pool/perplexity.zarr",
                        "performance": f"s3://{bucket}/pool/performance.csv",
                        "out": f"s3://{bucket}/screen.zarr"}, server.env()),
            }
            common = {"workers": args.workers, "method": args.method, "memory_limit": args.memory_limit}
            results: dict[str, dict] = {}
            # warm-up: the first process compiles and caches the numba kernels; measure warm runs only
            _child("screen", {**where["local"][0], **common, "out": str(root / "warm.zarr")}, local_env)
            for name, (cfg, env) in where.items():
                results[f"read_{name}"] = _child("read", {**cfg, **common}, env)
                results[f"screen_{name}"] = _child("screen", {**cfg, **common}, env)
        finally:
            s3mod.stop_server(server)

    print(f"\n{'':34}{'local disk':>16}{'S3 (moto)':>16}{'S3/local':>10}")

    def row(label: str, local: float, remote: float, unit: str = "tokens/s") -> None:
        print(f"{label:34}{local:>14,.0f} {unit[:1]}{remote:>14,.0f} {unit[:1]}{remote / local:>10.2f}")

    read = {k: results[f"read_{k}"]["tokens"] / results[f"read_{k}"]["total_s"] for k in ("local", "s3")}
    row(f"read + decode ({args.workers} threads)", read["local"], read["s3"])
    for key in ("pass", "pass1", "pass2"):
        if f"{key}_s" in results["screen_local"]["timings"]:
            rate = {k: tokens / results[f"screen_{k}"]["timings"][f"{key}_s"] for k in ("local", "s3")}
            row(f"screen {key} (tokens/s)", rate["local"], rate["s3"])
    whole = {k: tokens / results[f"screen_{k}"]["total_s"] for k in ("local", "s3")}
    row("screen end to end (tokens/s)", whole["local"], whole["s3"])
    print(f"{'peak RSS of the screen':34}{_mib(results['screen_local']['peak_rss']):>16}"
          f"{_mib(results['screen_s3']['peak_rss']):>16}")
    print(f"{'peak RSS of the read':34}{_mib(results['read_local']['peak_rss']):>16}"
          f"{_mib(results['read_s3']['peak_rss']):>16}")
    print(f"plan: {results['screen_local']['plan']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
