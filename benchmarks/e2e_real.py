"""Real small end-to-end: zoo of >= 8 real models x stdlib corpus -> store -> lm-eval scores -> screen -> select.

Every model is derived from the two offline GGUF models (see bsig_array.models.zoo for how each variant is
made); nothing comes from a hub.  Prints the time of each step and the peak RSS.  Resumable: rerun
with the same --out to continue after an interruption.

    python benchmarks/e2e_real.py --out /tmp/bsig-e2e [--docs 40 --sample-rate 0.004 --limit 12]
"""

from __future__ import annotations

import argparse
import time

from bsig_array.runtime.memory import peak_rss
from bsig_array.runtime.run import RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--docs", type=int, default=40, help="standard-library files in the corpus")
    parser.add_argument("--sample-rate", type=float, default=0.004)
    parser.add_argument("--context-pieces", type=int, default=8)
    parser.add_argument("--limit", type=int, default=12, help="items per lm-eval task")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance
    from bsig_array.models.zoo import DEFAULT_ZOO, VARIANTS
    from bsig_array.pipelines.zoo_pool import build_zoo_pool
    from bsig_array.stages.screen.driver import screen
    from bsig_array.stages.select import select_signatures

    t0 = time.perf_counter()
    for name in DEFAULT_ZOO:
        print(f"  {name}: {VARIANTS[name].describe()}")
    pool = build_zoo_pool(args.out, n_docs=args.docs, sample_rate=args.sample_rate,
                          context_pieces=args.context_pieces, limit=args.limit, log=lambda s: print("  " + s, flush=True))
    t_pool = time.perf_counter() - t0
    ds = open_store(pool.perplexity)
    score = align_performance(load_performance(pool.performance), ds)
    t = time.perf_counter()
    screened = screen(ds["nll"], score, alpha=args.alpha, run=RunSpec.build(memory_limit="1GiB"))
    t_screen = time.perf_counter() - t
    t = time.perf_counter()
    sig = select_signatures(screened, score)
    t_select = time.perf_counter() - t
    total = time.perf_counter() - t0
    print(f"models {ds.sizes['model']}, tokens {ds.sizes['token']}, benchmarks {score.sizes['benchmark']}")
    print(score.to_pandas().round(3).to_string())
    print(sig[["n_selected", "r2_adj", "loocv_r2"]].to_dataframe().round(3).to_string())
    for key, value in pool.seconds.items():
        print(f"  {key:28s} {value:8.1f} s")
    print(f"pool {t_pool:.1f} s, screen {t_screen:.2f} s, select {t_select:.2f} s, total {total:.1f} s")
    print(f"peak RSS {peak_rss() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
