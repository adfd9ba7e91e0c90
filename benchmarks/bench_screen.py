"""Benchmark ``bsig screen`` end to end from the compressed store against its peers.

Peers, measured in the same run:

(a) the paper repository's Thrush (``paper_repo_thrush.py``): pandas ``rank(method="first")`` on the
    whole in-memory matrix, one matrix product, sorting for the tails;
(b) a numpy broadcast Pre-select (``numpy_preselect.py``).

Every measurement runs in a fresh subprocess so its peak RSS (``VmHWM``) is its own.  The
screen runs read the compressed ``bsig synth`` store (both passes; pass 2 also spills the tail
members' NLL columns, which the output write gathers); the peers get their matrix in memory for free (loading is not timed) and run on a
prefix of the tokens, since they hold everything in memory and (b) is slow; their rates are per
token and their peak RSS is also extrapolated linearly to the full d (labelled as such).

Usage::

    python benchmarks/bench_screen.py --tokens 1e7 --workdir /tmp/bench-screen
    python benchmarks/bench_screen.py --tokens 1e6,1e7      # also prints the scaling ratio
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

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- children


def child_screen(cfg: dict) -> dict:
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance
    from bsig_array.stages.screen.driver import screen

    t0 = time.perf_counter()
    ds = open_store(cfg["store"])
    score = align_performance(load_performance(cfg["performance"]), ds["model"].values)
    result = screen(ds["nll"], score, coefficients=cfg["method"], alpha=0.01, memory_limit=cfg["memory_limit"],
                    scheduler="threads", null_permutations=cfg.get("null_permutations", 0), store=cfg["store"],
                    out=cfg["out"], overwrite=True)
    t1 = t2 = time.perf_counter()  # the output is streamed during the screen
    return {"timings": result.attrs["timings"], "plan": result.attrs["plan"], "screen_s": t1 - t0,
            "write_s": t2 - t1, "total_s": t2 - t0, "n_candidates": int(result.sizes["candidate"]),
            "peak_rss": peak_rss()}


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
            "check": child_check_peers, "breakdown": child_breakdown}


def run_child(kind: str, cfg: dict) -> dict:
    env = {**os.environ, "BSIG_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(cfg)], capture_output=True,
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
        synthesize(pool, models=args.models, benchmarks=args.benchmarks, tokens=d, seed=0, questions=False)
    print(f"# pool d={d:,}: {args.models} models x {args.benchmarks} benchmarks ({time.perf_counter() - t0:.0f} s to build)",
          flush=True)
    base = {"store": str(pool / "perplexity.zarr"), "performance": str(pool / "performance.csv"),
            "memory_limit": args.memory_limit}
    runs = {}
    for method in args.methods.split(","):
        runs[method] = run_child("screen", {**base, "method": method, "out": str(pool / f"screen-{method}.zarr")})
        r = runs[method]
        t = r["timings"]
        print(f"  screen {method:9s} pass1 {t['pass1_s']:7.2f} s ({d / t['pass1_s']:>12,.0f} tok/s)  "
              f"pass2 {t['pass2_s']:7.2f} s ({d / t['pass2_s']:>12,.0f} tok/s)  merge {t['merge_s']:.2f} s  "
              f"write+gather {r['write_s']:.2f} s  total {r['total_s']:.2f} s  peak RSS {_gib(r['peak_rss'])}  "
              f"[{r['plan']}]", flush=True)
        phases = ", ".join(f"{key[:-2]} {val:.2f}" for key, val in t.items() if key.count("_") == 2)
        print(f"      task seconds summed over workers: {phases}", flush=True)
    return {"d": d, "runs": runs, "base": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="1e7", help="comma-separated pool sizes d")
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--benchmarks", type=int, default=88)
    parser.add_argument("--methods", default="thrush,preselect,both")
    parser.add_argument("--memory-limit", default="3GiB")
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

    print("# ratios (same run)")
    runs = big["runs"]
    if "thrush" in runs:
        t = runs["thrush"]["timings"]
        e2e = runs["thrush"]["total_s"]
        print(f"  thrush per pass: pass1 {d / t['pass1_s'] / rate_a:.1f}x, pass2 {d / t['pass2_s'] / rate_a:.1f}x peer (a) "
              f"(target >= 10x, i.e. ~4e6 tok/s per pass)")
        print(f"  thrush end to end (both passes + gather + write, {e2e:.1f} s for {d:,} tokens) vs peer (a) "
              f"extrapolated ({d / rate_a:.1f} s): {d / rate_a / e2e:.1f}x")
        print(f"  thrush peak RSS {_gib(runs['thrush']['peak_rss'])} vs peer (a) {_gib(peak_a_full)} extrapolated: "
              f"{runs['thrush']['peak_rss'] / peak_a_full:.3f} (target <= 0.1)")
    if "preselect" in runs:
        t = runs["preselect"]["timings"]
        for p in ("pass1", "pass2"):
            rate = d / t[f"{p}_s"]
            print(f"  preselect {p}: {rate:,.0f} tok/s (target >= 1e6), {rate / rate_b:.0f}x peer (b) (target >= 10x)")
    if len(results) > 1:
        for small, large in zip(results, results[1:]):
            for method in large["runs"]:
                ratio = large["runs"][method]["total_s"] / small["runs"][method]["total_s"]
                rss = (small["runs"][method]["peak_rss"], large["runs"][method]["peak_rss"])
                print(f"  scaling {method}: time(d={large['d']:,}) / time(d={small['d']:,}) = {ratio:.2f} "
                      f"(d ratio {large['d'] / small['d']:.0f}); peak RSS {_gib(rss[0])} -> {_gib(rss[1])}")


if __name__ == "__main__":
    main()
