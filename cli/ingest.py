"""``bsig ingest`` (NLL files -> perplexity store) and ``bsig validate`` (check any artifact bsig writes)."""

from __future__ import annotations

import click

from bsig_array.cli.storage import Where
from bsig_array.errors import OptionError


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=Where(exists=True))
@click.option("--out", "-o", required=True, type=Where(), help="Perplexity store to create (a .zarr directory or an s3://… URL).")
@click.option("--format", "fmt", type=click.Choice(["auto", "paper", "wide"]), default="auto", show_default=True,
              help="paper: one Parquet per model (text_id, chunk_id, logprobs); wide: one table, token rows x model columns.")
@click.option("--model-names", help="Comma-separated names: one per paper file (default: file stems), or the wide table's model columns to take.")
@click.option("--chunk-tokens", type=int, help="Tokens per store chunk (default 2**20).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-rows", type=int, default=1 << 16, show_default=True, help="Rows per record batch read from the inputs.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
def ingest(
    inputs: tuple[str, ...],
    out: str,
    fmt: str,
    model_names: str | None,
    chunk_tokens: int | None,
    dtype: str,
    batch_rows: int,
    overwrite: bool,
) -> None:
    """Build a perplexity store from NLLs computed elsewhere.

    \b
    INPUTS is either the paper repository's output -- one Parquet file per model (or a directory of
    them) with columns text_id, chunk_id, logprobs (list<float>); the feature is the last logprob of
    each row, nll = -logprob, rows are matched across models by (text_id, chunk_id) -- or one wide
    Parquet/CSV table with one NLL column per model and optional token, doc, piece columns.
    Files are streamed in record batches; see bsig_array.stages.ingest for the memory use.
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.stages.ingest import ingest as run_ingest

    if batch_rows < 1:
        raise OptionError(f"--batch-rows must be positive, got {batch_rows}")
    path = run_ingest(inputs, out, format=fmt, model_names=_names(model_names), chunk_tokens=chunk_tokens,
                      dtype=dtype, overwrite=overwrite, batch_rows=batch_rows, progress=rich_progress)
    ds = open_store(path)
    click.echo(f"wrote {path}: {ds.sizes['model']} models x {ds.sizes['token']:,} tokens ({dtype})")


@click.command()
@click.argument("path", metavar="PATH", type=Where())
@click.option("--deep", is_flag=True, help="Read every chunk of every array (checksums); a store: also count NaN/inf.")
@click.option("--mark-pending", is_flag=True, help="Perplexity store, with --deep: mark unreadable chunks unwritten so the writer rewrites them.")
@click.option("--repair-progress", is_flag=True,
              help="Perplexity store: rebuild a damaged progress record from the chunks that verify, then stop.")
@click.option("--performance", "performance", type=Where(exists=True),
              help="Also check a performance table (CSV/Parquet/NetCDF/Zarr) against the store's models.")
@click.option("--metadata", type=Where(exists=True), help="Benchmark metadata CSV for --performance.")
def validate(path: str, deep: bool, mark_pending: bool, repair_progress: bool, performance: str | None,
             metadata: str | None) -> None:
    """Check an artifact bsig wrote and print a summary.

    \b
    PATH is a perplexity store, corpus store, screen output, signatures store, overlap file (.zarr or
    .nc), performance table, stats folder, synthetic pool or demo output.  Every metadata document
    of a Zarr artifact is read and compared with the consolidated copy; --deep also reads every
    chunk and verifies its checksum.  The first problem is named in one line.
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.kinds import artifact_kind
    from bsig_array.io.perplexity_store.schema import PERPLEXITY_STORE
    from bsig_array.io.perplexity_store.validate import repair_progress as repair
    from bsig_array.io.validate_artifact import validate_artifact

    if mark_pending and not deep:
        raise OptionError("--mark-pending needs --deep (it marks the chunks that a deep scan finds unreadable)")
    if repair_progress and (deep or mark_pending or performance is not None):
        raise OptionError("--repair-progress runs alone; run bsig validate again afterwards for the other checks")
    kind = artifact_kind(path)
    if (mark_pending or repair_progress or performance is not None) and kind not in (None, PERPLEXITY_STORE):
        flag = "--mark-pending" if mark_pending else "--repair-progress" if repair_progress else "--performance"
        raise OptionError(f"{flag} applies to a perplexity store; {path} is a {kind}")
    if repair_progress:
        click.echo(repair(path))
        return
    summary = validate_artifact(path, deep=deep, mark_pending=mark_pending, progress=rich_progress)
    if performance is not None and summary.store is not None:
        from bsig_array.io.scores import align_performance, load_performance

        score = align_performance(load_performance(performance, metadata=metadata), summary.store.models)
        summary.store.notes.append(f"performance {performance}: {score.sizes['benchmark']} benchmarks, models match the store")
    click.echo(summary.format())
