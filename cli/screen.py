"""``bsig screen``: Thrush / Pre-select screening with exact tail thresholds."""

from __future__ import annotations

from typing import Any

import click

from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import DEVICES, TIES


@click.command()
@click.option("--perplexity", "perplexity", required=True, type=Where(), help="Perplexity store (perplexity.zarr).")
@click.option("--performance", "performance", required=True, type=Where(),
              help="Benchmark scores: wide CSV/Parquet (model column + one column per benchmark), NetCDF or Zarr.")
@click.option("--out", "-o", required=True, type=Where(), help="Screen output to write (a .zarr directory).")
@click.option("--method", type=click.Choice(["thrush", "preselect", "both"]), default="both", show_default=True)
@click.option("--alpha", type=float, default=DEFAULTS.alpha, show_default=True,
              help="Fraction kept per tail, in (0, 0.5): k = max(floor(alpha*d), 1) tokens per tail.")
@click.option("--ties", type=click.Choice(TIES), default=DEFAULTS.ties, show_default=True,
              help="Rank ties in NLL: midranks, or store order (the paper repo).")
@click.option("--memory-limit", default=DEFAULTS.memory_limit, show_default=True,
              help="Peak memory promise; sets block size and concurrency, refuses a plan that cannot fit.")
@click.option("--scheduler", default=DEFAULTS.scheduler, show_default=True,
              help="threads, processes, synchronous, or a dask.distributed address (tcp://host:port).")
@click.option("--workers", type=int, help="At most this many chunks at once (default: CPU count, lowered to fit memory).")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULTS.device, show_default=True,
              help="gpu: CuPy kernels (needs CuPy and a CUDA GPU); auto: gpu when available.")
@click.option("--null-permutations", type=int, default=0, show_default=True,
              help="Label-permuted copies of each benchmark to score: estimates each tail's false discovery rate.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Seed of the label permutations.")
@click.option("--metadata", type=Where(exists=True), help="Benchmark metadata CSV (family, format, category, function).")
@click.option("--passes", type=click.Choice(["auto", "1", "2"]), default="auto", show_default=True,
              help="Reads of the store: one (running tail boundaries, exact), two (the fallback; "
                   "auto uses it with --null-permutations).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--profile", "profile_path", type=Where(dir_okay=False),
              help="Write the run's time breakdown as JSON: read/decode, compute, spill per pass, merge, write "
                   "(a path or URL).")
@click.option("--performance-report", type=Where(dir_okay=False),
              help="Write Dask's performance report (HTML, a path or URL); needs a dask.distributed --scheduler.")
def screen(
    perplexity: str,
    performance: str,
    out: str,
    method: str,
    alpha: float,
    ties: str,
    memory_limit: str,
    scheduler: str,
    workers: int | None,
    device: str,
    null_permutations: int,
    seed: int,
    metadata: str | None,
    passes: str,
    overwrite: bool,
    profile_path: str | None,
    performance_report: str | None,
) -> None:
    """Score every token against every benchmark and keep the exact top and bottom alpha tails.

    \b
    One pass over the store counts exact histograms of the integer scores (Thrush 2*gamma,
    Pre-select eta*Z) and spills, next to --out (in TMPDIR for an s3:// or other URL --out), every
    token that can still reach a tail (behind
    the running k-th best it cannot); the full histograms then fix each tail's boundary and exactly
    k tokens per tail are merged out of core (ties at the boundary: lowest token ids).  The output
    holds candidate ids, scores, thresholds, histograms and the candidates' NLL columns
    (candidate_nll), streamed atomically to --out.

    \b
    Stores and files may be URLs (s3://bucket/pool.zarr, with --storage-options); on
    --scheduler tcp://host:port (or DASK_SCHEDULER_ADDRESS) the workers read the store themselves.
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.atomic import SCREEN_OUTPUT, check_new_output
    from bsig_array.io.location import local_copy
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance
    from bsig_array.stages.profile import (
        check_report_paths,
        dask_performance_report,
        screen_breakdown,
        write_report_text,
    )
    from bsig_array.stages.screen import screen as run_screen

    # Before the work: never over an input, another kind of artifact, or without --overwrite.
    check_new_output(out, overwrite=overwrite, what="screen output", kind=SCREEN_OUTPUT, inputs=[perplexity, performance, metadata])
    ds = open_store(perplexity)
    with local_copy(metadata) as meta:  # a URL: read from a temporary copy
        score = load_performance(performance, metadata=meta)
    check_report_paths([profile_path, performance_report], [perplexity, performance, metadata, out])
    with dask_performance_report(scheduler, performance_report) as scheduler:
        result = run_screen(
            ds["nll"], score, coefficients=method, alpha=alpha, ties=ties, memory_limit=memory_limit, scheduler=scheduler,
            device=device, null_permutations=null_permutations, seed=seed, workers=workers, store=perplexity,
            out=out, overwrite=overwrite, passes=passes, progress=rich_progress,
            input_paths={"performance": performance, "metadata": metadata},
        )
    if profile_path:
        import json

        write_report_text(profile_path, json.dumps(screen_breakdown(result.attrs), indent=2) + "\n")
    click.echo(
        f"wrote {out}: {result.sizes['benchmark']} benchmarks x {len(result.attrs['coefficients'])} coefficient(s), "
        f"k={result.attrs['k']:,} per tail of {result.attrs['n_tokens']:,} tokens, "
        f"{result.sizes['candidate']:,} distinct candidates, {result.attrs['passes']} pass(es) "
        f"({result.attrs['plan']})"
    )
    if null_permutations:
        fdr = result["null_fdr"]
        for meth in result["coefficient"].values:
            row = fdr.sel(coefficient=meth).values
            click.echo(f"  {meth}: estimated FDR of the tails median {float(_median(row)):.3f}, max {float(row.max()):.3f}")


def _median(values: Any) -> float:
    import numpy as np

    return float(np.median(values))
