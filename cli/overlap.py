"""``bsig overlap``: overlap matrices at every level the inputs allow (performance from scores alone)."""

from __future__ import annotations

import click

from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import CONTROLS, COVARIATES, POPULATIONS, SIGNATURE_MODES


@click.command()
@click.option("--signatures", "signatures_path", default=None, type=Where(),
              help="signatures.zarr from bsig select (signature level; with --perplexity)")
@click.option("--perplexity", "perplexity_path", default=None, type=Where(),
              help="perplexity store the signatures came from (signature level)")
@click.option("--performance", "performance_path", required=True, type=Where(), help="scores: CSV/Parquet/NetCDF/Zarr")
@click.option("--metadata", type=Where(), default=None, help="benchmark metadata CSV (family, format, category, function)")
@click.option("--questions", type=Where(), default=None, help="directory of <benchmark>.jsonl|.txt question files (semantic level)")
@click.option("--population", type=click.Choice(POPULATIONS), default="signatures", show_default=True,
              help="tokens each model is z-scored over")
@click.option("--bootstrap", type=int, default=DEFAULTS.bootstrap, show_default=True, help="semantic samples per benchmark pair")
@click.option("--encoder", type=Where(), default=None, help="sentence-transformers directory (default: offline all-MiniLM-L6-v2)")
@click.option("--covariate", type=click.Choice(COVARIATES), default=None,
              help="values z-scored at the signature level (default: the signatures' covariate attribute)")
@click.option("--signature-mode", type=click.Choice(SIGNATURE_MODES), default="signed", show_default=True,
              help="signed: orient each token by its association with the benchmark; paper: plain mean of z-scores")
@click.option("--control", type=click.Choice(CONTROLS), default="none", show_default=True,
              help="general: also the *_controlled levels, partial Spearman given the models' mean score rank")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--out", required=True, type=Where(), help="output overlap file (*.nc or *.zarr)")
@click.option("--allow-mismatch", is_flag=True,
              help="use a store or scores other than those the signatures were made from (warns instead of refusing)")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def overlap(signatures_path, perplexity_path, performance_path, metadata, questions, population, bootstrap, encoder, covariate,
            signature_mode, control, seed, out, allow_mismatch, overwrite):
    """Overlap matrices (benchmark_a x benchmark_b) at each level the inputs allow.

    Performance from --performance alone; semantic with --questions; signature with --signatures
    and --perplexity; --control general adds the levels net of general ability.
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.overlap_file import OVERLAP_FILE, write_overlap
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance
    from bsig_array.io.signatures import load_signatures
    from bsig_array.stages.overlap import compute_overlaps

    check_new_output(out, overwrite=overwrite, what="overlap file", kind=OVERLAP_FILE,
                     inputs=[signatures_path, perplexity_path, performance_path, metadata, questions, encoder])
    signatures = load_signatures(signatures_path) if signatures_path is not None else None
    nll = open_store(perplexity_path)["nll"] if perplexity_path is not None else None
    score = load_performance(performance_path, metadata=metadata)
    ds = compute_overlaps(signatures, nll, score, questions=questions, population=population,
                          bootstrap=bootstrap, encoder=encoder, seed=seed, covariate=covariate,
                          signature_mode=signature_mode, control=control, progress=rich_progress, allow_mismatch=allow_mismatch,
                          input_paths={"signatures": signatures_path, "perplexity": perplexity_path,
                                   "performance": performance_path, "questions": questions, "metadata": metadata})
    path = write_overlap(ds, out)
    if "semantic" in ds and "missing_questions" in ds["semantic"].attrs:
        click.echo(f"warning: no questions for {ds['semantic'].attrs['missing_questions']} (semantic overlap NaN)", err=True)
    click.echo(f"wrote {path} ({ds.sizes['benchmark_a']} benchmarks; levels: {ds.attrs['levels'].replace(',', ', ')})")
