"""``bsig overlap``: signature, performance and semantic overlap matrices."""

from __future__ import annotations

import click

from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import COVARIATES, POPULATIONS


@click.command()
@click.option("--signatures", "signatures_path", required=True, type=click.Path(), help="signatures.zarr from bsig select")
@click.option("--perplexity", "perplexity_path", required=True, type=click.Path(), help="perplexity store the signatures came from")
@click.option("--performance", "performance_path", required=True, type=click.Path(), help="scores: CSV/Parquet/NetCDF/Zarr")
@click.option("--metadata", type=click.Path(), default=None, help="benchmark metadata CSV (family, format, category, function)")
@click.option("--questions", type=click.Path(), default=None, help="directory of <benchmark>.jsonl|.txt question files")
@click.option("--population", type=click.Choice(POPULATIONS), default="signatures", show_default=True,
              help="tokens each model is z-scored over")
@click.option("--bootstrap", type=int, default=DEFAULTS.bootstrap, show_default=True, help="semantic samples per benchmark pair")
@click.option("--encoder", type=click.Path(), default=None, help="sentence-transformers directory (default: offline all-MiniLM-L6-v2)")
@click.option("--covariate", type=click.Choice(COVARIATES), default=None,
              help="values z-scored at the signature level (default: the signatures' covariate attribute)")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="output overlap file (*.nc or *.zarr)")
def overlap(signatures_path, perplexity_path, performance_path, metadata, questions, population, bootstrap, encoder, covariate, seed, out):
    """Overlap matrices (benchmark_a x benchmark_b) at the signature, performance and semantic level."""
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.overlap_file import write_overlap
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance
    from bsig_array.io.signatures import load_signatures
    from bsig_array.stages.overlap import compute_overlaps

    signatures = load_signatures(signatures_path)
    nll = open_store(perplexity_path)["nll"]
    score = load_performance(performance_path, metadata=metadata)
    ds = compute_overlaps(signatures, nll, score, questions=questions, population=population,
                          bootstrap=bootstrap, encoder=encoder, seed=seed, covariate=covariate,
                          progress=rich_progress)
    path = write_overlap(ds, out)
    if "missing_questions" in ds["semantic"].attrs:
        click.echo(f"warning: no questions for {ds['semantic'].attrs['missing_questions']} (semantic overlap NaN)", err=True)
    click.echo(f"wrote {path} ({ds.sizes['benchmark_a']} benchmarks)")
