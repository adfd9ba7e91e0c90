"""Benchmark ``bsig screen`` end to end from the compressed store against its peers.

Peers, measured in the same run:

(a) the paper repository's Thrush (``paper_repo_thrush.py``): pandas ``rank(method="first")`` on the
    whole in-memory matrix, one matrix product, sorting for the tails;
(b) a numpy broadcast Pre-select (``numpy_preselect.py``).

Every measurement runs in a fresh subprocess so its peak RSS (``VmHWM``) and CPU time are its own.
The screen runs read the compressed ``bsig synth`` store (float16 by default) in one pass, merge the
spill and stream the output (all timed, end to end); the peers get their matrix in memory for free
(loading is not timed) and run on a prefix of the tokens, since they hold everything in memory and
(b) is slow; their rates are per token and their peak RSS is also extrapolated linearly to the full d
(labelled as such).  ``--passes-study`` adds, on the largest pool, one pass vs two passes at 1 and 2
workers next to the store's bare read + decode rate on as many threads.

Usage::

    python benchmarks/bench_screen.py --tokens 5e6 --methods thrush,preselect --passes-study
    python benchmarks/bench_screen.py --tokens 1e7,1e8 --methods both   # scaling at 2GiB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bsig_array.runtime.memory import peak_rss
from bsig_array.runtime.run import RunSpec

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- children


def child_screen(cfg: dict) -> dict:
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance
    from bsig_array.stages.screen.driver import screen

    t0, c0 = time.perf_counter(), _cpu()
    ds = open_store(cfg["store"])
    score = align_performance(load_performance(cfg["performance"]), ds["model"].values)
    result = screen(ds["nll"], score, coefficients=cfg["method"], alpha=0.01, null_permutations=cfg.get("null_permutations", 0), store=cfg["store"],
                    out=cfg["out"], overwrite=True, passes=cfg.get("passes", "auto"), run=RunSpec.build(memory_limit=cfg["memory_limit"], scheduler="threads", workers=cfg.get("workers")))
    wall, cpu = time.perf_counter() - t0, _cpu() - c0  # the output is streamed during the screen
    return {"timings": result.attrs["timings"], "plan": result.attrs["plan"], "total_s": wall, "cpu_s": cpu,
            "n_candidates": int(result.sizes["candidate"]), "peak_rss": peak_rss(), "passes": result.attrs["passes"],
            "reread_chunks": result.attrs["reread_chunks"], "spill_bytes": result.attrs["spill_bytes"]}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_read(cfg: dict) -> dict:
    """The store's bare read + decode rate (the screen's read path, values checked), on N threads."""
    from concurrent.futures import ThreadPoolExecutor

    from bsig_array.io.perplexity_store.chunks import chunk_sources
    from bsig_array.io.perplexity_store.reader import open_store

    ds = open_store(cfg["store"])
    sources = chunk_sources(ds["nll"], store=cfg["store"])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg["workers"]) as pool:
        tokens = sum(pool.map(lambda src: src.load()[0].shape[1], sources))
    return {"tokens": tokens, "total_s": time.perf_counter() - t0}


def _load_prefix(store: str, n: int):
    import numpy as np

    from bsig_array.io.perplexity_store.reader import open_store

    ds = open_store(store)
    nll = np.asarray(ds["nll"][:, :n].values)
    return ds, nll


def child_paper(cfg: dict) -> dict:
    from bsig_array.io.scores import align_performance, load_performance

    sys.path.insert(0, str(HERE))
    from paper_repo_thrush import paper_tails, paper_thrush

    ds, nll = _load_prefix(cfg["store"], cfg["tokens"])
    scores = align_performance(load_performance(cfg["performance"]), ds["model"].values).values.T.copy()
    base = peak_rss()
    t0 = time.perf_counter()
    gamma = paper_thrush(nll, scores)
    t1 = time.perf_counter()
    paper_tails(gamma, 0.01)
    t2 = time.perf_counter()
    return {"rank_product_s": t1 - t0, "tails_s": t2 - t1, "total_s": t2 - t0, "tokens": nll.shape[1],
            "peak_rss": peak_rss(), "rss_before": base}


def child_numpy_preselect(cfg: dict) -> dict:
    from bsig_array.io.scores import align_performance, load_performance

    sys.path.insert(0, str(HERE))
    from numpy_preselect import numpy_preselect

    ds, nll = _load_prefix(cfg["store"], cfg["tokens"])
    scores = align_performance(load_performance(cfg["performance"]), ds["model"].values).values.T.copy()
    t0 = time.perf_counter()
    numpy_preselect(nll, scores)
    return {"total_s": time.perf_counter() - t0, "tokens": nll.shape[1], "peak_rss": peak_rss()}


def child_check_peers(cfg: dict) -> dict:
    """The peers compute the same numbers as the kernels (so the comparison is fair)."""
    import numpy as np

    from bsig_array import kernels as K
    from bsig_array.io.scores import align_performance, load_performance

    sys.path.insert(0, str(HERE))
    from numpy_preselect import numpy_preselect
    from paper_repo_thrush import paper_thrush

    ds, nll = _load_prefix(cfg["store"], 20_000)
    scores = align_performance(load_performance(cfg["performance"]), ds["model"].values).values.T.copy()
    thrush_ok = np.array_equal(np.rint(2 * paper_thrush(nll, scores)).astype(np.int32), K.thrush_codes(nll, scores, "first"))
    pre_ok = np.array_equal(numpy_preselect(nll, scores), K.preselect_codes(nll, scores))
    return {"thrush_equal": bool(thrush_ok), "preselect_equal": bool(pre_ok)}


def child_breakdown(cfg: dict) -> dict:
    """Where one store chunk's time goes, single-threaded: read, decompress, rank, product, histogram."""
    import numba
    import numpy as np
    import zarr

    from bsig_array import kernels as K
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance

    numba.set_num_threads(1)
    ds = open_store(cfg["store"])
    scores = align_performance(load_performance(cfg["performance"]), ds["model"].values).values.T.copy()
    arr = zarr.open_group(cfg["store"], mode="r")["nll"]
    w = arr.chunks[1]
    files = sorted((Path(cfg["store"]) / "nll" / "c").rglob("*"))
    chunk_file = [f for f in files if f.is_file()][0]
    t0 = time.perf_counter()
    raw = chunk_file.read_bytes()
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    block = arr[:, :w]
    t_zarr = time.perf_counter() - t0
    m = block.shape[0]
    K.thrush_codes(block[:, :1024], scores)  # compile outside the timing
    K.screen_codes(block[:, :1024], scores)
    res = {"chunk_tokens": w, "compressed_bytes": len(raw), "raw_bytes": block.nbytes, "read_s": t_read,
           "decompress_s": max(t_zarr - t_read, 0.0)}
    step = 1 << 16
    for name, fn in (
        ("rank_s", lambda p: K.ranks(p, "average")),
        ("thrush_codes_s", lambda p: K.thrush_codes(p, scores)),
        ("preselect_codes_s", lambda p: K.preselect_codes(p, scores)),
        ("both_codes_s", lambda p: K.screen_codes(p, scores)),
    ):
        t0 = time.perf_counter()
        for s in range(0, w, step):
            fn(np.ascontiguousarray(block[:, s : s + step]))
        res[name] = time.perf_counter() - t0
    codes = K.thrush_codes(np.ascontiguousarray(block[:, :step]), scores)
    t0 = time.perf_counter()
    for _ in range(0, w, step):
        K.histogram_codes(codes, "thrush", m)
    res["histogram_thrush_s"] = time.perf_counter() - t0
    res["product_s_estimate"] = max(res["thrush_codes_s"] - res["rank_s"], 0.0)
    return res


