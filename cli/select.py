"""``bsig select``: each benchmark's signature from the screened candidates (AIC or Lasso, LOO-CV)."""

from __future__ import annotations

import click

from bsig_array.cli.run import build_run, coefficients_option, run_options
from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import COEFFICIENTS, COVARIATES, SELECTION_METHODS


@click.command()
@click.option("--screen", "screen_path", required=True, type=Where(), help="screen.zarr from bsig screen")
@click.option("--performance", "performance_path", required=True, type=Where(),
              help="scores the screen was run with: CSV/Parquet/NetCDF/Zarr")
@click.option("--out", required=True, type=Where(), help="output signatures.zarr")
@click.option("--method", type=click.Choice(SELECTION_METHODS), default="aic", show_default=True,
              help="AIC forward selection, or the paper repo's Lasso (for the AIC-vs-Lasso comparison)")
@coefficients_option("--screen-method", COEFFICIENTS, "thrush", "whose tails are the candidates: Thrush or Pre-select")
@click.option("--delta", type=float, default=0.0, show_default=True, help="add a token only while AIC drops by more than this")
@click.option("--max-features", type=int, default=None, help="cap on tokens per signature  [default: models - 2]")
@click.option("--covariate", type=click.Choice(COVARIATES), default="perplexity", show_default=True,
              help="regress scores on exp(nll) (the paper) or on nll")
@run_options("seed", help={"seed": "seed of the candidate shuffle that breaks exact ties"})
@click.option("--lasso-alpha", type=float, default=DEFAULTS.lasso_alpha, show_default=True,
              help="Lasso penalty on standardized columns")
@click.option("--corpus", "corpus_path", type=Where(), default=None,
              help="corpus.zarr: add each token's context and target text")
@run_options("memory_limit", "scheduler", "workers", help={
    "scheduler": "where benchmarks run: threads, processes, synchronous, or a dask.distributed address (tcp://host:port)",
    "workers": "at most this many benchmarks at once (default: CPU count, lowered to fit --memory-limit)"})
@click.option("--loocv/--no-loocv", default=True, show_default=True,
              help="leave-one-model-out validation (reruns the selection once per model)")
@run_options("device", help={
    "device": "gpu: AIC selection steps as CUDA kernels where a benchmark's candidates fit device memory; auto: gpu "
              "when available"})
@click.option("--overwrite", is_flag=True, help="replace --out if it exists")
@click.option("--allow-mismatch", is_flag=True,
              help="use a --performance that is not the matrix the screen was made with (warns instead of refusing)")
@click.option("--performance-report", type=Where(dir_okay=False),
              help="write Dask's performance report (HTML, a path or URL); needs a dask.distributed --scheduler")
def select(screen_path, performance_path, out, method, coefficients, delta, max_features, covariate, seed,
           lasso_alpha, corpus_path, memory_limit, scheduler, workers, loocv, device, overwrite, allow_mismatch,
           performance_report):
    """Pick each benchmark's signature tokens from its screened candidates.

    AIC forward selection (OLS with intercept, statsmodels' AIC) adds the best candidate while the AIC
    drops by more than --delta; --no-loocv skips the leave-one-model-out R2 (m reruns per benchmark).
    --screen, --performance and --out may be URLs (s3://…, with --storage-options); on a
    dask.distributed --scheduler the workers read the screen's candidate columns themselves.
    """
    from bsig_array.diagnostics.reports import check_report_paths, dask_performance_report
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.scores import load_performance
    from bsig_array.io.screen_output import open_screen
    from bsig_array.io.signatures import SIGNATURES, attach_contexts, write_signatures
    from bsig_array.stages.select import select_signatures

    # Before the work: never over an input, another kind of artifact, or without --overwrite.
    run = build_run(memory_limit=memory_limit, scheduler=scheduler, workers=workers, device=device, seed=seed)
    check_new_output(out, overwrite=overwrite, what="signatures", kind=SIGNATURES, inputs=[screen_path, performance_path, corpus_path])
    check_report_paths([performance_report], [screen_path, performance_path, corpus_path, out])
    screen = open_screen(screen_path)
    score = load_performance(performance_path)
    with dask_performance_report(run.scheduler, performance_report) as scheduler:
        ds = select_signatures(
            screen, score, method=method, screen_method=coefficients, delta=delta, max_features=max_features,
            covariate=covariate, loocv=loocv, lasso_alpha=lasso_alpha, allow_mismatch=allow_mismatch,
            input_paths={"screen": screen_path, "performance": performance_path, "corpus": corpus_path},
            run=run.replace(scheduler=scheduler),
        )
    if corpus_path is not None:
        ds = attach_contexts(ds, corpus_path)
    path = write_signatures(ds, out, overwrite=overwrite)
    n = ds["n_selected"].values
    summary = f"{int(n.min())}-{int(n.max())} tokens per signature" if n.size else "no benchmarks"
    if loocv and n.size:
        summary += f", median LOO-CV R2 {float(ds['loocv_r2'].median()):.3f} (in-sample R2_adj {float(ds['r2_adj'].median()):.3f})"
    click.echo(f"wrote {path} ({ds.sizes['benchmark']} benchmarks; {summary})")
