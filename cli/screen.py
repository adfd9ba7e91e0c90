"""``bsig screen``: Thrush / Pre-select screening with exact tail thresholds."""

from __future__ import annotations

from typing import Any

import click

from bsig_array.cli.run import build_run, coefficients_option, run_options
from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import TIES


@click.command()
@click.option("--perplexity", "perplexity", required=True, type=Where(), help="Perplexity store (perplexity.zarr).")
@click.option("--performance", "performance", required=True, type=Where(),
              help="Benchmark scores: wide CSV/Parquet (model column + one column per benchmark), NetCDF or Zarr.")
@click.option("--out", "-o", required=True, type=Where(), help="Screen output to write (a .zarr directory).")
@coefficients_option("--method", ("thrush", "preselect", "both"), "both",
                     "Screening coefficients: Thrush, Pre-select or both (the output's coefficient dimension).")
@click.option("--alpha", type=float, default=DEFAULTS.alpha, show_default=True,
              help="Fraction kept per tail, in (0, 0.5): k = max(floor(alpha*d), 1) tokens per tail.")
@click.option("--ties", type=click.Choice(TIES), default=DEFAULTS.ties, show_default=True,
              help="Rank ties in NLL: midranks, or store order (the paper repo).")
@run_options("memory_limit", "scheduler", "workers", "device",
             help={"workers": "At most this many chunks at once (default: CPU count, lowered to fit memory).",
                   "device": "gpu: CuPy kernels (needs CuPy and a CUDA GPU); auto: gpu when available."})
@click.option("--null-permutations", type=int, default=0, show_default=True,
              help="Label-permuted copies of each benchmark to score: estimates each tail's false discovery rate.")
@run_options("seed", help={"seed": "Seed of the label permutations."})
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
    coefficients: str,
    alpha: float,
    ties: str,
    memory_limit: str | None,
    scheduler: str | None,
    workers: int | None,
    device: str | None,
    null_permutations: int,
    seed: int | None,
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
    from bsig_array.diagnostics.reports import (
        check_report_paths,
        dask_performance_report,
        screen_breakdown,
        write_report_text,
    )
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.location import local_copy
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance
    from bsig_array.io.screen_output import SCREEN_OUTPUT
    from bsig_array.stages.screen import screen as run_screen

    # Before the work: never over an input, another kind of artifact, or without --overwrite.
    run = build_run(memory_limit=memory_limit, scheduler=scheduler, workers=workers, device=device, seed=seed)
    check_new_output(out, overwrite=overwrite, what="screen output", kind=SCREEN_OUTPUT, inputs=[perplexity, performance, metadata])
    ds = open_store(perplexity)
    with local_copy(metadata) as meta:  # a URL: read from a temporary copy
        score = load_performance(performance, metadata=meta)
    check_report_paths([profile_path, performance_report], [perplexity, performance, metadata, out])
    with dask_performance_report(run.scheduler, performance_report) as scheduler:
        result = run_screen(
            ds["nll"], score, coefficients=coefficients, alpha=alpha, ties=ties, null_permutations=null_permutations,
            store=perplexity, out=out, overwrite=overwrite, passes=passes,
            input_paths={"performance": performance, "metadata": metadata}, run=run.replace(scheduler=scheduler),
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