CHILDREN = {"screen": child_screen, "paper": child_paper, "numpy_preselect": child_numpy_preselect,
            "check": child_check_peers, "breakdown": child_breakdown, "read": child_read}


def run_child(kind: str, cfg: dict, *, script: str = __file__, env: dict[str, str] | None = None) -> dict:
    """``script --child kind cfg`` in a fresh interpreter (its own peak RSS); its last stdout line as JSON."""
    env = {**os.environ, "BSIG_PROGRESS": "0"} if env is None else env
    proc = subprocess.run([sys.executable, script, "--child", kind, json.dumps(cfg)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def bench_size(d: int, args: argparse.Namespace) -> dict:
    from bsig_array.pipelines.synth import synthesize

    pool = Path(args.workdir) / f"pool-{d}"
    t0 = time.perf_counter()
    if not (pool / "perplexity.zarr").exists():
        synthesize(pool, models=args.models, benchmarks=args.benchmarks, tokens=d, seed=0, questions=False,
                   dtype=args.dtype)
    print(f"# pool d={d:,}: {args.models} models x {args.benchmarks} benchmarks ({time.perf_counter() - t0:.0f} s to build)",
          flush=True)
    base = {"store": str(pool / "perplexity.zarr"), "performance": str(pool / "performance.csv"),
            "memory_limit": args.memory_limit}
    runs = {}
    for method in args.methods.split(","):
        runs[method] = run_child("screen", {**base, "method": method, "out": str(pool / f"screen-{method}.zarr")})
        _report(f"screen {method}", d, runs[method])
    return {"d": d, "runs": runs, "base": base, "pool": pool}


def _report(label: str, d: int, r: dict) -> None:
    t = r["timings"]
    passes = [key for key in ("pass_s", "pass1_s", "pass2_s") if key in t]
    rates = "  ".join(f"{key[:-2]} {t[key]:6.2f} s ({d / t[key]:>11,.0f} tok/s)" for key in passes)
    print(f"  {label:22s} {rates}  merge {t['merge_s']:.2f} s  total {r['total_s']:.2f} s  "
          f"cpu/wall {r['cpu_s'] / r['total_s']:.2f}  peak RSS {_gib(r['peak_rss'])}  spill {_gib(r['spill_bytes'])}  "
          f"reread {r['reread_chunks']}  [{r['plan']}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="1e7", help="comma-separated pool sizes d")
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--benchmarks", type=int, default=88)
    parser.add_argument("--methods", default="thrush,preselect,both")
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--passes-study", action="store_true", help="one vs two passes at 1 and 2 workers")
    parser.add_argument("--peer-tokens", type=float, default=2e6, help="tokens given to peer (a)")
    parser.add_argument("--preselect-peer-tokens", type=float, default=5e4, help="tokens given to peer (b)")
    parser.add_argument("--workdir", default="/tmp/bsig-bench-screen")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return

    sizes = [int(float(x)) for x in args.tokens.split(",")]
    print(f"# bsig screen benchmark, {os.cpu_count()} CPU(s); machine shared with other jobs, so timings are noisy")
    results = [bench_size(d, args) for d in sizes]
    big = results[-1]
    d = big["d"]
    base = big["base"]

    check = run_child("check", base)
    print(f"# peers agree with the kernels on 20,000 tokens: thrush {check['thrush_equal']}, preselect {check['preselect_equal']}")
    n_a = min(int(args.peer_tokens), d)
    a = run_child("paper", {**base, "tokens": n_a})
    rate_a = n_a / a["total_s"]
    peak_a_full = a["rss_before"] + (a["peak_rss"] - a["rss_before"]) * d / n_a
    print(f"  peer (a) paper repo thrush on {n_a:,} in-memory tokens: rank+product {a['rank_product_s']:.2f} s, "
          f"tails {a['tails_s']:.2f} s -> {rate_a:,.0f} tok/s; peak RSS {_gib(a['peak_rss'])} "
          f"(extrapolated to d={d:,}: {_gib(peak_a_full)})")
    n_b = min(int(args.preselect_peer_tokens), d)
    b = run_child("numpy_preselect", {**base, "tokens": n_b})
    rate_b = n_b / b["total_s"]
    print(f"  peer (b) numpy broadcast preselect on {n_b:,} tokens: {b['total_s']:.2f} s -> {rate_b:,.0f} tok/s")

    bd = run_child("breakdown", base)
    w = bd["chunk_tokens"]
    print(f"# one store chunk ({w:,} tokens, {bd['compressed_bytes'] / 2**20:.0f} MiB compressed of "
          f"{bd['raw_bytes'] / 2**20:.0f} MiB), one thread, tokens/s:")
    for key in ("read_s", "decompress_s", "rank_s", "product_s_estimate", "thrush_codes_s", "preselect_codes_s",
                "both_codes_s", "histogram_thrush_s"):
        print(f"    {key[:-2]:20s} {bd[key]:7.3f} s  ({w / bd[key] if bd[key] else float('inf'):>12,.0f} tok/s)")

    print("# one pass vs two passes, and tokens/s per pass vs the bare read + decode (same pool)")
    for workers in (1, 2) if args.passes_study else ():
        read = run_child("read", {**base, "workers": workers})
        read_rate = read["tokens"] / read["total_s"]
        for passes in ("1", "2"):
            r = run_child("screen", {**base, "method": "thrush", "passes": passes, "workers": workers,
                                     "out": str(big["pool"] / "screen-passes.zarr")})
            t = r["timings"]
            per_pass = [d / t[key] for key in ("pass_s", "pass1_s", "pass2_s") if key in t]
            print(f"  thrush, {workers} worker(s), {passes} pass(es): " + ", ".join(f"{v:,.0f}" for v in per_pass)
                  + f" tok/s per pass vs read+decode {read_rate:,.0f} tok/s on {workers} thread(s) "
                  f"({per_pass[0] / read_rate:.2f} of I/O-bound); total {r['total_s']:.2f} s, "
                  f"cpu/wall {r['cpu_s'] / r['total_s']:.2f}", flush=True)

    print("# ratios (same run)")
    runs = big["runs"]
    if "thrush" in runs:
        e2e = runs["thrush"]["total_s"]
        print(f"  thrush end to end (read, decode, tails, output written: {e2e:.1f} s for {d:,} tokens) vs peer (a) "
              f"extrapolated ({d / rate_a:.1f} s): {d / rate_a / e2e:.1f}x (target >= 20x)")
        print(f"  thrush peak RSS {_gib(runs['thrush']['peak_rss'])} vs peer (a) {_gib(peak_a_full)} extrapolated: "
              f"{runs['thrush']['peak_rss'] / peak_a_full:.3f}")
    if "preselect" in runs:
        e2e = runs["preselect"]["total_s"]
        print(f"  preselect end to end {d / e2e:,.0f} tok/s: {d / e2e / rate_b:.0f}x peer (b) (target >= 100x)")
    for method, r in runs.items():
        print(f"  {method}: cpu time per wall second {r['cpu_s'] / r['total_s']:.2f} (target >= 1.8 on an idle 2-core machine)")
    if len(results) > 1:
        for small, large in zip(results, results[1:]):
            for method in large["runs"]:
                ratio = large["runs"][method]["total_s"] / small["runs"][method]["total_s"]
                rss = (small["runs"][method]["peak_rss"], large["runs"][method]["peak_rss"])
                print(f"  scaling {method}: time(d={large['d']:,}) / time(d={small['d']:,}) = {ratio:.2f} "
                      f"(d ratio {large['d'] / small['d']:.0f}, target <= 11); peak RSS {_gib(rss[0])} -> {_gib(rss[1])} "
                      f"(limit {args.memory_limit})")


if __name__ == "__main__":
    main()
