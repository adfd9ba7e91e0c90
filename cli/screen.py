"""``bsig screen``: Thrush / Pre-select screening with exact tail thresholds."""

from __future__ import annotations

from pathlib import Path

import click

from bsig_array.errors import BsigError


@click.command()
@click.option("--perplexity", "perplexity", required=True, type=click.Path(), help="Perplexity store (perplexity.zarr).")
@click.option("--performance", "performance", required=True, type=click.Path(),
              help="Benchmark scores: wide CSV/Parquet (model column + one column per benchmark), NetCDF or Zarr.")
@click.option("--out", "-o", required=True, type=click.Path(), help="Screen output to write (a .zarr directory).")
@click.option("--method", type=click.Choice(["thrush", "preselect", "both"]), default="both", show_default=True)
@click.option("--alpha", type=float, default=0.01, show_default=True,
              help="Fraction kept per tail, in (0, 0.5): k = max(floor(alpha*d), 1) tokens per tail.")
@click.option("--ties", type=click.Choice(["average", "first"]), default="average", show_default=True,
              help="Rank ties in NLL: midranks, or store order (the paper repo).")
@click.option("--memory-limit", default="2GiB", show_default=True,
              help="Peak memory promise; sets block size and concurrency, refuses a plan that cannot fit.")
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, processes, synchronous, or a dask.distributed address (tcp://host:port).")
@click.option("--workers", type=int, help="At most this many chunks at once (default: CPU count, lowered to fit memory).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="gpu: CuPy kernels (needs CuPy and a CUDA GPU); auto: gpu when available.")
@click.option("--null-permutations", type=int, default=0, show_default=True,
              help="Label-permuted copies of each benchmark to score: estimates each tail's false discovery rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the label permutations.")
@click.option("--metadata", type=click.Path(exists=True), help="Benchmark metadata CSV (family, format, category, function).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def screen(perplexity, performance, out, method, alpha, ties, memory_limit, scheduler, workers, device,
           null_permutations, seed, metadata, overwrite) -> None:
    """Score every token against every benchmark and keep the exact top and bottom alpha tails.

    \b
    Pass 1 streams the store into exact histograms of the integer scores (Thrush 2*gamma,
    Pre-select eta*Z) and finds each tail's boundary; pass 2 streams it again and collects exactly
    k tokens per tail (ties at the boundary: lowest token ids).  The output holds candidate ids,
    scores, thresholds, histograms and the candidates' NLL columns (candidate_nll), written
    atomically to --out.
    """
    from bsig_array.performance import load_performance
    from bsig_array.screen import screen as run_screen
    from bsig_array.screen import write_screen
    from bsig_array.store import open_store

    if Path(out).exists() and not overwrite:
        raise BsigError(f"output {out} already exists; pass --overwrite to replace it or pick another path")
    ds = open_store(perplexity)
    score = load_performance(performance, metadata=metadata)
    result = run_screen(
        ds["nll"], score, methods=method, alpha=alpha, ties=ties, memory_limit=memory_limit, scheduler=scheduler,
        device=device, null_permutations=null_permutations, seed=seed, workers=workers, store=perplexity,
    )
    path = write_screen(result, out, overwrite=overwrite, scheduler=scheduler)
    click.echo(
        f"wrote {path}: {result.sizes['benchmark']} benchmarks x {len(result.attrs['methods'])} method(s), "
        f"k={result.attrs['k']:,} per tail of {result.attrs['n_tokens']:,} tokens, "
        f"{result.sizes['candidate']:,} distinct candidates ({result.attrs['plan']})"
    )
    if null_permutations:
        fdr = result["null_fdr"]
        for meth in result["method"].values:
            row = fdr.sel({"method": meth}).values  # method= is a keyword of .sel
            click.echo(f"  {meth}: estimated FDR of the tails median {float(_median(row)):.3f}, max {float(row.max()):.3f}")


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))
